//! 8-bit video frames (packed RGB-like, or 4:2:0 YUV as decoders give) straight to normalised
//! network input, in plain Rust.
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
        if !plane_holds(self.data.len(), self.stride, self.height, self.width * bpp) {
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

/// Whether a plane of `len` bytes holds `rows` rows of `row_bytes` bytes, `stride` bytes apart
/// (the last row needs only its own bytes); an empty plane holds nothing.
pub(crate) fn plane_holds(len: usize, stride: usize, rows: usize, row_bytes: usize) -> bool {
    rows > 0 && row_bytes > 0 && stride >= row_bytes && len >= stride * (rows - 1) + row_bytes
}

/// How a YUV frame's values map to RGB: the matrix's luma weights of red and blue, and whether
/// the values use the full 0..255 range or the video range (luma 16..235, chroma 16..240).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvColorimetry {
    /// Kr: BT.601 0.299, BT.709 0.2126, BT.2020 0.2627.
    pub kr: f32,
    /// Kb: BT.601 0.114, BT.709 0.0722, BT.2020 0.0593.
    pub kb: f32,
    /// Full range (JPEG) rather than video range.
    pub full_range: bool,
}

impl YuvColorimetry {
    /// BT.601, video range (standard definition).
    pub const BT601: YuvColorimetry = YuvColorimetry {
        kr: 0.299,
        kb: 0.114,
        full_range: false,
    };
    /// BT.709, video range (high definition).
    pub const BT709: YuvColorimetry = YuvColorimetry {
        kr: 0.2126,
        kb: 0.0722,
        full_range: false,
    };

    /// RGB of one pixel, rounded and clamped to 0..255 as a colour converter writes it.
    #[inline]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let (y, cb, cr) = if self.full_range {
            (f32::from(y), f32::from(u) - 128.0, f32::from(v) - 128.0)
        } else {
            (
                (f32::from(y) - 16.0) * (255.0 / 219.0),
                (f32::from(u) - 128.0) * (255.0 / 224.0),
                (f32::from(v) - 128.0) * (255.0 / 224.0),
            )
        };
        let (kr, kb) = (self.kr, self.kb);
        let r = y + 2.0 * (1.0 - kr) * cr;
        let b = y + 2.0 * (1.0 - kb) * cb;
        let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
        [r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8)
    }

    /// Y, U, V of one RGB colour, rounded and clamped as a colour converter writes them: the
    /// inverse of [`YuvColorimetry::rgb`], for drawing on YUV frames.
    pub fn yuv(&self, [r, g, b]: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = (self.kr, self.kb);
        let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let cb = (b - y) / (2.0 * (1.0 - kb));
        let cr = (r - y) / (2.0 * (1.0 - kr));
        let [y, cb, cr] = if self.full_range {
            [y, cb + 128.0, cr + 128.0]
        } else {
            [
                16.0 + y * (219.0 / 255.0),
                128.0 + cb * (224.0 / 255.0),
                128.0 + cr * (224.0 / 255.0),
            ]
        };
        [y, cb, cr].map(|c| c.round().clamp(0.0, 255.0) as u8)
    }
}

/// A 4:2:0 YUV frame: a full-resolution luma plane and chroma at half resolution in both axes,
/// either as two planes (I420: U then V) or as one plane of interleaved U, V pairs (NV12).
#[derive(Debug, Clone, Copy)]
pub struct Yuv420Frame<'a> {
    /// Luma rows, `y_stride` bytes apart.
    pub y: &'a [u8],
    /// Bytes from one luma row to the next.
    pub y_stride: usize,
    /// U samples (for NV12: the interleaved plane).
    pub u: &'a [u8],
    /// V samples (for NV12: the interleaved plane from its second byte).
    pub v: &'a [u8],
    /// Bytes from one chroma row to the next.
    pub uv_stride: usize,
    /// Bytes from one chroma sample to the next within a row: 1 for I420, 2 for NV12.
    pub uv_step: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// How the values map to RGB.
    pub colorimetry: YuvColorimetry,
}

impl Yuv420Frame<'_> {
    fn validate(&self) -> Result<()> {
        let (cw, ch) = (
            self.width.div_ceil(2).max(1),
            self.height.div_ceil(2).max(1),
        );
        // a chroma row spans from its first sample to its last, `uv_step` bytes apart
        let chroma_row = (cw - 1) * self.uv_step + 1;
        if !matches!(self.uv_step, 1 | 2)
            || !plane_holds(self.y.len(), self.y_stride, self.height, self.width)
            || !plane_holds(self.u.len(), self.uv_stride, ch, chroma_row)
            || !plane_holds(self.v.len(), self.uv_stride, ch, chroma_row)
        {
            return Err(Error::Input(format!(
                "4:2:0 frame {}x{}: planes of {}, {} and {} bytes do not match strides {} and {}",
                self.width,
                self.height,
                self.y.len(),
                self.u.len(),
                self.v.len(),
                self.y_stride,
                self.uv_stride
            )));
        }
        Ok(())
    }

    /// Row `y` as packed RGB.
    fn rgb_row(&self, y: usize, out: &mut [u8]) {
        let luma = &self.y[y * self.y_stride..y * self.y_stride + self.width];
        let c = (y / 2) * self.uv_stride;
        for (x, (px, &l)) in out.chunks_exact_mut(3).zip(luma).enumerate() {
            let i = c + (x / 2) * self.uv_step;
            px.copy_from_slice(&self.colorimetry.rgb(l, self.u[i], self.v[i]));
        }
    }
}

/// A 4:2:0 frame resized to `width` x `height` and normalised, as [`packed_to_input_dims`]
/// makes from the same picture in RGB: each row is converted to RGB as it is read (a colour
/// converter's rounding), then resized in the same pass.
pub fn yuv420_to_input_dims(
    frame: &Yuv420Frame,
    width: usize,
    height: usize,
    norm: &Normalization,
) -> Result<Vec<f32>> {
    frame.validate()?;
    let mut rgb = vec![0u8; frame.width * 3];
    resize_rows(
        frame.width,
        frame.height,
        width,
        height,
        norm,
        |y, cols, r, g, b| {
            frame.rgb_row(y, &mut rgb);
            resize_row::<3>(&rgb, [0, 1, 2], cols, r, g, b);
        },
    )
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
    let bpp = frame.bytes_per_pixel;
    let offsets = frame.rgb_offsets;
    resize_rows(
        frame.width,
        frame.height,
        width,
        height,
        norm,
        |y, cols, r, g, b| {
            let row = &frame.data[y * frame.stride..y * frame.stride + frame.width * bpp];
            match bpp {
                4 => resize_row::<4>(row, offsets, cols, r, g, b),
                3 => resize_row::<3>(row, offsets, cols, r, g, b),
                _ => resize_row::<1>(row, offsets, cols, r, g, b),
            }
        },
    )
}

/// The resize of a `w` x `h` frame to `width` x `height`, normalised: `row(y, cols, r, g, b)`
/// resizes source row `y` horizontally into one row of each channel; then the columns.
fn resize_rows(
    w: usize,
    h: usize,
    width: usize,
    height: usize,
    norm: &Normalization,
    mut row: impl FnMut(usize, &AxisWeights, &mut [f32], &mut [f32], &mut [f32]),
) -> Result<Vec<f32>> {
    if width == 0 || height == 0 {
        return Err(Error::Input(format!("input size {width}x{height}")));
    }
    let cols = AxisWeights::new(w, width);
    let rows = AxisWeights::new(h, height);
    // rows first (3, h, width), then columns: the order of libtorch and PIL
    let mut tmp = vec![0f32; 3 * h * width];
    {
        let (r, rest) = tmp.split_at_mut(h * width);
        let (g, b) = rest.split_at_mut(h * width);
        for y in 0..h {
            let out = y * width..(y + 1) * width;
            row(
                y,
                &cols,
                &mut r[out.clone()],
                &mut g[out.clone()],
                &mut b[out],
            );
        }
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

/// Resizes one row of packed pixels (`BPP` bytes each, R, G, B at `offsets`) horizontally into
/// one row of each channel.
fn resize_row<const BPP: usize>(
    row: &[u8],
    [or, og, ob]: [usize; 3],
    cols: &AxisWeights,
    r: &mut [f32],
    g: &mut [f32],
    b: &mut [f32],
) {
    for (x, ((r, g), b)) in r.iter_mut().zip(g).zip(b).enumerate() {
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

    /// A 4:2:0 frame of a picture gives the input of the same picture converted to RGB (the
    /// conversion's rounding only), for both layouts; a frame too short for its sizes is refused.
    #[test]
    fn yuv420_matches_its_rgb_conversion() {
        let (w, h) = (67usize, 41usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let luma: Vec<u8> = (0..w * h).map(|i| (16 + (i * 7) % 219) as u8).collect();
        let u: Vec<u8> = (0..cw * ch).map(|i| (16 + (i * 5) % 224) as u8).collect();
        let v: Vec<u8> = (0..cw * ch).map(|i| (240 - (i * 3) % 224) as u8).collect();
        let nv12: Vec<u8> = u.iter().zip(&v).flat_map(|(&a, &b)| [a, b]).collect();
        for col in [YuvColorimetry::BT601, YuvColorimetry::BT709] {
            let mut rgb = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let c = (y / 2) * cw + x / 2;
                    let p = col.rgb(luma[y * w + x], u[c], v[c]);
                    rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&p);
                }
            }
            let packed = PackedFrame {
                data: &rgb,
                width: w,
                height: h,
                stride: w * 3,
                bytes_per_pixel: 3,
                rgb_offsets: [0, 1, 2],
            };
            let want = packed_to_input_dims(&packed, 32, 24, &NORM).unwrap();
            let i420 = Yuv420Frame {
                y: &luma,
                y_stride: w,
                u: &u,
                v: &v,
                uv_stride: cw,
                uv_step: 1,
                width: w,
                height: h,
                colorimetry: col,
            };
            let nv = Yuv420Frame {
                u: &nv12,
                v: &nv12[1..],
                uv_stride: 2 * cw,
                uv_step: 2,
                ..i420
            };
            for f in [i420, nv] {
                let got = yuv420_to_input_dims(&f, 32, 24, &NORM).unwrap();
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-5, "{diff}");
            }
            let short = Yuv420Frame {
                y: &luma[..w * h - 1],
                ..i420
            };
            assert!(yuv420_to_input_dims(&short, 32, 24, &NORM).is_err());
        }
        // grey in video range is grey in RGB; white and black at the range's ends
        assert_eq!(YuvColorimetry::BT709.rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(YuvColorimetry::BT709.rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(YuvColorimetry::BT601.rgb(126, 128, 128), [128, 128, 128]);
        assert_eq!(YuvColorimetry::BT709.yuv([0, 0, 0]), [16, 128, 128]);
        assert_eq!(YuvColorimetry::BT709.yuv([255, 255, 255]), [235, 128, 128]);
    }

    #[test]
    fn yuv_inverts_rgb() {
        let full = YuvColorimetry {
            full_range: true,
            ..YuvColorimetry::BT601
        };
        for col in [YuvColorimetry::BT601, YuvColorimetry::BT709, full] {
            for rgb in [
                [255, 0, 0],
                [0, 255, 0],
                [0, 0, 255],
                [200, 120, 30],
                [7, 7, 7],
            ] {
                let [y, u, v] = col.yuv(rgb);
                let back = col.rgb(y, u, v);
                for (a, b) in back.iter().zip(&rgb) {
                    assert!(a.abs_diff(*b) <= 2, "{col:?}: {rgb:?} -> {back:?}");
                }
            }
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
