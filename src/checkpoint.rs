//! Checkpoint files: one safetensors file whose header metadata holds a versioned JSON manifest
//! (key `clsflow`). One file means one atomic rename, and any safetensors reader can open it.

use crate::backbone::{BackboneKind, Normalization};
use crate::model::{ClsFlowModel, ModelConfig};
use crate::scoring::{Scoring, TapReference};
use crate::weights;
use crate::{Error, Result};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Value of [`Manifest::format`].
pub const FORMAT: &str = "clsflow-checkpoint";
/// The manifest version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The safetensors metadata key that holds the manifest.
pub const METADATA_KEY: &str = "clsflow";

/// Everything about a model that is not a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Manifest version, [`FORMAT_VERSION`] for files this build writes.
    pub format_version: u32,
    /// A human name for the model (e.g. the category it was trained on).
    pub name: String,
    /// The architecture.
    pub config: ModelConfig,
    /// The extractor (repeated from `config` for readers that only need this).
    pub backbone: BackboneKind,
    /// Channels of the three taps.
    pub tap_channels: [i64; 3],
    /// Strides of the three taps.
    pub tap_strides: [i64; 3],
    /// Side of the square network input.
    pub input_size: i64,
    /// Input normalisation.
    pub normalization: Normalization,
    /// Flow reference maxima, weights and thresholds.
    pub scoring: Scoring,
    /// What training recorded (data, settings, timings, losses); free-form.
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    /// Number of tensors in the file.
    pub tensor_count: usize,
    /// CRC-32 of all tensor bytes in name order: detects corrupted weights.
    pub data_crc32: u32,
}

impl Manifest {
    /// The manifest of a model with this config, name and scoring; the derived fields (backbone,
    /// taps, input size, normalisation) come from the config, so they cannot disagree with it.
    pub fn new(
        config: ModelConfig,
        name: &str,
        scoring: Scoring,
        training: Option<serde_json::Value>,
        tensor_count: usize,
        data_crc32: u32,
    ) -> Self {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            name: name.into(),
            backbone: config.backbone,
            tap_channels: config.backbone.tap_channels(),
            tap_strides: config.backbone.tap_strides(),
            input_size: config.input_size,
            normalization: config.backbone.normalization(),
            config,
            scoring,
            training,
            tensor_count,
            data_crc32,
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::checkpoint(path, m));
        if self.format != FORMAT {
            return bad(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "unknown checkpoint format version {} (this build reads version {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let c = &self.config;
        if self.backbone != c.backbone
            || self.tap_channels != c.backbone.tap_channels()
            || self.tap_strides != c.backbone.tap_strides()
            || self.input_size != c.input_size
        {
            return bad(format!(
                "manifest disagrees with its config: backbone {:?}/{:?}, taps {:?}, strides {:?}, input {}/{}",
                self.backbone,
                c.backbone,
                self.tap_channels,
                self.tap_strides,
                self.input_size,
                c.input_size
            ));
        }
        if !self.scoring.is_valid() {
            return bad("scoring values must be finite, with a top fraction in [0, 1)".into());
        }
        if self.scoring.tap_reference() == TapReference::Position {
            let sizes = c.tap_sizes();
            for (l, (o, side)) in self.scoring.tap_offsets.iter().zip(sizes).enumerate() {
                if o.len() as i64 != side * side {
                    return bad(format!(
                        "tap {l} has {} per-position offsets, its {side}x{side} map needs {}",
                        o.len(),
                        side * side
                    ));
                }
            }
        }
        c.validate()
            .map_err(|e| Error::checkpoint(path, e.to_string()))
    }
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .flatten(0, -1);
    let v = Vec::<f32>::try_from(&t)?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes `model` with its scoring to `path` atomically (temporary file in the same folder,
/// fsync, rename): a crash never leaves a half-written checkpoint in place of a good one.
pub fn save(
    path: &Path,
    model: &ClsFlowModel,
    scoring: &Scoring,
    name: &str,
    training: Option<serde_json::Value>,
) -> Result<Manifest> {
    let vars = model.named_variables();
    let mut data = Vec::with_capacity(vars.len());
    let mut crc = crc32fast::Hasher::new();
    for (n, t) in &vars {
        let bytes = tensor_bytes(t)?;
        crc.update(&bytes);
        data.push((
            n.clone(),
            t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(),
            bytes,
        ));
    }
    let manifest = Manifest::new(
        model.config().clone(),
        name,
        scoring.clone(),
        training,
        vars.len(),
        crc.finalize(),
    );
    let json = serde_json::to_string(&manifest).map_err(|e| Error::Config(e.to_string()))?;
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::checkpoint(path, e.to_string()))
        })
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    write_atomic(path, &bytes)?;
    Ok(manifest)
}

/// Writes bytes to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Reads only the manifest of a checkpoint (validated).
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = weights::read_file(path)?;
    manifest_from_bytes(path, &bytes)
}

fn manifest_from_bytes(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a readable safetensors file (truncated or corrupted?): {e}"),
        )
    })?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                "no clsflow manifest: not a clsflow checkpoint (plain weights?)",
            )
        })?;
    let manifest: Manifest = serde_json::from_str(json)
        .map_err(|e| Error::checkpoint(path, format!("manifest is not valid: {e}")))?;
    manifest.check(path)?;
    Ok(manifest)
}

/// Loads a checkpoint onto `device`, validating manifest, tensor names, shapes and checksum.
pub fn load(path: &Path, device: Device) -> Result<(ClsFlowModel, Manifest)> {
    let bytes = weights::read_file(path)?;
    let manifest = manifest_from_bytes(path, &bytes)?;
    let file = weights::parse(path, &bytes)?;
    // a manifest's architecture is validated first; a libtorch refusal while building it
    // anyway (tch panics there) becomes this file's error rather than a crash
    let config = manifest.config.clone();
    let model =
        std::panic::catch_unwind(move || ClsFlowModel::new(config, device)).map_err(|_| {
            Error::checkpoint(
                path,
                "the architecture in the manifest cannot be built (corrupted or foreign file?)",
            )
        })??;
    let vars = model.named_variables();
    let expected: BTreeSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let present: BTreeSet<&str> = file.names().into_iter().collect();
    let missing: Vec<_> = expected.difference(&present).take(5).collect();
    if !missing.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!(
                "{} tensor(s) missing, e.g. {missing:?}",
                expected.difference(&present).count()
            ),
        ));
    }
    let extra: Vec<_> = present.difference(&expected).take(5).collect();
    if !extra.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!(
                "{} unexpected tensor(s), e.g. {extra:?}",
                present.difference(&expected).count()
            ),
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            let view = file
                .tensor(name)
                .map_err(|e| Error::checkpoint(path, e.to_string()))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "tensor {name} has shape {shape:?} but the manifest's config expects {:?} (config and weights disagree)",
                        var.size()
                    ),
                ));
            }
            if view.dtype() != Dtype::F32 {
                return Err(Error::checkpoint(
                    path,
                    format!("tensor {name} is {:?}, expected F32", view.dtype()),
                ));
            }
            crc.update(view.data());
            let t = weights::to_tensor(path, name, &view)?;
            var.shallow_clone().copy_(&t.to_device(device));
        }
        Ok(())
    })?;
    if crc.finalize() != manifest.data_crc32 || vars.len() != manifest.tensor_count {
        return Err(Error::checkpoint(
            path,
            "weights do not match the manifest's checksum (corrupted file)",
        ));
    }
    Ok((model, manifest))
}
