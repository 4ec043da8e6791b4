//! Drawing on packed RGB(A/x) images in place: heatmap blending, boxes, region outlines, text.
//! `anomalyoverlay` draws video frames with it and `clsflow-train predict` its overlay PNGs, so
//! both look the same.

use crate::colormap::{HeatScale, heat};
use crate::detector::AnomalyMap;
use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use image::RgbImage;

/// A mutable view of one packed video plane.
pub struct Canvas<'a> {
    /// Plane bytes.
    pub data: &'a mut [u8],
    /// Visible width.
    pub width: usize,
    /// Visible height.
    pub height: usize,
    /// Bytes per row.
    pub stride: usize,
    /// Bytes per pixel.
    pub bpp: usize,
    /// Offsets of R, G, B in a pixel.
    pub rgb: [usize; 3],
}

impl<'a> Canvas<'a> {
    /// The whole of an RGB image.
    pub fn of_rgb(img: &'a mut RgbImage) -> Self {
        let (width, height) = (img.width() as usize, img.height() as usize);
        Canvas {
            data: img.as_mut(),
            width,
            height,
            stride: 3 * width,
            bpp: 3,
            rgb: [0, 1, 2],
        }
    }

    /// Blends `colour` over pixel (x, y) with opacity `alpha` (0..1).
    #[inline]
    pub fn blend(&mut self, x: usize, y: usize, colour: [u8; 3], alpha: f32) {
        if x >= self.width || y >= self.height || alpha <= 0.0 {
            return;
        }
        let i = y * self.stride + x * self.bpp;
        for (&offset, &c) in self.rgb.iter().zip(&colour) {
            let p = &mut self.data[i + offset];
            *p = (*p as f32 * (1.0 - alpha) + c as f32 * alpha).round() as u8;
        }
    }

    /// Blends one colour per pixel over the whole frame with a fixed opacity, in integer
    /// arithmetic (this runs on every pixel of every frame).
    pub fn blend_all(&mut self, alpha: f32, mut colour_at: impl FnMut(usize, usize) -> [u8; 3]) {
        let a = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
        let keep = 256 - a;
        for y in 0..self.height {
            let row = &mut self.data[y * self.stride..];
            for x in 0..self.width {
                let c = colour_at(x, y);
                let px = &mut row[x * self.bpp..];
                for (&offset, &v) in self.rgb.iter().zip(&c) {
                    let p = &mut px[offset];
                    *p = ((*p as u32 * keep + v as u32 * a + 128) >> 8) as u8;
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
        let lut: Vec<[u8; 3]> = (0..256).map(|i| heat(i as f32 / 255.0)).collect();
        canvas.blend_all(style.alpha, |x, y| {
            lut[(scale.position(map.data[y * w + x]) * 255.0) as usize]
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
        let mut c = Canvas {
            data: &mut data,
            width: 4,
            height: 4,
            stride: 16,
            bpp: 4,
            rgb: [2, 1, 0],
        };
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
        let mut c = Canvas {
            data: &mut data,
            width: 2,
            height: 1,
            stride: 6,
            bpp: 3,
            rgb: [0, 1, 2],
        };
        c.blend_all(0.5, |_, _| [200, 0, 100]);
        assert_eq!(data, vec![150, 50, 100, 150, 50, 100]);
    }
}
