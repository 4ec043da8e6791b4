//! The embedded demo category: procedural brushed-metal plates with punched holes, and three
//! kinds of realistic defects with exact masks (scratches, cracks, stains), written in MVTec AD
//! layout. It deliberately shares nothing with the training-time defect synthesiser, so the
//! demo does not test the model on the very defects it was trained to find.

use anyhow::{Context, Result};
use clsflow::checkpoint::write_atomic;
use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::drawing::draw_filled_circle_mut;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Image side.
pub const SIZE: u32 = 256;
/// Defect types of the demo category.
pub const DEFECTS: [&str; 3] = ["scratch", "crack", "stain"];

/// How many images of each kind to write.
#[derive(Debug, Clone, Copy)]
pub struct DemoCounts {
    /// Good training images.
    pub train: usize,
    /// Good test images.
    pub test_good: usize,
    /// Test images per defect type.
    pub per_defect: usize,
}

impl Default for DemoCounts {
    fn default() -> Self {
        DemoCounts {
            train: 100,
            test_good: 20,
            per_defect: 12,
        }
    }
}

/// A good plate.
pub fn plate(rng: &mut impl Rng) -> RgbImage {
    let tint = [
        rng.gen_range(150.0..170.0),
        rng.gen_range(155.0..172.0),
        rng.gen_range(165.0..185.0f32),
    ];
    let gain: f32 = rng.gen_range(0.92..1.08);
    // brushed streaks: a smooth random profile over rows, plus per-pixel grain
    let mut rows = vec![0f32; SIZE as usize];
    let mut v = 0.0f32;
    for r in rows.iter_mut() {
        v = 0.85 * v + rng.gen_range(-6.0..6.0);
        *r = v;
    }
    let (gx, gy) = (rng.gen_range(-0.08..0.08f32), rng.gen_range(-0.08..0.08f32));
    let off = (rng.gen_range(-3..=3) as f32, rng.gen_range(-3..=3) as f32);
    let mut img = RgbImage::from_fn(SIZE, SIZE, |x, y| {
        let light = 1.0 + gx * (x as f32 / SIZE as f32 - 0.5) + gy * (y as f32 / SIZE as f32 - 0.5);
        let base = rows[y as usize];
        Rgb(tint.map(|t| ((t + base) * gain * light).clamp(0.0, 255.0) as u8))
    });
    for p in img.pixels_mut() {
        let g: f32 = rng.gen_range(-7.0..7.0);
        *p = Rgb(p.0.map(|c| (c as f32 + g).clamp(0.0, 255.0) as u8));
    }
    // a 3 x 3 grid of punched holes with darker rims
    for i in 0..3 {
        for j in 0..3 {
            let cx = (48.0 + 80.0 * i as f32 + off.0) as i32;
            let cy = (48.0 + 80.0 * j as f32 + off.1) as i32;
            draw_filled_circle_mut(&mut img, (cx, cy), 13, Rgb([90, 92, 98]));
            draw_filled_circle_mut(&mut img, (cx, cy), 10, Rgb([18, 18, 22]));
        }
    }
    img
}

/// Stamps a stroke of `width` along points into `mask`.
fn stroke(mask: &mut GrayImage, pts: &[(f32, f32)], width: i32) {
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let n = ((x1 - x0).hypot(y1 - y0).ceil() as usize).max(1);
        for k in 0..=n {
            let t = k as f32 / n as f32;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            draw_filled_circle_mut(
                mask,
                (x.round() as i32, y.round() as i32),
                width / 2,
                Luma([255]),
            );
        }
    }
}

/// Adds one defect of `kind` to `img`; returns its exact mask.
pub fn add_defect(img: &mut RgbImage, kind: &str, rng: &mut impl Rng) -> GrayImage {
    let mut mask = GrayImage::new(SIZE, SIZE);
    let s = SIZE as f32;
    match kind {
        "scratch" => {
            // a long, thin, slightly curved bright line
            let (x0, y0) = (rng.gen_range(20.0..s - 20.0), rng.gen_range(20.0..s - 20.0));
            let a: f32 = rng.gen_range(0.0..std::f32::consts::PI);
            let len = rng.gen_range(50.0..130.0);
            let bend = rng.gen_range(-0.004..0.004);
            let pts: Vec<(f32, f32)> = (0..=20)
                .map(|k| {
                    let t = k as f32 / 20.0 * len;
                    let ang = a + bend * t;
                    (
                        (x0 + t * ang.cos()).clamp(2.0, s - 3.0),
                        (y0 + t * ang.sin()).clamp(2.0, s - 3.0),
                    )
                })
                .collect();
            stroke(&mut mask, &pts, rng.gen_range(2..=4));
            let add = rng.gen_range(55.0..90.0f32);
            apply(img, &mask, |c| (c as f32 + add).min(255.0) as u8);
        }
        "crack" => {
            // a dark random walk
            let (mut x, mut y) = (rng.gen_range(30.0..s - 30.0), rng.gen_range(30.0..s - 30.0));
            let mut a: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
            let mut pts = vec![(x, y)];
            for _ in 0..rng.gen_range(12..30) {
                a += rng.gen_range(-0.7..0.7);
                x = (x + 4.0 * a.cos()).clamp(2.0, s - 3.0);
                y = (y + 4.0 * a.sin()).clamp(2.0, s - 3.0);
                pts.push((x, y));
            }
            stroke(&mut mask, &pts, rng.gen_range(2..=3));
            let f = rng.gen_range(0.2..0.4f32);
            apply(img, &mask, |c| (c as f32 * f) as u8);
        }
        _ => {
            // an irregular brownish stain (union of discs)
            let (cx, cy) = (rng.gen_range(30.0..s - 30.0), rng.gen_range(30.0..s - 30.0));
            for _ in 0..rng.gen_range(4..9) {
                let (dx, dy) = (rng.gen_range(-12.0..12.0f32), rng.gen_range(-12.0..12.0f32));
                draw_filled_circle_mut(
                    &mut mask,
                    ((cx + dx) as i32, (cy + dy) as i32),
                    rng.gen_range(5..13),
                    Luma([255]),
                );
            }
            let alpha = rng.gen_range(0.45..0.7f32);
            let stain = [110.0, 80.0, 45.0f32];
            for (p, m) in img.pixels_mut().zip(mask.pixels()) {
                if m[0] > 0 {
                    for c in 0..3 {
                        p[c] = (p[c] as f32 * (1.0 - alpha) + stain[c] * alpha) as u8;
                    }
                }
            }
        }
    }
    mask
}

fn apply(img: &mut RgbImage, mask: &GrayImage, f: impl Fn(u8) -> u8) {
    for (p, m) in img.pixels_mut().zip(mask.pixels()) {
        if m[0] > 0 {
            *p = Rgb(p.0.map(&f));
        }
    }
}

fn save(img: &image::DynamicImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)?;
    write_atomic(path, &bytes.into_inner())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the demo category under `root` (MVTec AD layout). Returns the number of images.
pub fn generate(root: &Path, counts: DemoCounts, seed: u64) -> Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0;
    for i in 0..counts.train {
        save(
            &plate(&mut rng).into(),
            &root.join(format!("train/good/{i:03}.png")),
        )?;
        n += 1;
    }
    for i in 0..counts.test_good {
        save(
            &plate(&mut rng).into(),
            &root.join(format!("test/good/{i:03}.png")),
        )?;
        n += 1;
    }
    for kind in DEFECTS {
        for i in 0..counts.per_defect {
            let mut img = plate(&mut rng);
            let mask = add_defect(&mut img, kind, &mut rng);
            save(&img.into(), &root.join(format!("test/{kind}/{i:03}.png")))?;
            save(
                &mask.into(),
                &root.join(format!("ground_truth/{kind}/{i:03}_mask.png")),
            )?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defects_change_exactly_their_mask() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for kind in DEFECTS {
            let base = plate(&mut rng);
            let mut img = base.clone();
            let mask = add_defect(&mut img, kind, &mut rng);
            let area = mask.pixels().filter(|m| m[0] > 0).count();
            assert!(area > 30, "{kind}: defect area {area}");
            let changed_outside = img
                .pixels()
                .zip(base.pixels())
                .zip(mask.pixels())
                .filter(|((a, b), m)| m[0] == 0 && a != b)
                .count();
            assert_eq!(changed_outside, 0, "{kind} changed pixels outside its mask");
        }
    }

    #[test]
    fn writes_mvtec_layout() {
        let dir = tempfile::tempdir().unwrap();
        let n = generate(
            dir.path(),
            DemoCounts {
                train: 3,
                test_good: 2,
                per_defect: 1,
            },
            1,
        )
        .unwrap();
        assert_eq!(n, 8);
        let ds = crate::data::Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.train.len(), 3);
        assert_eq!(ds.test.len(), 5);
        assert!(
            ds.test
                .iter()
                .filter(|t| t.defect_type != "good")
                .all(|t| t.mask.is_some())
        );
    }
}
