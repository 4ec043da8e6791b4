//! Drawing on packed RGB(A/x) frames in place: heatmap blending, boxes, region outlines, text.

use ab_glyph::{Font, FontArc, PxScale, ScaleFont};

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

impl Canvas<'_> {
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
