//! Thin-line defects (scratches, hairline cracks): a jagged polyline a few pixels wide, with an
//! occasional branch. Perlin blobs never look like this, and thin dark or bright lines are among
//! the commonest real surface defects (cracks in tiles and castings, scratches on metal).

use image::{GrayImage, Luma};
use rand::Rng;

/// How a thin-line defect changes the pixels under its mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineShade {
    /// Darken (true) or brighten.
    pub dark: bool,
    /// Fraction of the way to black (dark) or white (bright), in 0..1.
    pub strength: f32,
}

impl LineShade {
    /// A random shade: dark or bright with equal odds, 30-80 % of the way to black or white.
    pub fn random(rng: &mut impl Rng) -> Self {
        LineShade {
            dark: rng.gen_bool(0.5),
            strength: rng.gen_range(0.3f32..0.8),
        }
    }

    /// The new value of a channel.
    pub fn apply(&self, v: f32) -> f32 {
        if self.dark {
            v * (1.0 - self.strength)
        } else {
            v + (255.0 - v) * self.strength
        }
    }
}

/// A random line mask (255 = defect) of `width` x `height`. Line width 1-3 px and length 15-60 %
/// of the longer side, both at 256 px and scaled with the image.
pub fn line_mask(width: u32, height: u32, rng: &mut impl Rng) -> GrayImage {
    let mut mask = GrayImage::new(width, height);
    let scale = width.max(height) as f32 / 256.0;
    let radius = rng.gen_range(1..=3) as f32 * scale / 2.0;
    let length = rng.gen_range(0.15f32..0.6) * width.max(height) as f32;
    let start = (
        rng.gen_range(0.0..width as f32),
        rng.gen_range(0.0..height as f32),
    );
    let heading = rng.gen_range(0.0..std::f32::consts::TAU);
    let vertices = polyline(start, heading, length, rng);
    draw_polyline(&mut mask, &vertices, radius);
    if rng.gen_bool(0.3) {
        // a branch from one of the vertices, shorter, turned away from the main line
        let from = vertices[rng.gen_range(0..vertices.len())];
        let turn = rng.gen_range(0.4f32..1.2) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let branch = polyline(from, heading + turn, length * rng.gen_range(0.2..0.5), rng);
        draw_polyline(&mut mask, &branch, radius);
    }
    mask
}

/// Vertices of a jagged line: 2-8 segments whose heading wanders by up to 0.6 rad each.
fn polyline(
    start: (f32, f32),
    mut heading: f32,
    length: f32,
    rng: &mut impl Rng,
) -> Vec<(f32, f32)> {
    let segments = rng.gen_range(2..=8);
    let step = length / segments as f32;
    let mut points = vec![start];
    let mut p = start;
    for _ in 0..segments {
        heading += rng.gen_range(-0.6f32..0.6);
        p = (p.0 + step * heading.cos(), p.1 + step * heading.sin());
        points.push(p);
    }
    points
}

/// Marks every pixel whose centre lies within `radius` (at least half a pixel) of the polyline.
fn draw_polyline(mask: &mut GrayImage, points: &[(f32, f32)], radius: f32) {
    let r = radius.max(0.5);
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    for seg in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        let n = ((x1 - x0).hypot(y1 - y0) * 2.0).ceil().max(1.0) as usize;
        for i in 0..=n {
            let t = i as f32 / n as f32;
            let (cx, cy) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            let (lo_x, hi_x) = ((cx - r).floor() as i64, (cx + r).ceil() as i64);
            let (lo_y, hi_y) = ((cy - r).floor() as i64, (cy + r).ceil() as i64);
            for y in lo_y.max(0)..=hi_y.min(h - 1) {
                for x in lo_x.max(0)..=hi_x.min(w - 1) {
                    let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                    if dx * dx + dy * dy <= r * r {
                        mask.put_pixel(x as u32, y as u32, Luma([255]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lines_are_thin_and_long() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut nonempty = 0;
        for _ in 0..40 {
            let m = line_mask(256, 256, &mut rng);
            let on = m.pixels().filter(|p| p[0] == 255).count();
            assert!(m.pixels().all(|p| p[0] == 0 || p[0] == 255), "binary");
            // at most 60 % of 256 px (plus a branch of half that) times 3 px wide, with the
            // discs' overlap at the joints
            assert!(on < 256 * 9 / 10 * 4 + 200, "thin: {on} pixels");
            if on > 0 {
                nonempty += 1;
                // a line: few pixels for its extent
                let xs = m.enumerate_pixels().filter(|p| p.2[0] == 255).map(|p| p.0);
                let (lo, hi) = xs.fold((u32::MAX, 0), |(l, h), x| (l.min(x), h.max(x)));
                let ys = m.enumerate_pixels().filter(|p| p.2[0] == 255).map(|p| p.1);
                let (lo_y, hi_y) = ys.fold((u32::MAX, 0), |(l, h), y| (l.min(y), h.max(y)));
                let extent = (hi - lo + 1).max(hi_y - lo_y + 1) as usize;
                assert!(on <= extent * 8, "{on} pixels over an extent of {extent}");
            }
        }
        assert!(nonempty > 30, "lines start inside the image: {nonempty}");
    }

    #[test]
    fn shades_move_towards_black_or_white() {
        let dark = LineShade {
            dark: true,
            strength: 0.5,
        };
        let bright = LineShade {
            dark: false,
            strength: 0.5,
        };
        assert_eq!(dark.apply(200.0), 100.0);
        assert_eq!(bright.apply(55.0), 155.0);
    }
}
