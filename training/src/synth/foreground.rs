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
    /// On the part, whichever Otsu class it is: the class that touches the image border less
    /// (a part lies inside the frame, its background surrounds it).
    Object,
    /// On the darker Otsu class (dark parts on a bright background).
    Dark,
    /// On the brighter Otsu class (bright parts on a dark background).
    Bright,
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
                "on the part, the Otsu class that touches the border less (foreground object{holes})"
            ),
            ForegroundMode::Dark => write!(
                f,
                "on the part, the darker Otsu class (foreground dark{holes})"
            ),
            ForegroundMode::Bright => write!(
                f,
                "on the part, the brighter Otsu class (foreground bright{holes})"
            ),
        }
    }
}

/// The authors' switches for the MVTec AD categories (docs/method.md section 5b): their object
/// mask is the darker Otsu class (a screw or capsule on a bright table), "inverted" the brighter
/// one (a hazelnut or pill on black). Any other category gets no restriction (defects may appear
/// anywhere), which is right for surfaces and safe for objects; `object` picks the part by itself.
pub fn rule_for_category(name: &str) -> ForegroundRule {
    let mode = match name {
        "cable" | "hazelnut" | "metal_nut" | "pill" | "toothbrush" => ForegroundMode::Bright,
        "bottle" | "capsule" | "grid" | "screw" | "zipper" => ForegroundMode::Dark,
        _ => ForegroundMode::None,
    };
    ForegroundRule {
        mode,
        fill_holes: !matches!(name, "grid" | "metal_nut"),
    }
}

/// The rule a run uses: the category's switch, with the config's `foreground` and `fill_holes`
/// where given.
pub fn rule_for_run(
    category: &str,
    mode: Option<ForegroundMode>,
    fill_holes: Option<bool>,
) -> ForegroundRule {
    let rule = rule_for_category(category);
    ForegroundRule {
        mode: mode.unwrap_or(rule.mode),
        fill_holes: fill_holes.unwrap_or(rule.fill_holes),
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
    let bright = GrayImage::from_fn(img.width(), img.height(), |x, y| {
        Luma([if blurred.get_pixel(x, y)[0] > level {
            255
        } else {
            0
        }])
    });
    let part_is_bright = match rule.mode {
        ForegroundMode::Bright => true,
        ForegroundMode::Dark => false,
        _ => border_share(&bright) < 0.5,
    };
    let mut mask = if part_is_bright {
        bright
    } else {
        GrayImage::from_fn(img.width(), img.height(), |x, y| {
            Luma([255 - bright.get_pixel(x, y)[0]])
        })
    };
    mask = close(&open(&mask, Norm::LInf, 2), Norm::LInf, 2);
    if rule.fill_holes {
        fill_holes(&mut mask);
    }
    Some(mask)
}

/// The share of the border pixels that are set in `mask`.
fn border_share(mask: &GrayImage) -> f64 {
    let (w, h) = mask.dimensions();
    let (mut on, mut all) = (0usize, 0usize);
    for (x, y, p) in mask.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            all += 1;
            on += usize::from(p[0] > 0);
        }
    }
    on as f64 / all.max(1) as f64
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

    /// A ring (with a hole) of `part` grey on a `background` grey.
    fn ring(part: u8, background: u8) -> RgbImage {
        RgbImage::from_fn(64, 64, |x, y| {
            let d = ((x as f32 - 32.0).powi(2) + (y as f32 - 32.0).powi(2)).sqrt();
            Rgb([if (8.0..20.0).contains(&d) {
                part
            } else {
                background
            }; 3])
        })
    }

    fn mask(img: &RgbImage, mode: ForegroundMode, fill_holes: bool) -> GrayImage {
        foreground_mask(img, ForegroundRule { mode, fill_holes }).unwrap()
    }

    /// Whether `m` selects the ring (and its hole when filled) and not the background.
    fn selects_the_part(m: &GrayImage, hole: u8) -> bool {
        m.get_pixel(45, 32)[0] == 255 && m.get_pixel(2, 2)[0] == 0 && m.get_pixel(32, 32)[0] == hole
    }

    #[test]
    fn bright_and_dark_modes_take_their_class_and_fill_holes() {
        let img = ring(220, 20);
        assert!(selects_the_part(
            &mask(&img, ForegroundMode::Bright, true),
            255
        ));
        assert!(selects_the_part(
            &mask(&img, ForegroundMode::Bright, false),
            0
        ));
        let dark = mask(&img, ForegroundMode::Dark, false);
        assert_eq!(dark.get_pixel(2, 2)[0], 255);
        assert_eq!(dark.get_pixel(45, 32)[0], 0);
        assert!(foreground_mask(&img, rule_for_category("magnetic_tile")).is_none());
    }

    /// `object` finds the part whichever its polarity: a dark part on a bright background and a
    /// bright part on a dark one.
    #[test]
    fn object_mode_finds_dark_and_bright_parts() {
        for (part, background) in [(30, 210), (210, 30)] {
            let img = ring(part, background);
            let m = mask(&img, ForegroundMode::Object, true);
            assert!(selects_the_part(&m, 255), "part {part} on {background}");
        }
    }

    /// The built-in switches select the part on images like their categories': a dark screw on a
    /// bright table, a bright hazelnut on black.
    #[test]
    fn category_switches_select_the_part() {
        let screw = foreground_mask(&ring(40, 200), rule_for_category("screw")).unwrap();
        assert!(selects_the_part(&screw, 255));
        let nut = foreground_mask(&ring(200, 10), rule_for_category("hazelnut")).unwrap();
        assert!(selects_the_part(&nut, 255));
        assert_eq!(rule_for_category("cable").mode, ForegroundMode::Bright);
        assert_eq!(rule_for_category("capsule").mode, ForegroundMode::Dark);
        assert!(!rule_for_category("metal_nut").fill_holes);
        assert_eq!(rule_for_category("transistor").mode, ForegroundMode::None);
        assert_eq!(rule_for_category("wood").mode, ForegroundMode::None);
    }
}
