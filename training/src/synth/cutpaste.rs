//! Cut-and-paste defects for calibration only: a patch of the image itself, flipped, pasted
//! somewhere else (as CutPaste, Li et al. 2021, makes them). Stage 1 never trains on this
//! family, so how the classifier's weight does on it says whether the classifier has learned
//! defects or only the synthesiser's own kinds.

use super::Sample;
use image::{GrayImage, Luma, RgbImage};
use rand::Rng;

/// A patch of `image` moved elsewhere: a rectangle of an eighth to a third of each side, taken
/// at random, mirrored, and pasted at a random place whose centre is on the foreground (when one
/// is given). The mask is the pasted rectangle.
pub fn cut_paste(image: &RgbImage, foreground: Option<&GrayImage>, rng: &mut impl Rng) -> Sample {
    let (w, h) = image.dimensions();
    let pw = rng.gen_range((w / 8).max(1)..=(w / 3).max(1));
    let ph = rng.gen_range((h / 8).max(1)..=(h / 3).max(1));
    let (sx, sy) = (rng.gen_range(0..=w - pw), rng.gen_range(0..=h - ph));
    // a target whose centre lies on the foreground, if a few tries find one
    let mut place = || (rng.gen_range(0..=w - pw), rng.gen_range(0..=h - ph));
    let mut target = place();
    if let Some(fg) = foreground {
        for _ in 0..20 {
            let (cx, cy) = (target.0 + pw / 2, target.1 + ph / 2);
            if fg.get_pixel(cx, cy)[0] > 0 {
                break;
            }
            target = place();
        }
    }
    let mirror_x = rng.gen_bool(0.5);
    let mut out = image.clone();
    let mut mask = GrayImage::new(w, h);
    for y in 0..ph {
        for x in 0..pw {
            let from_x = if mirror_x { sx + pw - 1 - x } else { sx + x };
            let p = *image.get_pixel(from_x, sy + y);
            out.put_pixel(target.0 + x, target.1 + y, p);
            mask.put_pixel(target.0 + x, target.1 + y, Luma([255]));
        }
    }
    Sample {
        image: out,
        mask,
        label: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_patch_moves_inside_the_image() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 7]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let s = cut_paste(&img, None, &mut rng);
            let n = s.mask.pixels().filter(|m| m[0] > 0).count();
            assert!((8 * 6..=21 * 16).contains(&n), "{n} pixels");
            // outside the mask the image is untouched
            for (x, y, m) in s.mask.enumerate_pixels() {
                if m[0] == 0 {
                    assert_eq!(s.image.get_pixel(x, y), img.get_pixel(x, y));
                }
            }
        }
    }
}
