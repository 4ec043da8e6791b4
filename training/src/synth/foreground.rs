//! Foreground restriction for objects (docs/method.md section 3): Otsu threshold on a blurred grey
//! image, morphological opening and closing, hole filling; per-category switches.

use image::{GrayImage, Luma, RgbImage};
use imageproc::contrast::otsu_level;
use imageproc::distance_transform::Norm;
use imageproc::filter::gaussian_blur_f32;
use imageproc::morphology::{close, open};
use imageproc::region_labelling::{Connectivity, connected_components};
use serde::{Deserialize, Serialize};

/// Where synthetic defects may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ForegroundMode {
    /// Anywhere (textures and surfaces).
    None,
    /// On the brighter Otsu class (objects on a dark background).
    Object,
    /// On the darker Otsu class (objects on a bright background).
    Inverted,
}

/// The foreground switches of one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForegroundRule {
    /// Mode.
    pub mode: ForegroundMode,
    /// Fill holes inside the foreground.
    pub fill_holes: bool,
}

impl std::fmt::Display for ForegroundRule {
    /// Where defects go, in words, with the setting that chose it (as training prints it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holes = if self.fill_holes {
            ", holes filled"
        } else {
            ""
        };
        match self.mode {
            ForegroundMode::None => write!(f, "anywhere in the image (foreground none)"),
            ForegroundMode::Object => write!(
                f,
                "on the object, the brighter Otsu class (foreground object{holes})"
            ),
            ForegroundMode::Inverted => write!(
                f,
                "on the object, the darker Otsu class (foreground inverted{holes})"
            ),
        }
    }
}

/// The authors' switches for the MVTec AD categories (docs/method.md section 5b); any other category
/// gets no restriction (defects may appear anywhere), which is right for surfaces and safe for
/// objects.
pub fn rule_for_category(name: &str) -> ForegroundRule {
    let mode = match name {
        "cable" | "hazelnut" | "metal_nut" | "pill" | "toothbrush" => ForegroundMode::Inverted,
        "bottle" | "capsule" | "grid" | "screw" | "zipper" => ForegroundMode::Object,
        _ => ForegroundMode::None,
    };
    ForegroundRule {
        mode,
        fill_holes: !matches!(name, "grid" | "metal_nut"),
    }
}

/// The foreground mask (255 = foreground) of an image, or `None` when the rule allows everywhere.
pub fn foreground_mask(img: &RgbImage, rule: ForegroundRule) -> Option<GrayImage> {
    if rule.mode == ForegroundMode::None {
        return None;
    }
    let grey = image::imageops::grayscale(img);
    let blurred = gaussian_blur_f32(&grey, 2.0);
    let level = otsu_level(&blurred);
    let invert = rule.mode == ForegroundMode::Inverted;
    let mut mask = GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let bright = blurred.get_pixel(x, y)[0] > level;
        Luma([if bright != invert { 255 } else { 0 }])
    });
    mask = close(&open(&mask, Norm::LInf, 2), Norm::LInf, 2);
    if rule.fill_holes {
        fill_holes(&mut mask);
    }
    Some(mask)
}

/// Sets to foreground every background component that does not touch the border.
pub fn fill_holes(mask: &mut GrayImage) {
    let inverted = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([255 - mask.get_pixel(x, y)[0]])
    });
    let labels = connected_components(&inverted, Connectivity::Four, Luma([0u8]));
    let (w, h) = mask.dimensions();
    let mut touches = std::collections::HashSet::new();
    for (x, y, l) in labels.enumerate_pixels() {
        if l[0] != 0 && (x == 0 || y == 0 || x == w - 1 || y == h - 1) {
            touches.insert(l[0]);
        }
    }
    for (x, y, l) in labels.enumerate_pixels() {
        if l[0] != 0 && !touches.contains(&l[0]) {
            mask.put_pixel(x, y, Luma([255]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A bright ring (with a dark hole) on a dark background.
    fn ring() -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let d = ((x as f32 - 32.0).powi(2) + (y as f32 - 32.0).powi(2)).sqrt();
            Rgb(if (8.0..20.0).contains(&d) {
                [220; 3]
            } else {
                [20; 3]
            })
        })
    }

    #[test]
    fn object_mask_fills_holes_and_inverted_mode_flips() {
        let img = ring();
        let filled = foreground_mask(
            &img,
            ForegroundRule {
                mode: ForegroundMode::Object,
                fill_holes: true,
            },
        )
        .unwrap();
        assert_eq!(filled.get_pixel(32, 32)[0], 255, "hole filled");
        assert_eq!(filled.get_pixel(45, 32)[0], 255, "ring is foreground");
        assert_eq!(filled.get_pixel(2, 2)[0], 0, "background");
        let open = foreground_mask(
            &img,
            ForegroundRule {
                mode: ForegroundMode::Object,
                fill_holes: false,
            },
        )
        .unwrap();
        assert_eq!(open.get_pixel(32, 32)[0], 0, "hole kept without filling");
        let inv = foreground_mask(
            &img,
            ForegroundRule {
                mode: ForegroundMode::Inverted,
                fill_holes: false,
            },
        )
        .unwrap();
        assert_eq!(inv.get_pixel(2, 2)[0], 255);
        assert_eq!(inv.get_pixel(45, 32)[0], 0);
        assert!(foreground_mask(&img, rule_for_category("magnetic_tile")).is_none());
    }

    #[test]
    fn category_switches_follow_the_paper() {
        assert_eq!(rule_for_category("cable").mode, ForegroundMode::Inverted);
        assert!(!rule_for_category("metal_nut").fill_holes);
        assert_eq!(rule_for_category("grid").mode, ForegroundMode::Object);
        assert_eq!(rule_for_category("transistor").mode, ForegroundMode::None);
        assert_eq!(rule_for_category("wood").mode, ForegroundMode::None);
    }
}
