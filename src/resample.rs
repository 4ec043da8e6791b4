//! Packed 8-bit video frames straight to normalised network input, in plain Rust.
//!
//! The same antialiased bilinear resize as libtorch's `_upsample_bilinear2d_aa` (and PIL's):
//! a triangle filter whose support widens with the downscale factor, applied along rows, then
//! along columns. Reading the packed frame once and writing only the (3, S, S) input saves the
//! float copy of the whole frame that [`crate::preprocess::prepare_batch`] makes (for a 720p
//! frame, 2.8 million floats, resized in libtorch), and it keeps that work off the libtorch
//! thread.

use crate::backbone::Normalization;
use crate::{Error, Result};

/// A frame of packed 8-bit pixels (RGB, BGR, RGBx, ..., or grey).
#[derive(Debug, Clone, Copy)]
pub struct PackedFrame<'a> {
    /// The pixel rows, `stride` bytes apart.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Bytes per pixel: 1, 3 or 4.
    pub bytes_per_pixel: usize,
    /// Byte offsets of R, G and B within a pixel (all 0 for grey).
    pub rgb_offsets: [usize; 3],
}

impl PackedFrame<'_> {
    /// Checks sizes and offsets against the data.
    pub fn validate(&self) -> Result<()> {
        let bpp = self.bytes_per_pixel;
        if !matches!(bpp, 1 | 3 | 4) || self.rgb_offsets.iter().any(|&o| o >= bpp) {
            return Err(Error::Input(format!(
                "packed frame: {bpp} bytes per pixel with channel offsets {:?}",
                self.rgb_offsets
            )));
        }
        if self.width == 0
            || self.height == 0
            || self.stride < self.width * bpp
            || self.data.len() < self.stride * (self.height - 1) + self.width * bpp
        {
            return Err(Error::Input(format!(
                "packed frame: {} bytes do not hold {}x{} pixels of {bpp} bytes with stride {}",
                self.data.len(),
                self.width,
                self.height,
                self.stride
            )));
        }
        Ok(())
    }
}

/// Filter taps of one axis: for output `i`, input indices `start[i]..start[i] + len[i]` with
/// weights `weights[i * taps..]`.
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

impl AxisWeights {
    /// libtorch's index and weight rule for antialiased bilinear resizing, align_corners=false.
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f64 / output as f64;
        let (support, inv_scale) = if scale >= 1.0 {
            (scale, 1.0 / scale)
        } else {
            (1.0, 1.0)
        };
        let taps = (2.0 * support).ceil() as usize + 2;
        let mut w = AxisWeights {
            start: Vec::with_capacity(output),
            len: Vec::with_capacity(output),
            taps,
            weights: vec![0.0; output * taps],
        };
        for i in 0..output {
            let center = scale * (i as f64 + 0.5);
            // truncation toward zero, as the C++ cast
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let n = hi.saturating_sub(lo).min(taps);
            let row = &mut w.weights[i * taps..i * taps + n];
            let mut total = 0.0;
            for (j, v) in row.iter_mut().enumerate() {
                let x = ((lo + j) as f64 - center + 0.5) * inv_scale;
                let t = (1.0 - x.abs()).max(0.0);
                *v = t as f32;
                total += t;
            }
            if total > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / total) as f32);
            }
            w.start.push(lo);
            w.len.push(n);
        }
        w
    }

    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let s = i * self.taps;
        (self.start[i], &self.weights[s..s + self.len[i]])
    }
}

/// The frame resized to `size` x `size` and normalised: (3, size, size) floats, planar RGB, as
/// [`crate::preprocess::prepare_batch`] makes from the same pixels (to float rounding).
pub fn packed_to_input(frame: &PackedFrame, size: usize, norm: &Normalization) -> Result<Vec<f32>> {
    packed_to_input_dims(frame, size, size, norm)
}

/// [`packed_to_input`] to `width` x `height`: (3, height, width) floats, e.g. for the tiled
/// input of [`crate::Detector::input_dims`].
pub fn packed_to_input_dims(
    frame: &PackedFrame,
    width: usize,
    height: usize,
    norm: &Normalization,
) -> Result<Vec<f32>> {
    frame.validate()?;
    if width == 0 || height == 0 {
        return Err(Error::Input(format!("input size {width}x{height}")));
    }
    let (w, h) = (frame.width, frame.height);
    let cols = AxisWeights::new(w, width);
    let rows = AxisWeights::new(h, height);
    // rows first (3, h, width), then columns: the order of libtorch and PIL
    let mut tmp = vec![0f32; 3 * h * width];
    match frame.bytes_per_pixel {
        4 => horizontal::<4>(frame, &cols, width, &mut tmp),
        3 => horizontal::<3>(frame, &cols, width, &mut tmp),
        _ => horizontal::<1>(frame, &cols, width, &mut tmp),
    }
    let mut out = vec![0f32; 3 * height * width];
    for c in 0..3 {
        let src = &tmp[c * h * width..(c + 1) * h * width];
        let dst = &mut out[c * height * width..(c + 1) * height * width];
        // v / 255 normalised: v * a + b
        let a = (1.0 / (255.0 * norm.std[c])) as f32;
        let b = (-norm.mean[c] / norm.std[c]) as f32;
        for (y, out_row) in dst.chunks_exact_mut(width).enumerate() {
            let (start, weights) = rows.taps(y);
            for (k, &wk) in weights.iter().enumerate() {
                let in_row = &src[(start + k) * width..(start + k + 1) * width];
                for (o, &v) in out_row.iter_mut().zip(in_row) {
                    *o += wk * v;
                }
            }
            out_row.iter_mut().for_each(|o| *o = *o * a + b);
        }
    }
    Ok(out)
}

/// [`packed_to_input`]'s output as a (1, 3, size, size) tensor. On a thread other than the one
/// that runs the model this copy alone starts a second OpenMP team (see
/// [`crate::torch_thread`]): call it where the model runs.
pub fn input_tensor(input: &[f32], size: usize) -> tch::Tensor {
    input_tensor_dims(input, size, size)
}

/// [`packed_to_input_dims`]'s output as a (1, 3, height, width) tensor (see [`input_tensor`]).
pub fn input_tensor_dims(input: &[f32], width: usize, height: usize) -> tch::Tensor {
    tch::Tensor::from_slice(input).view([1, 3, height as i64, width as i64])
}

/// Resizes every row of the frame to `size` columns into `tmp` (3, h, size).
fn horizontal<const BPP: usize>(
    frame: &PackedFrame,
    cols: &AxisWeights,
    size: usize,
    tmp: &mut [f32],
) {
    let h = frame.height;
    let [or, og, ob] = frame.rgb_offsets;
    let (r, rest) = tmp.split_at_mut(h * size);
    let (g, b) = rest.split_at_mut(h * size);
    for (y, row) in frame.data.chunks(frame.stride).take(h).enumerate() {
        let row = &row[..frame.width * BPP];
        let out = y * size..(y + 1) * size;
        for (x, ((r, g), b)) in r[out.clone()]
            .iter_mut()
            .zip(&mut g[out.clone()])
            .zip(&mut b[out])
            .enumerate()
        {
            let (start, weights) = cols.taps(x);
            let px = &row[start * BPP..(start + weights.len()) * BPP];
            let (mut sr, mut sg, mut sb) = (0f32, 0f32, 0f32);
            for (p, &wk) in px.chunks_exact(BPP).zip(weights) {
                sr += wk * f32::from(p[or]);
                sg += wk * f32::from(p[og]);
                sb += wk * f32::from(p[ob]);
            }
            (*r, *g, *b) = (sr, sg, sb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::prepare_batch_to;
    use tch::{Kind, Tensor};

    const NORM: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// A deterministic frame with structure at every scale.
    fn frame_bytes(w: usize, h: usize, bpp: usize, stride: usize) -> Vec<u8> {
        let mut d = vec![0u8; stride * h];
        for y in 0..h {
            for x in 0..w {
                for c in 0..bpp {
                    let v = (x * 7 + y * 13 + c * 50) ^ (x * y / 3);
                    d[y * stride + x * bpp + c] = (v % 256) as u8;
                }
            }
        }
        d
    }

    fn libtorch_input(data: &[u8], f: &PackedFrame, height: i64, width: i64) -> Tensor {
        let (w, h, bpp) = (f.width as i64, f.height as i64, f.bytes_per_pixel as i64);
        let rows = Tensor::from_slice(data)
            .narrow(0, 0, f.stride as i64 * h)
            .view([h, f.stride as i64])
            .narrow(1, 0, w * bpp)
            .view([h, w, bpp]);
        let idx = Tensor::from_slice(&f.rgb_offsets.map(|o| o as i64));
        let rgb = rows.index_select(2, &idx).permute([2, 0, 1]).unsqueeze(0);
        prepare_batch_to(&rgb, height, width, &NORM, Kind::Float).unwrap()
    }

    #[test]
    fn matches_libtorch_down_and_up() {
        // 720p-like downscale, odd sizes, padded strides, upscale, grey and 3-byte pixels
        for &(w, h, bpp, pad, offsets, size) in &[
            (
                1280usize,
                720usize,
                4usize,
                0usize,
                [2usize, 1, 0],
                256usize,
            ),
            (333, 211, 3, 5, [0, 1, 2], 64),
            (50, 37, 4, 8, [1, 2, 3], 96),
            (40, 90, 1, 3, [0, 0, 0], 48),
            (64, 64, 3, 0, [0, 1, 2], 64),
        ] {
            let stride = w * bpp + pad;
            let data = frame_bytes(w, h, bpp, stride);
            let f = PackedFrame {
                data: &data,
                width: w,
                height: h,
                stride,
                bytes_per_pixel: bpp,
                rgb_offsets: offsets,
            };
            let ours = input_tensor(&packed_to_input(&f, size, &NORM).unwrap(), size);
            let theirs = libtorch_input(&data, &f, size as i64, size as i64);
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(diff < 2e-4, "{w}x{h} bpp {bpp} -> {size}: max diff {diff}");
            // the tiled input of the same frame: its aspect kept, short side `size`
            let (ow, oh) = crate::tiling::resized_dims(w as i64, h as i64, size as i64);
            let (ow, oh) = (ow as usize, oh as usize);
            let ours = input_tensor_dims(&packed_to_input_dims(&f, ow, oh, &NORM).unwrap(), ow, oh);
            let theirs = libtorch_input(&data, &f, oh as i64, ow as i64);
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(
                diff < 2e-4,
                "{w}x{h} bpp {bpp} -> {ow}x{oh}: max diff {diff}"
            );
        }
    }

    #[test]
    fn rejects_bad_frames() {
        let data = [0u8; 10];
        let f = |w, h, stride, bpp, off| PackedFrame {
            data: &data,
            width: w,
            height: h,
            stride,
            bytes_per_pixel: bpp,
            rgb_offsets: off,
        };
        assert!(packed_to_input(&f(2, 2, 8, 4, [0, 1, 2]), 4, &NORM).is_err());
        assert!(packed_to_input(&f(1, 1, 4, 4, [0, 1, 4]), 4, &NORM).is_err());
        assert!(packed_to_input(&f(1, 1, 2, 2, [0, 0, 0]), 4, &NORM).is_err());
        assert!(packed_to_input(&f(0, 1, 4, 4, [0, 1, 2]), 4, &NORM).is_err());
        assert!(packed_to_input(&f(1, 1, 4, 4, [0, 1, 2]), 0, &NORM).is_err());
        assert!(packed_to_input(&f(2, 2, 4, 1, [0, 0, 0]), 4, &NORM).is_ok());
    }
}
