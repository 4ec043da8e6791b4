//! [`Detector`]: a trained model on a device, ready to score images of any size.

use crate::checkpoint::{self, Manifest};
use crate::device::DeviceSpec;
use crate::model::ClsFlowModel;
use crate::preprocess::{image_batch_dims, prepare_batch, prepare_batch_to, rgb_to_tensor};
use crate::regions::{DEFAULT_MIN_REGION_AREA, FrameRegion, frame_regions};
use crate::scoring::{BatchMaps, BranchMaps, Scoring, branch_maps_with, combine, offset_tensors};
use crate::tiling::{self, InputResize, TileLayout};
use crate::{Error, Result};
use image::RgbImage;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// How to place a detector.
#[derive(Debug, Clone, Default)]
pub struct DetectorOptions {
    /// Where it runs.
    pub device: DeviceSpec,
    /// Reduced precision: on CUDA the whole model in float16; on the CPU the flows' matrix
    /// products in bfloat16 (CPUs with AVX512-BF16 or AMX-BF16 only), the rest in float32.
    pub half: bool,
}

/// A single-channel map of f32 values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyMap {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` values, row by row.
    pub data: Vec<f32>,
}

impl AnomalyMap {
    /// Copies a (H, W) or (1, H, W) tensor.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let size = t.size();
        let (h, w) = match size.as_slice() {
            [h, w] | [1, h, w] => (*h as usize, *w as usize),
            _ => return Err(Error::Input(format!("expected a (H, W) map, got {size:?}"))),
        };
        let data = Vec::<f32>::try_from(t.flatten(0, -1))?;
        Ok(AnomalyMap {
            width: w,
            height: h,
            data,
        })
    }

    /// The largest value.
    pub fn max(&self) -> f32 {
        self.data.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// Bilinear resize (e.g. to the frame size).
    pub fn resized(&self, width: usize, height: usize) -> AnomalyMap {
        if width == self.width && height == self.height {
            return self.clone();
        }
        // Plain Rust, same sampling as libtorch's bilinear upsampling without aligned corners:
        // the overlay and the element call this on streaming threads, where a libtorch call
        // would start a second OpenMP team and slow all inference down (see `torch_thread`).
        let xs = bilinear_taps(self.width, width);
        let ys = bilinear_taps(self.height, height);
        // every source row resized horizontally once, then each output row is a blend of two
        // of those rows (contiguous, so the compiler vectorises it)
        let mut rows: Vec<f32> = Vec::with_capacity(self.height * width);
        for row in self.data.chunks_exact(self.width) {
            rows.extend(
                xs.iter()
                    .map(|&(x0, x1, wx)| row[x0] + (row[x1] - row[x0]) * wx),
            );
        }
        let mut data = Vec::with_capacity(width * height);
        for &(y0, y1, wy) in &ys {
            let (r0, r1) = (
                &rows[y0 * width..(y0 + 1) * width],
                &rows[y1 * width..(y1 + 1) * width],
            );
            data.extend(r0.iter().zip(r1).map(|(a, b)| a + (b - a) * wy));
        }
        AnomalyMap {
            width,
            height,
            data,
        }
    }
}

/// For each output index: the two source indices and the weight of the second, as libtorch's
/// bilinear interpolation with `align_corners = false` computes them.
fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// The result for one image.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Image score in raw units: the maximum (or the mean of the largest values, where
    /// calibration chose that) of flow + score weight x classifier.
    pub score: f32,
    /// The score in [0, 1], 0.5 at the threshold ([`Scoring::normalized_score`]).
    pub normalized_score: f64,
    /// Whether the score is above the detector's threshold.
    pub anomalous: bool,
    /// Defect regions (fused map above the region threshold, at least
    /// [`DEFAULT_MIN_REGION_AREA`] map pixels), largest value first, in the pixels of the
    /// image the detection is for.
    pub regions: Vec<FrameRegion>,
    /// Fused map at model resolution.
    pub fused: AnomalyMap,
    /// Flow (density) branch map.
    pub flow: AnomalyMap,
    /// Classifier branch map (defect probability).
    pub cls: AnomalyMap,
}

/// Half precision is float16 on CUDA, and bfloat16 matmuls on CPUs that have them natively
/// (elsewhere they would be emulated, i.e. slower than float32).
fn check_half(device: Device) -> Result<()> {
    if device.is_cuda() || crate::device::cpu_has_native_bf16() {
        return Ok(());
    }
    Err(Error::Device {
        device: crate::device::device_name(device),
        message: "half precision needs a CUDA device, or a CPU with AVX512-BF16 or AMX-BF16 \
                  (bfloat16 matmuls for the flows); this CPU has neither"
            .into(),
    })
}

/// A trained model on its device. Holds no global state; use one instance per thread.
#[derive(Debug)]
pub struct Detector {
    model: ClsFlowModel,
    manifest: Manifest,
    scoring: Scoring,
    /// The scoring's per-position offsets as tensors on the model's device, made when the
    /// scoring is set rather than in every forward pass.
    offsets: Option<[Tensor; 3]>,
    kind: Kind,
}

impl Detector {
    /// Loads a checkpoint (validated) onto the device of `options`.
    pub fn load(path: impl AsRef<Path>, options: &DetectorOptions) -> Result<Self> {
        let device = options.device.resolve()?;
        if options.half {
            check_half(device)?;
        }
        let (mut model, manifest) = checkpoint::load(path.as_ref(), device)?;
        model.fold_for_inference();
        let mut detector = Detector {
            scoring: Scoring::default(),
            model,
            manifest,
            offsets: None,
            kind: Kind::Float,
        };
        detector.set_scoring(detector.manifest.scoring.clone());
        Ok(if options.half {
            detector.into_half()
        } else {
            detector
        })
    }

    /// The same detector in reduced precision (see [`DetectorOptions::half`]).
    pub fn with_half(self) -> Result<Self> {
        check_half(self.device())?;
        Ok(self.into_half())
    }

    /// [`Self::with_half`] once [`check_half`] has passed.
    fn into_half(mut self) -> Self {
        if self.device().is_cuda() {
            self.model.to_half();
            self.kind = Kind::Half;
        } else {
            self.model.set_flow_matmul_kind(Kind::BFloat16);
        }
        self
    }

    /// Wraps an in-memory model (e.g. right after training) with its scoring.
    pub fn from_model(mut model: ClsFlowModel, scoring: Scoring, name: &str) -> Self {
        model.fold_for_inference();
        let manifest = Manifest::new(model.config().clone(), name, scoring.clone(), None, 0, 0);
        let mut detector = Detector {
            model,
            manifest,
            scoring: Scoring::default(),
            offsets: None,
            kind: Kind::Float,
        };
        detector.set_scoring(scoring);
        detector
    }

    /// Saves the model and current scoring as a checkpoint (atomically).
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        training: Option<serde_json::Value>,
    ) -> Result<Manifest> {
        checkpoint::save(
            path.as_ref(),
            &self.model,
            &self.scoring,
            &self.manifest.name,
            training,
        )
    }

    /// Stops gradient tracking of the model's weights (see [`ClsFlowModel::freeze`]), as
    /// tracing it into a TorchScript module requires.
    pub fn freeze(&mut self) {
        self.model.freeze();
    }

    /// The manifest the detector was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model.
    pub fn model(&self) -> &ClsFlowModel {
        &self.model
    }

    /// Scoring in use (weights, thresholds, flow references).
    pub fn scoring(&self) -> &Scoring {
        &self.scoring
    }

    /// Replaces the scoring (weights, thresholds), e.g. with user overrides of the calibrated
    /// one; the flow references should stay those of the checkpoint.
    pub fn set_scoring(&mut self, scoring: Scoring) {
        if scoring.tap_offsets != self.scoring.tap_offsets || self.offsets.is_none() {
            let sizes = self.model.config().tap_sizes();
            self.offsets = offset_tensors(&scoring, sizes, self.device());
        }
        self.scoring = scoring;
    }

    /// The precision of the model's input and activations: `Half` on CUDA in half precision,
    /// else `Float` (also on the CPU in half precision, where only the flows' matmuls change).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// Side of the network input; with [`InputResize::Stretch`] also of every map, with
    /// [`InputResize::Tile`] the short side of every map ([`Self::input_dims`]).
    pub fn map_size(&self) -> usize {
        self.model.config().input_size as usize
    }

    /// How the model takes images of other shapes than its square input.
    pub fn resize(&self) -> InputResize {
        self.model.config().resize
    }

    /// Size (width, height) of the network input, and of the maps, for an image of `width` x
    /// `height`: the square input, or with tiling the image resized to a short side of it.
    pub fn input_dims(&self, width: usize, height: usize) -> Result<(usize, usize)> {
        let l = TileLayout::new(
            self.resize(),
            width as i64,
            height as i64,
            self.model.config().input_size,
        )?;
        Ok((l.width as usize, l.height as usize))
    }

    /// Scores a batch (N, 3, H, W) of uint8 (0..255) or float (0..1) RGB images of any size,
    /// on any device. Maps stay on the model's device; they are S x S, or with tiling of the
    /// images' shape at a short side of S.
    pub fn detect_batch(&self, batch: &Tensor) -> Result<BatchMaps> {
        let cfg = self.model.config();
        let (h, w) = image_batch_dims(batch)?;
        let layout = TileLayout::new(cfg.resize, w, h, cfg.input_size)?;
        let x = prepare_batch_to(
            &batch.to_device(self.device()),
            layout.height,
            layout.width,
            &self.manifest.normalization,
            self.kind,
        )?;
        self.detect_laid_out(&x, &layout)
    }

    /// Scores network input that is already resized and normalised, on any device: float
    /// (N, 3, S, S), S the model's input size, or with tiling (N, 3, H, W) of a short side S
    /// ([`Self::input_dims`]; from [`crate::preprocess::prepare_batch_to`] or
    /// [`crate::resample::packed_to_input`]).
    pub fn detect_input(&self, input: &Tensor) -> Result<BatchMaps> {
        let s = self.model.config().input_size;
        let tile = self.resize() == InputResize::Tile;
        match input.size4() {
            Ok((_, 3, h, w)) if (h == s && w == s) || (tile && h.min(w) == s) => {
                let x = input.to_device(self.device()).to_kind(self.kind);
                self.detect_laid_out(&x, &TileLayout::of_resized(w, h, s))
            }
            _ => Err(Error::Input(format!(
                "expected normalised input (N, 3, {s}, {s}){}, got {:?}",
                if tile {
                    format!(" or with a short side of {s}")
                } else {
                    String::new()
                },
                input.size()
            ))),
        }
    }

    /// Both heads on every tile of `x` (N, 3, H, W), the branch maps stitched back to H x W.
    fn detect_laid_out(&self, x: &Tensor, layout: &TileLayout) -> Result<BatchMaps> {
        if layout.tiles() == 1 {
            let branches = branch_maps_with(&self.model, x, &self.scoring, self.offsets.as_ref());
            return Ok(combine(branches, &self.scoring));
        }
        let tiles = branch_maps_with(
            &self.model,
            &tiling::cut(x, layout)?,
            &self.scoring,
            self.offsets.as_ref(),
        );
        let stitched = BranchMaps {
            flow: tiling::stitch(&tiles.flow, layout)?,
            cls: tiling::stitch(&tiles.cls, layout)?,
        };
        Ok(combine(stitched, &self.scoring))
    }

    /// Scores one RGB image of any size; regions are in its pixels.
    pub fn detect_one(&self, image: &RgbImage) -> Result<Detection> {
        let mut all = self.detect(std::slice::from_ref(image))?;
        Ok(all.remove(0))
    }

    /// Scores RGB images of any sizes (each resized to the model input, or tiled), as one
    /// batch where they share a layout; regions are in each image's pixels.
    pub fn detect(&self, images: &[RgbImage]) -> Result<Vec<Detection>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let frame = |img: &RgbImage| (img.width(), img.height());
        if self.resize() == InputResize::Tile {
            // every shape has its own layout: one image at a time
            let mut out = Vec::with_capacity(images.len());
            for img in images {
                let maps = self.detect_batch(&rgb_to_tensor(img).unsqueeze(0))?;
                out.extend(self.split(&maps, &[frame(img)], DEFAULT_MIN_REGION_AREA)?);
            }
            return Ok(out);
        }
        let size = self.model.config().input_size;
        let batch = tch::no_grad(|| -> Result<Tensor> {
            let items = images
                .iter()
                .map(|img| {
                    let t = rgb_to_tensor(img).unsqueeze(0);
                    prepare_batch(&t, size, &self.manifest.normalization, Kind::Float)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&items, 0))
        })?;
        let frames: Vec<(u32, u32)> = images.iter().map(frame).collect();
        self.split(
            &self.detect_input(&batch)?,
            &frames,
            DEFAULT_MIN_REGION_AREA,
        )
    }

    /// Splits batch maps into per-image [`Detection`]s on the CPU, with regions of at least
    /// `min_region_area` map pixels in the pixels of each image's `frames` entry (width,
    /// height).
    pub fn split(
        &self,
        maps: &BatchMaps,
        frames: &[(u32, u32)],
        min_region_area: u32,
    ) -> Result<Vec<Detection>> {
        let scores = Vec::<f32>::try_from(maps.scores.to_device(Device::Cpu).to_kind(Kind::Float))?;
        if frames.len() != scores.len() {
            return Err(Error::Input(format!(
                "{} frame sizes for a batch of {}",
                frames.len(),
                scores.len()
            )));
        }
        scores
            .iter()
            .zip(frames)
            .enumerate()
            .map(|(i, (&score, &(w, h)))| {
                let i = i as i64;
                let fused = AnomalyMap::from_tensor(&maps.fused.get(i))?;
                let threshold = self.scoring.region_threshold as f32;
                Ok(Detection {
                    score,
                    normalized_score: self.scoring.normalized_score(score.into()),
                    anomalous: f64::from(score) > self.scoring.threshold,
                    regions: frame_regions(&fused, threshold, min_region_area, w, h),
                    fused,
                    flow: AnomalyMap::from_tensor(&maps.flow.get(i))?,
                    cls: AnomalyMap::from_tensor(&maps.cls.get(i))?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_resize_matches_libtorch_bilinear() {
        for (w, h, ow, oh) in [(7, 5, 33, 20), (64, 48, 17, 30), (3, 3, 3, 9), (1, 1, 4, 2)] {
            let t = Tensor::rand([1, 1, h, w], (Kind::Float, Device::Cpu));
            let map = AnomalyMap::from_tensor(&t.squeeze_dim(0)).unwrap();
            let ours = map.resized(ow as usize, oh as usize);
            let theirs =
                AnomalyMap::from_tensor(&crate::scoring::resize_maps(&t, oh, ow).squeeze_dim(0))
                    .unwrap();
            assert_eq!((ours.width, ours.height), (ow as usize, oh as usize));
            let worst = ours
                .data
                .iter()
                .zip(&theirs.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "{w}x{h} -> {ow}x{oh}: max difference {worst}");
        }
    }
}
