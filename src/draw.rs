//! Drawing on video frames and images in place (packed RGB-like, or 4:2:0 YUV): heatmap
//! blending, boxes, region outlines, text.
//! `anomalyoverlay` draws video frames with it and `clsflow-train predict` its overlay PNGs, so
//! both look the same.

use crate::colormap::{HeatScale, heat};
use crate::detector::AnomalyMap;
use crate::resample::{YuvColorimetry, plane_holds};
use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use image::RgbImage;

/// A frame to draw on, in place: packed RGB-like pixels, or 4:2:0 YUV planes (NV12, I420) drawn
/// in their own colour space so that decoder output needs no conversion.
pub struct Canvas<'a> {
    width: usize,
    height: usize,
    pixels: Pixels<'a>,
}

enum Pixels<'a> {
    Packed(PackedPixels<'a>),
    Yuv420(YuvPlanes<'a>),
}

struct PackedPixels<'a> {
    data: &'a mut [u8],
    stride: usize,
    bpp: usize,
    rgb: [usize; 3],
}

struct YuvPlanes<'a> {
    y: &'a mut [u8],
    y_stride: usize,
    chroma: Chroma<'a>,
    colorimetry: YuvColorimetry,
}

/// The half-resolution colour planes of a 4:2:0 frame.
pub enum Chroma<'a> {
    /// NV12: one plane of U, V pairs.
    Interleaved {
        /// The plane.
        uv: &'a mut [u8],
        /// Bytes per row.
        stride: usize,
    },
    /// I420: a U plane and a V plane.
    Planar {
        /// The U plane.
        u: &'a mut [u8],
        /// Bytes per row of U.
        u_stride: usize,
        /// The V plane.
        v: &'a mut [u8],
        /// Bytes per row of V.
        v_stride: usize,
    },
}

impl Chroma<'_> {
    /// Mixes (u, v) into chroma sample (cx, cy) with weight `a` of 256.
    #[inline]
    fn mix(&mut self, cx: usize, cy: usize, [u, v]: [u8; 2], a: u32) {
        let share = |c: u8| [c as u32 * a + 128];
        self.mix_row(cx, cy, &share(u), &share(v), a);
    }

    /// Mixes the samples of chroma row `cy` from column `cx` on with the premultiplied colours
    /// (`c * a + 128`) `u` and `v`, one per sample, of weight `a` of 256.
    fn mix_row(&mut self, cx: usize, cy: usize, u: &[u32], v: &[u32], a: u32) {
        let keep = 256 - a;
        let mix = |p: &mut u8, c: u32| mix_shared(p, c, keep);
        match self {
            Chroma::Interleaved { uv, stride } => {
                let start = cy * *stride + 2 * cx;
                let (pairs, _) = uv[start..start + 2 * u.len()].as_chunks_mut::<2>();
                for ((p, &cu), &cv) in pairs.iter_mut().zip(u).zip(v) {
                    mix(&mut p[0], cu);
                    mix(&mut p[1], cv);
                }
            }
            Chroma::Planar {
                u: up,
                u_stride,
                v: vp,
                v_stride,
            } => {
                for (plane, stride, shares) in [(up, u_stride, u), (vp, v_stride, v)] {
                    let start = cy * *stride + cx;
                    let row = &mut plane[start..start + shares.len()];
                    row.iter_mut().zip(shares).for_each(|(p, &c)| mix(p, c));
                }
            }
        }
    }

    /// Whether the planes hold `cw` x `ch` samples.
    fn fits(&self, cw: usize, ch: usize) -> bool {
        match self {
            Chroma::Interleaved { uv, stride } => plane_holds(uv.len(), *stride, ch, 2 * cw),
            Chroma::Planar {
                u,
                u_stride,
                v,
                v_stride,
            } => plane_holds(u.len(), *u_stride, ch, cw) && plane_holds(v.len(), *v_stride, ch, cw),
        }
    }
}

/// `p` mixed with `c` at weight `a` of 256, rounded.
#[inline]
fn mix(p: &mut u8, c: u8, a: u32) {
    mix_shared(p, c as u32 * a + 128, 256 - a);
}

/// `p` mixed with a colour's premultiplied share `c * a + 128`, keeping `keep` = 256 - a of it:
/// the same as [`mix`], with the colour's part computed once for many pixels.
#[inline]
fn mix_shared(p: &mut u8, share: u32, keep: u32) {
    *p = ((*p as u32 * keep + share) >> 8) as u8;
}

/// Weight of 256 for an opacity of 0..1.
fn weight(alpha: f32) -> u32 {
    (alpha.clamp(0.0, 1.0) * 256.0).round() as u32
}

/// One row of `B`-byte pixels mixed with the premultiplied colours `pre` (of weight `a`) that
/// `idx` picks; fixed-size pixels and clamped offsets let the compiler drop bounds checks.
#[inline]
fn mix_row<const B: usize>(
    row: &mut [u8],
    idx: &[u8],
    pre: &[[u32; 3]; 256],
    a: u32,
    rgb: [usize; 3],
) {
    let keep = 256 - a;
    let [r, g, b] = rgb.map(|o| o.min(B - 1));
    let (pixels, _) = row.as_chunks_mut::<B>();
    for (px, &i) in pixels.iter_mut().zip(idx) {
        let c = &pre[i as usize];
        mix_shared(&mut px[r], c[0], keep);
        mix_shared(&mut px[g], c[1], keep);
        mix_shared(&mut px[b], c[2], keep);
    }
}

impl<'a> Canvas<'a> {
    /// The whole of an RGB image.
    pub fn of_rgb(img: &'a mut RgbImage) -> Self {
        let (width, height) = (img.width() as usize, img.height() as usize);
        Canvas {
            width,
            height,
            pixels: Pixels::Packed(PackedPixels {
                data: img.as_mut(),
                stride: 3 * width,
                bpp: 3,
                rgb: [0, 1, 2],
            }),
        }
    }

    /// A packed plane of `bpp` bytes per pixel with R, G, B at offsets `rgb`, rows `stride`
    /// bytes apart; an error names the sizes that do not fit.
    pub fn packed(
        data: &'a mut [u8],
        (width, height): (usize, usize),
        stride: usize,
        bpp: usize,
        rgb: [usize; 3],
    ) -> Result<Self, String> {
        let fits =
            rgb.iter().all(|&o| o < bpp) && plane_holds(data.len(), stride, height, width * bpp);
        if !fits {
            return Err(format!(
                "packed frame {width}x{height}: {} bytes, stride {stride}, {bpp} bytes per pixel do not fit",
                data.len()
            ));
        }
        Ok(Canvas {
            width,
            height,
            pixels: Pixels::Packed(PackedPixels {
                data,
                stride,
                bpp,
                rgb,
            }),
        })
    }

    /// A 4:2:0 frame: luma rows `y_stride` bytes apart and `chroma` at half resolution, colours
    /// converted by `colorimetry`; an error names the sizes that do not fit.
    pub fn yuv420(
        y: &'a mut [u8],
        y_stride: usize,
        chroma: Chroma<'a>,
        (width, height): (usize, usize),
        colorimetry: YuvColorimetry,
    ) -> Result<Self, String> {
        let fits = plane_holds(y.len(), y_stride, height, width)
            && chroma.fits(width.div_ceil(2), height.div_ceil(2));
        if !fits {
            return Err(format!(
                "4:2:0 frame {width}x{height}: luma plane of {} bytes with stride {y_stride}, or its chroma planes, too small",
                y.len()
            ));
        }
        Ok(Canvas {
            width,
            height,
            pixels: Pixels::Yuv420(YuvPlanes {
                y,
                y_stride,
                chroma,
                colorimetry,
            }),
        })
    }

    /// Blends `colour` over pixel (x, y) with opacity `alpha` (0..1). On 4:2:0 frames an opaque
    /// colour sets the pixel's chroma sample and a translucent one mixes into it only from the
    /// sample's top-left pixel, so that an area is mixed once, not once per pixel.
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, colour: [u8; 3], alpha: f32) {
        if x >= self.width || y >= self.height || alpha <= 0.0 {
            return;
        }
        let a = weight(alpha);
        match &mut self.pixels {
            Pixels::Packed(p) => {
                let i = y * p.stride + x * p.bpp;
                for (&offset, &c) in p.rgb.iter().zip(&colour) {
                    mix(&mut p.data[i + offset], c, a);
                }
            }
            Pixels::Yuv420(f) => {
                let [yy, u, v] = f.colorimetry.yuv(colour);
                mix(&mut f.y[y * f.y_stride + x], yy, a);
                if a == 256 || (x.is_multiple_of(2) && y.is_multiple_of(2)) {
                    f.chroma.mix(x / 2, y / 2, [u, v], a);
                }
            }
        }
    }

    /// Blends one colour of `palette` per pixel over the whole frame with a fixed opacity, in
    /// integer arithmetic; `indices(y, row)` writes row `y`'s palette indices, one per pixel.
    /// This runs on every pixel of every frame, so the palette is premultiplied by the opacity
    /// (and converted to the frame's colour space) once, and each row is mixed in one tight
    /// loop. On 4:2:0 frames each chroma sample takes the mean colour of its 2x2 pixels.
    pub fn blend_all(
        &mut self,
        alpha: f32,
        palette: &[[u8; 3]; 256],
        mut indices: impl FnMut(usize, &mut [u8]),
    ) {
        let a = weight(alpha);
        let (w, h) = (self.width, self.height);
        // c * a + 128: the colour's share of a mix, rounding included
        let share = |c: [u8; 3]| c.map(|v| v as u32 * a + 128);
        let mut idx = vec![0u8; w];
        match &mut self.pixels {
            Pixels::Packed(p) => {
                let pre: [[u32; 3]; 256] = palette.map(share);
                for y in 0..h {
                    indices(y, &mut idx);
                    let row = &mut p.data[y * p.stride..y * p.stride + w * p.bpp];
                    match p.bpp {
                        4 => mix_row::<4>(row, &idx, &pre, a, p.rgb),
                        3 => mix_row::<3>(row, &idx, &pre, a, p.rgb),
                        _ => {
                            for (px, &i) in row.chunks_exact_mut(p.bpp).zip(&idx) {
                                for (&o, &c) in p.rgb.iter().zip(&pre[i as usize]) {
                                    mix_shared(&mut px[o], c, 256 - a);
                                }
                            }
                        }
                    }
                }
            }
            Pixels::Yuv420(f) => {
                let yuv: [[u8; 3]; 256] = palette.map(|c| f.colorimetry.yuv(c));
                let luma_share: [u32; 256] = yuv.map(|c| share(c)[0]);
                let mut below = vec![0u8; w];
                let cw = w.div_ceil(2);
                let (mut mean_u, mut mean_v) = (vec![0u32; cw], vec![0u32; cw]);
                for cy in 0..h.div_ceil(2) {
                    let y0 = 2 * cy;
                    indices(y0, &mut idx);
                    let two = y0 + 1 < h;
                    if two {
                        indices(y0 + 1, &mut below);
                    }
                    for (y, row_idx) in [(y0, &idx), (y0 + 1, &below)]
                        .into_iter()
                        .take(1 + two as usize)
                    {
                        let luma = &mut f.y[y * f.y_stride..y * f.y_stride + w];
                        for (l, &i) in luma.iter_mut().zip(row_idx.iter()) {
                            mix_shared(l, luma_share[i as usize], 256 - a);
                        }
                    }
                    // the mean colour of each 2x2 cell (fewer pixels at odd edges)
                    for cx in 0..cw {
                        let xs = 2 * cx..(2 * cx + 2).min(w);
                        let (mut su, mut sv, mut n) = (0u32, 0u32, 0u32);
                        for row_idx in [&idx, &below].into_iter().take(1 + two as usize) {
                            for &i in &row_idx[xs.clone()] {
                                let [_, u, v] = yuv[i as usize];
                                su += u as u32;
                                sv += v as u32;
                                n += 1;
                            }
                        }
                        let mean = |s: u32| {
                            if n == 4 {
                                (s + 2) >> 2
                            } else {
                                (s + n / 2) / n
                            }
                        };
                        mean_u[cx] = mean(su) * a + 128;
                        mean_v[cx] = mean(sv) * a + 128;
                    }
                    f.chroma.mix_row(0, cy, &mean_u, &mean_v, a);
                }
            }
        }
    }

    /// An axis-aligned rectangle outline of `thickness` pixels.
    pub fn rect(&mut self, (x, y, w, h): (u32, u32, u32, u32), colour: [u8; 3], thickness: u32) {
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x + w) as usize, (y + h) as usize);
        for t in 0..thickness as usize {
            for xx in x0..x1 {
                self.blend(xx, y0 + t, colour, 1.0);
                self.blend(xx, (y1.saturating_sub(1)).saturating_sub(t), colour, 1.0);
            }
            for yy in y0..y1 {
                self.blend(x0 + t, yy, colour, 1.0);
                self.blend((x1.saturating_sub(1)).saturating_sub(t), yy, colour, 1.0);
            }
        }
    }

    /// Text with its top-left corner at (x, y) on a dark box for legibility.
    pub fn text(
        &mut self,
        font: &FontArc,
        size: f32,
        x: usize,
        y: usize,
        text: &str,
        colour: [u8; 3],
    ) {
        let scaled = font.as_scaled(PxScale::from(size));
        let width: f32 = text
            .chars()
            .map(|c| scaled.h_advance(font.glyph_id(c)))
            .sum();
        let height = scaled.ascent() - scaled.descent();
        for yy in y..y + height.ceil() as usize + 4 {
            for xx in x..x + width.ceil() as usize + 8 {
                self.blend(xx, yy, [0, 0, 0], 0.55);
            }
        }
        let mut caret = x as f32 + 4.0;
        for c in text.chars() {
            let id = font.glyph_id(c);
            let glyph = id.with_scale_and_position(
                PxScale::from(size),
                ab_glyph::point(caret, y as f32 + 2.0 + scaled.ascent()),
            );
            caret += scaled.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, cov| {
                    let px = b.min.x as i64 + gx as i64;
                    let py = b.min.y as i64 + gy as i64;
                    if px >= 0 && py >= 0 {
                        self.blend(px as usize, py as usize, colour, cov);
                    }
                });
            }
        }
    }
}

/// What [`paint`] draws.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayStyle {
    /// Blend the heatmap over the image.
    pub heatmap: bool,
    /// Outline the pixels above the region threshold.
    pub outlines: bool,
    /// Draw the regions' bounding boxes.
    pub boxes: bool,
    /// Opacity of the heatmap, 0..1.
    pub alpha: f32,
    /// Colour of outlines and boxes.
    pub line_colour: [u8; 3],
    /// Width of outlines and boxes in pixels.
    pub line_width: u32,
}

impl Default for OverlayStyle {
    /// The heatmap with region boxes, as `anomalyoverlay` draws by default.
    fn default() -> Self {
        OverlayStyle {
            heatmap: true,
            outlines: false,
            boxes: true,
            alpha: 0.45,
            line_colour: [255, 48, 48],
            line_width: 2,
        }
    }
}

/// Paints the anomaly overlay on `canvas`: `map` (already at the canvas's size) as a heatmap on
/// [`HeatScale::of_map`], the outlines of its pixels above `region_threshold`, and `boxes`
/// (x, y, width, height in canvas pixels), as `style` asks.
pub fn paint(
    canvas: &mut Canvas,
    map: &AnomalyMap,
    region_threshold: f32,
    boxes: &[(u32, u32, u32, u32)],
    style: &OverlayStyle,
) {
    let (w, h) = (canvas.width, canvas.height);
    let map_ok = map.width == w && map.height == h && map.data.len() == w * h;
    if map_ok && style.heatmap {
        let scale = HeatScale::of_map(&map.data, region_threshold);
        // one colour per 1/255 of the scale: a table instead of the colour map per pixel
        let lut: [[u8; 3]; 256] = std::array::from_fn(|i| heat(i as f32 / 255.0));
        canvas.blend_all(style.alpha, &lut, |y, row| {
            for (i, &v) in row.iter_mut().zip(&map.data[y * w..(y + 1) * w]) {
                *i = (scale.position(v) * 255.0) as u8;
            }
        });
    }
    if map_ok && style.outlines {
        let above = |x: usize, y: usize| map.data[y * w + x] > region_threshold;
        for y in 0..h {
            for x in 0..w {
                let edge = x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || !above(x - 1, y)
                    || !above(x + 1, y)
                    || !above(x, y - 1)
                    || !above(x, y + 1);
                if above(x, y) && edge {
                    for t in 0..style.line_width as usize {
                        canvas.blend(x + t, y, style.line_colour, 1.0);
                    }
                }
            }
        }
    }
    if style.boxes {
        for &b in boxes {
            canvas.rect(b, style.line_colour, style.line_width);
        }
    }
}

/// The font of the verdict caption: DejaVu Sans Bold from Debian's `fonts-dejavu-core`.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

/// Reads a TrueType or OpenType font file.
pub fn load_font(path: &str) -> Result<FontArc, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    FontArc::try_from_vec(bytes).map_err(|e| format!("{path}: {e}"))
}

/// The caption drawn on annotated frames and images: verdict, score against threshold, regions.
pub fn caption(anomalous: bool, score: f64, threshold: f64, regions: usize) -> String {
    let verdict = if anomalous { "ANOMALY" } else { "ok" };
    format!("{verdict}  score {score:.3} / {threshold:.3}  regions {regions}")
}

/// Draws [`caption`] in the top-left corner, sized to the canvas, in `colour`.
pub fn draw_caption(canvas: &mut Canvas, font: &FontArc, text: &str, colour: [u8; 3]) {
    let size = (canvas.height as f32 / 28.0).clamp(12.0, 48.0);
    canvas.text(font, size, 6, 6, text, colour);
}

/// Parses 0xAARRGGBB (GStreamer's colour property convention) into RGB.
pub fn argb_to_rgb(argb: u32) -> [u8; 3] {
    [(argb >> 16) as u8, (argb >> 8) as u8, argb as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_and_rect_respect_layout() {
        let mut data = vec![0u8; 4 * 4 * 4];
        let mut c = Canvas::packed(&mut data, (4, 4), 16, 4, [2, 1, 0]).unwrap();
        c.rect((0, 0, 4, 4), [255, 0, 0], 1);
        c.blend(9, 9, [1, 1, 1], 1.0); // outside: ignored
        // BGRx: red lands in byte 2
        assert_eq!(&data[0..4], &[0, 0, 255, 0]);
        assert_eq!(
            &data[(16 + 4)..(16 + 8)],
            &[0, 0, 0, 0],
            "interior untouched"
        );
        assert_eq!(argb_to_rgb(0xff10_2030), [0x10, 0x20, 0x30]);
    }

    #[test]
    fn blend_all_mixes_in_integer_arithmetic() {
        let mut data = vec![100u8; 2 * 3];
        let mut c = Canvas::packed(&mut data, (2, 1), 6, 3, [0, 1, 2]).unwrap();
        c.blend_all(0.5, &[[200, 0, 100]; 256], |_, row| row.fill(0));
        assert_eq!(data, vec![150, 50, 100, 150, 50, 100]);
    }

    #[test]
    fn sizes_that_do_not_fit_are_refused() {
        let mut data = vec![0u8; 10];
        let e = Canvas::packed(&mut data, (4, 4), 16, 4, [0, 1, 2])
            .err()
            .unwrap();
        assert!(e.contains("4x4") && e.contains("10 bytes"), "{e}");
        let (mut y, mut uv) = (vec![0u8; 16], vec![0u8; 3]);
        let chroma = Chroma::Interleaved {
            uv: &mut uv,
            stride: 4,
        };
        assert!(Canvas::yuv420(&mut y, 4, chroma, (4, 4), YuvColorimetry::BT601).is_err());
    }

    /// Bytes of a fixed pseudo-random sequence.
    fn noise(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn blend_all_equals_blending_each_pixel() {
        let palette: [[u8; 3]; 256] = std::array::from_fn(|i| {
            let b = noise(3, i as u32);
            [b[0], b[1], b[2]]
        });
        let (w, h) = (7, 3);
        let picks = noise(w * h, 99);
        // RGB, BGRx with padded rows, xRGB, a 5-byte layout
        for (bpp, rgb, stride) in [
            (3, [0, 1, 2], 21),
            (4, [2, 1, 0], 32),
            (4, [1, 2, 3], 28),
            (5, [4, 0, 2], 35),
        ] {
            for alpha in [0.45, 1.0, 0.0] {
                let start = noise(stride * h, bpp as u32);
                let mut fast = start.clone();
                Canvas::packed(&mut fast, (w, h), stride, bpp, rgb)
                    .unwrap()
                    .blend_all(alpha, &palette, |y, row| {
                        row.copy_from_slice(&picks[y * w..(y + 1) * w])
                    });
                let mut each = start.clone();
                let mut c = Canvas::packed(&mut each, (w, h), stride, bpp, rgb).unwrap();
                for y in 0..h {
                    for x in 0..w {
                        c.blend(x, y, palette[picks[y * w + x] as usize], alpha);
                    }
                }
                assert_eq!(fast, each, "bpp {bpp}, offsets {rgb:?}, alpha {alpha}");
            }
        }
        // 4:2:0 at odd sizes: luma per pixel, each chroma sample the mean of its pixels' colours
        let (w, h) = (5, 3);
        let picks = noise(w * h, 7);
        let (y, uv) = nv12_and_i420(w, h, |c| {
            c.blend_all(0.45, &palette, |y, row| {
                row.copy_from_slice(&picks[y * w..(y + 1) * w])
            })
        });
        let col = YuvColorimetry::BT709;
        let a = weight(0.45);
        let yuv = |x: usize, y: usize| col.yuv(palette[picks[y * w + x] as usize]);
        for yy in 0..h {
            for xx in 0..w {
                let mut l = 126;
                mix(&mut l, yuv(xx, yy)[0], a);
                assert_eq!(y[yy * w + xx], l, "luma ({xx}, {yy})");
            }
        }
        for cy in 0..h.div_ceil(2) {
            for cx in 0..w.div_ceil(2) {
                let cells: Vec<[u8; 3]> = (2 * cy..(2 * cy + 2).min(h))
                    .flat_map(|yy| (2 * cx..(2 * cx + 2).min(w)).map(move |xx| (xx, yy)))
                    .map(|(xx, yy)| yuv(xx, yy))
                    .collect();
                let n = cells.len() as u32;
                for k in 0..2 {
                    let sum: u32 = cells.iter().map(|c| c[k + 1] as u32).sum();
                    let mut v = 128;
                    mix(&mut v, ((sum + n / 2) / n) as u8, a);
                    assert_eq!(
                        uv[(cy * w.div_ceil(2) + cx) * 2 + k],
                        v,
                        "chroma ({cx}, {cy})"
                    );
                }
            }
        }
    }

    /// An NV12 frame (w x h, mid grey) drawn by `draw`, and the same as I420: the planes of both
    /// must hold the same values.
    fn nv12_and_i420(w: usize, h: usize, draw: impl Fn(&mut Canvas)) -> (Vec<u8>, Vec<u8>) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let col = YuvColorimetry::BT709;
        let (mut y1, mut uv) = (vec![126u8; w * h], vec![128u8; 2 * cw * ch]);
        let chroma = Chroma::Interleaved {
            uv: &mut uv,
            stride: 2 * cw,
        };
        draw(&mut Canvas::yuv420(&mut y1, w, chroma, (w, h), col).unwrap());
        let (mut y2, mut u, mut v) = (
            vec![126u8; w * h],
            vec![128u8; cw * ch],
            vec![128u8; cw * ch],
        );
        let chroma = Chroma::Planar {
            u: &mut u,
            u_stride: cw,
            v: &mut v,
            v_stride: cw,
        };
        draw(&mut Canvas::yuv420(&mut y2, w, chroma, (w, h), col).unwrap());
        assert_eq!(y1, y2, "luma of NV12 and I420");
        let nv: Vec<u8> = uv.chunks(2).flat_map(|p| [p[0], p[1]]).collect();
        let planar: Vec<u8> = u.iter().zip(&v).flat_map(|(a, b)| [*a, *b]).collect();
        assert_eq!(nv, planar, "chroma of NV12 and I420");
        (y1, uv)
    }

    #[test]
    fn yuv_frames_are_drawn_in_their_own_colours() {
        let green = [0, 255, 0];
        let [gy, gu, gv] = YuvColorimetry::BT709.yuv(green);
        // an opaque 1-pixel box on odd coordinates still colours its chroma samples
        let (y, uv) = nv12_and_i420(7, 5, |c| c.rect((1, 1, 5, 3), green, 1));
        assert_eq!(y[7 + 1], gy, "box corner luma");
        assert_eq!(y[2 * 7 + 3], 126, "inside untouched");
        assert_eq!(&uv[0..2], &[gu, gv], "chroma of the corner's sample");
        // a translucent area mixes each chroma sample once
        let (_, uv) = nv12_and_i420(4, 4, |c| {
            for yy in 0..4 {
                for xx in 0..4 {
                    c.blend(xx, yy, green, 0.5);
                }
            }
        });
        let half = |c: u8| ((128 * 128 + c as u32 * 128 + 128) >> 8) as u8;
        assert_eq!(&uv[0..2], &[half(gu), half(gv)]);
        // the heatmap: each chroma sample the mean of its pixels' colours, luma per pixel
        let (y, uv) = nv12_and_i420(3, 2, |c| {
            let mut two = [[255, 0, 0]; 256];
            two[1] = [0, 0, 255];
            c.blend_all(1.0, &two, |_, row| {
                for (x, i) in row.iter_mut().enumerate() {
                    *i = u8::from(x > 0);
                }
            })
        });
        let [ry, ru, rv] = YuvColorimetry::BT709.yuv([255, 0, 0]);
        let [by, bu, bv] = YuvColorimetry::BT709.yuv([0, 0, 255]);
        assert_eq!(&y[0..3], &[ry, by, by]);
        let mean = |a: u8, b: u8| ((a as u32 * 2 + b as u32 * 2 + 2) / 4) as u8;
        assert_eq!(&uv[0..2], &[mean(ru, bu), mean(rv, bv)]);
        assert_eq!(&uv[2..4], &[bu, bv], "the odd column's own sample");
    }
}
