//! The nine image augmenters of the method's defect source (after DRAEM's imgaug list): each
//! sample's source image goes through three distinct ones, chosen at random.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::seq::SliceRandom;

/// The augmenters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Augmenter {
    /// Gamma 0.5..2 per channel.
    GammaContrast,
    /// Multiply 0.8..1.2, add -30..30.
    Brightness,
    /// PIL-style sharpness factor 0..2.
    Sharpness,
    /// Hue and saturation shift of -50..50 (on a 0..255 scale).
    HueSaturation,
    /// With p = 0.5, invert pixels above a threshold of 32..128.
    Solarize,
    /// Keep 1..=8 bits per channel.
    Posterize,
    /// 255 - x.
    Invert,
    /// Stretch each channel to 0..255 after cutting 0..20 % of the histogram.
    Autocontrast,
    /// Histogram equalisation per channel.
    Equalize,
}

/// All nine, in a fixed order.
pub const ALL: [Augmenter; 9] = [
    Augmenter::GammaContrast,
    Augmenter::Brightness,
    Augmenter::Sharpness,
    Augmenter::HueSaturation,
    Augmenter::Solarize,
    Augmenter::Posterize,
    Augmenter::Invert,
    Augmenter::Autocontrast,
    Augmenter::Equalize,
];

fn map_channels(img: &mut RgbImage, f: impl Fn(usize, u8) -> u8) {
    for p in img.pixels_mut() {
        for c in 0..3 {
            p[c] = f(c, p[c]);
        }
    }
}

fn clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

impl Augmenter {
    /// Applies the augmenter in place with random parameters from `rng`.
    pub fn apply(self, img: &mut RgbImage, rng: &mut impl Rng) {
        match self {
            Augmenter::GammaContrast => {
                let g: [f32; 3] = [0, 1, 2].map(|_| rng.gen_range(0.5..2.0));
                let lut: Vec<[u8; 3]> = (0..256)
                    .map(|v| g.map(|g| clamp_u8(255.0 * (v as f32 / 255.0).powf(g))))
                    .collect();
                map_channels(img, |c, v| lut[v as usize][c]);
            }
            Augmenter::Brightness => {
                let (m, a) = (rng.gen_range(0.8..1.2), rng.gen_range(-30.0..30.0));
                map_channels(img, |_, v| clamp_u8(v as f32 * m + a));
            }
            Augmenter::Sharpness => {
                let factor: f32 = rng.gen_range(0.0..2.0);
                let blurred = smooth(img);
                for (p, b) in img.pixels_mut().zip(blurred.pixels()) {
                    for c in 0..3 {
                        p[c] = clamp_u8(b[c] as f32 + factor * (p[c] as f32 - b[c] as f32));
                    }
                }
            }
            Augmenter::HueSaturation => {
                let dh = rng.gen_range(-50.0..50.0) / 255.0 * 360.0;
                let ds = rng.gen_range(-50.0..50.0) / 255.0;
                for p in img.pixels_mut() {
                    let (h, s, v) = rgb_to_hsv(*p);
                    *p = hsv_to_rgb((h + dh).rem_euclid(360.0), (s + ds).clamp(0.0, 1.0), v);
                }
            }
            Augmenter::Solarize => {
                if rng.gen_bool(0.5) {
                    let t: u8 = rng.gen_range(32..=128);
                    map_channels(img, |_, v| if v >= t { 255 - v } else { v });
                }
            }
            Augmenter::Posterize => {
                let bits: u32 = rng.gen_range(1..=8);
                posterize(img, bits);
            }
            Augmenter::Invert => map_channels(img, |_, v| 255 - v),
            Augmenter::Autocontrast => {
                let cutoff: f32 = rng.gen_range(0.0..0.2);
                let hist = histograms(img);
                let n = (img.width() * img.height()) as f32;
                let ranges = hist.map(|h| {
                    let cut = (n * cutoff / 2.0) as u32;
                    let (mut lo, mut acc) = (0usize, 0u32);
                    while lo < 255 && acc + h[lo] <= cut {
                        acc += h[lo];
                        lo += 1;
                    }
                    let (mut hi, mut acc) = (255usize, 0u32);
                    while hi > 0 && acc + h[hi] <= cut {
                        acc += h[hi];
                        hi -= 1;
                    }
                    (lo as f32, hi as f32)
                });
                map_channels(img, |c, v| {
                    let (lo, hi) = ranges[c];
                    if hi <= lo {
                        v
                    } else {
                        clamp_u8((v as f32 - lo) * 255.0 / (hi - lo))
                    }
                });
            }
            Augmenter::Equalize => {
                let hist = histograms(img);
                let n = img.width() * img.height();
                let luts = hist.map(|h| {
                    let mut cdf = [0u32; 256];
                    let mut acc = 0;
                    for (i, &c) in h.iter().enumerate() {
                        acc += c;
                        cdf[i] = acc;
                    }
                    let min = cdf.iter().copied().find(|&c| c > 0).unwrap_or(0);
                    let denom = (n - min).max(1) as f32;
                    cdf.map(|c| clamp_u8((c.saturating_sub(min)) as f32 * 255.0 / denom))
                });
                map_channels(img, |c, v| luts[c][v as usize]);
            }
        }
    }
}

/// Applies `count` distinct augmenters in random order.
pub fn augment(img: &mut RgbImage, count: usize, rng: &mut impl Rng) -> Vec<Augmenter> {
    let chosen: Vec<Augmenter> = ALL.choose_multiple(rng, count).copied().collect();
    for a in &chosen {
        a.apply(img, rng);
    }
    chosen
}

/// Keeps the top `bits` bits of every channel value.
pub fn posterize(img: &mut RgbImage, bits: u32) {
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    map_channels(img, |_, v| v & mask);
}

fn histograms(img: &RgbImage) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for p in img.pixels() {
        for c in 0..3 {
            h[c][p[c] as usize] += 1;
        }
    }
    h
}

/// PIL's SMOOTH kernel (3x3, centre weight 5, total 13), edges replicated.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0f32; 3];
        for dy in -1i32..=1 {
            for dx in -1i32..=1 {
                let sx = (x as i32 + dx).clamp(0, w as i32 - 1) as u32;
                let sy = (y as i32 + dy).clamp(0, h as i32 - 1) as u32;
                let wgt = if dx == 0 && dy == 0 { 5.0 } else { 1.0 };
                let p = img.get_pixel(sx, sy);
                for c in 0..3 {
                    acc[c] += wgt * p[c] as f32;
                }
            }
        }
        Rgb(acc.map(|v| clamp_u8(v / 13.0)))
    })
}

fn rgb_to_hsv(p: Rgb<u8>) -> (f32, f32, f32) {
    let [r, g, b] = p.0.map(|v| v as f32 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> Rgb<u8> {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0).rem_euclid(2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    Rgb([r, g, b].map(|t| clamp_u8((t + m) * 255.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(32, 16, |x, y| {
            Rgb([(x * 8) as u8, (y * 16) as u8, 60 + x as u8])
        })
    }

    #[test]
    fn invert_and_posterize_are_exact() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut img = gradient();
        Augmenter::Invert.apply(&mut img, &mut rng);
        assert_eq!(img.get_pixel(3, 2).0, [255 - 24, 255 - 32, 255 - 63]);
        let mut img = gradient();
        posterize(&mut img, 3);
        assert_eq!(img.get_pixel(3, 2).0, [0, 32, 32]);
        assert!(img.pixels().all(|p| p.0.iter().all(|v| v % 32 == 0)));
    }

    #[test]
    fn hsv_round_trip() {
        for rgb in [[10u8, 200, 30], [255, 0, 0], [12, 12, 12], [90, 40, 250]] {
            let (h, s, v) = rgb_to_hsv(Rgb(rgb));
            let back = hsv_to_rgb(h, s, v).0;
            for c in 0..3 {
                assert!(
                    (back[c] as i32 - rgb[c] as i32).abs() <= 1,
                    "{rgb:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn three_distinct_augmenters_change_the_image() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for _ in 0..20 {
            let mut img = gradient();
            let used = augment(&mut img, 3, &mut rng);
            assert_eq!(used.len(), 3);
            assert!(used[0] != used[1] && used[1] != used[2] && used[0] != used[2]);
        }
        let mut img = gradient();
        Augmenter::Equalize.apply(&mut img, &mut rng);
        let max = img.pixels().map(|p| p[0]).max().unwrap();
        assert_eq!(max, 255, "equalised channel reaches 255");
    }
}
