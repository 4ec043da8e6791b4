//! Smooth brightness defects (stains, uneven surface or coating): a large, low-frequency region
//! whose brightness shifts with soft edges. Such defects have no texture of their own, so the
//! texture-blend defects never teach them.

use super::perlin::{perlin, rotate};
use image::{GrayImage, Luma};
use rand::Rng;

/// Weights below this are cut to zero: the defect mask is where the weight is above it.
const EDGE: f32 = 0.1;

/// A smooth defect: a per-pixel weight in 0..=1 (0 outside the defect) and the brightness shift
/// at weight 1, in grey levels (negative darkens).
#[derive(Debug, Clone)]
pub struct SmoothDefect {
    /// Row-major weights, width x height.
    pub weight: Vec<f32>,
    /// Shift at weight 1.
    pub shift: f32,
}

impl SmoothDefect {
    /// A random region of `width` x `height`: low-frequency Perlin noise (1-4 lattice cells
    /// across the image), rotated, ramped from 0 at noise 0.2 to 1 at noise 0.45, a shift of 20-70
    /// grey levels either way.
    pub fn random(width: u32, height: u32, rng: &mut impl Rng) -> Self {
        // The noise is made twice the image's size and its centre is used: a rotated field has
        // zeros at its corners, and their hard edge would show in a smooth defect.
        let size = (width.max(height) as usize).next_power_of_two().max(4);
        let big = 2 * size;
        let noise = perlin(
            big,
            1 << rng.gen_range(1..=3),
            1 << rng.gen_range(1..=3),
            rng,
        );
        let noise = rotate(&noise, big, rng.gen_range(-90.0..=90.0));
        let offset = size / 2;
        let mut weight = Vec::with_capacity((width * height) as usize);
        for y in 0..height as usize {
            for x in 0..width as usize {
                let n = noise[(y + offset) * big + x + offset];
                let w = ((n - 0.2) / 0.25).clamp(0.0, 1.0);
                // smoothstep: no visible rim where the ramp starts and ends
                let w = w * w * (3.0 - 2.0 * w);
                weight.push(if w < EDGE { 0.0 } else { w });
            }
        }
        let shift = rng.gen_range(20.0f32..70.0) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        SmoothDefect { weight, shift }
    }

    /// The defect mask (255 where the weight is non-zero).
    pub fn mask(&self, width: u32, height: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            Luma([if self.weight[(y * width + x) as usize] > 0.0 {
                255
            } else {
                0
            }])
        })
    }

    /// The new value of a channel at pixel index `i`.
    pub fn apply(&self, i: usize, v: f32) -> f32 {
        v + self.weight[i] * self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn regions_are_large_and_soft_edged() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut covered = 0;
        for _ in 0..30 {
            let d = SmoothDefect::random(200, 120, &mut rng);
            assert_eq!(d.weight.len(), 200 * 120);
            assert!((20.0..70.0).contains(&d.shift.abs()));
            assert!(
                d.weight
                    .iter()
                    .all(|&w| w == 0.0 || (EDGE..=1.0).contains(&w))
            );
            let mask = d.mask(200, 120);
            let on = mask.pixels().filter(|p| p[0] == 255).count();
            if on > 0 {
                covered += 1;
                // soft: the largest step between neighbours is a fraction of the full weight
                let step = (0..120)
                    .flat_map(|y| (1..200).map(move |x| (y, x)))
                    .map(|(y, x)| (d.weight[y * 200 + x] - d.weight[y * 200 + x - 1]).abs())
                    .fold(0.0f32, f32::max);
                assert!(step < 0.5, "edge step {step}");
            }
        }
        assert!(covered > 10, "most draws give a region: {covered}");
    }
}
