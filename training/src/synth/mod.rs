//! Synthetic defects made on the fly for the pixelwise classifier (docs/method.md section 3).
//!
//! A Perlin mask M selects where a defect goes; a source image A (a texture with p = 0.5, else
//! another good image of the category) passes through three augmenters and is blended in with a
//! random opacity; the defect is restricted to the foreground for objects. Two kinds beyond the
//! method's can be mixed in: thin lines ([`scratch`]) and smooth brightness regions ([`smooth`]).

pub mod augment;
pub mod foreground;
pub mod perlin;
pub mod scratch;
pub mod smooth;
pub mod textures;

use image::{GrayImage, Luma, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How the soft label of a defect is computed from the pixel change d (mean over RGB of
/// blended - original, on a 0..1 scale): the label is the mean over the defect of sigmoid(5 x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftLabel {
    /// x = |d|: darkening and brightening defects get the same label (our default; with the
    /// signed form a defect that darkens the surface would get a label below 0.5, close to
    /// "normal").
    Absolute,
    /// x = d, literally as docs/method.md states it.
    Signed,
}

/// Settings of the synthesiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Probability that a training sample gets a defect (DRAEM's 0.5: the rest stay normal).
    pub defect_probability: f64,
    /// Probability that the defect source is a texture (else another good image).
    pub texture_probability: f64,
    /// Largest exponent of the Perlin scale 2^a (a, b uniform in 0..=this).
    pub perlin_scale_max: u32,
    /// Threshold of the rotated Perlin noise.
    pub perlin_threshold: f32,
    /// Maximum blending weight of the original image under the defect (beta = this * U(0, 1)).
    pub beta_max: f32,
    /// Augmenters applied to each source image.
    pub augmenters: usize,
    /// Soft-label rule.
    pub soft_label: SoftLabel,
    /// Of the defective samples, the fraction that get a thin line (scratch, hairline crack)
    /// instead of a blended Perlin blob. 0 = the method's synthesis alone.
    pub line_probability: f64,
    /// Of the defective samples, the fraction that get a smooth brightness region (stain,
    /// uneven surface) instead of a blended Perlin blob.
    pub smooth_probability: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            defect_probability: 0.5,
            texture_probability: 0.5,
            perlin_scale_max: 5,
            perlin_threshold: 0.5,
            beta_max: 0.8,
            augmenters: 3,
            soft_label: SoftLabel::Absolute,
            line_probability: 0.0,
            smooth_probability: 0.0,
        }
    }
}

/// The kinds of synthetic defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefectKind {
    /// The method's: an augmented source image blended in under a Perlin mask.
    Blend,
    /// A thin dark or bright line.
    Line,
    /// A smooth brightness shift over a large region.
    Smooth,
}

/// How the pixels under a defect's mask change.
enum Change {
    Blend { source: RgbImage, beta: f32 },
    Line(scratch::LineShade),
    Smooth(smooth::SmoothDefect),
}

impl Change {
    /// The new value of channel `c` of pixel `i` (row-major), whose value is `orig`.
    fn apply(&self, i: usize, c: usize, orig: f32) -> f32 {
        match self {
            Change::Blend { source, beta } => {
                (1.0 - beta) * source.as_raw()[3 * i + c] as f32 + beta * orig
            }
            Change::Line(shade) => shade.apply(orig),
            Change::Smooth(region) => region.apply(i, orig),
        }
    }
}

/// Draws of a line or smooth mask before a forced defect gives up (a line may start and run
/// outside the foreground).
const ATTEMPTS: usize = 4;

/// One training sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The (possibly defective) image.
    pub image: RgbImage,
    /// Defect mask, 255 on defect pixels.
    pub mask: GrayImage,
    /// The value every defect pixel gets as a target (0 when there is no defect).
    pub label: f32,
}

/// Makes defective samples from good images.
#[derive(Debug)]
pub struct DefectSynthesizer {
    config: SynthConfig,
    textures: Vec<RgbImage>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl DefectSynthesizer {
    /// A synthesiser with texture images (all of the training size). Without textures every
    /// source is an in-domain image.
    pub fn new(config: SynthConfig, textures: Vec<RgbImage>) -> Self {
        DefectSynthesizer { config, textures }
    }

    /// The settings.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// A sample from `image`; `others` are good images of the category (sources), `foreground`
    /// the image's foreground mask where defects are restricted. `force_defect` skips the
    /// coin flip (validation sets).
    pub fn sample(
        &self,
        image: &RgbImage,
        others: &[RgbImage],
        foreground: Option<&GrayImage>,
        force_defect: bool,
        rng: &mut impl Rng,
    ) -> Sample {
        let (w, h) = image.dimensions();
        let normal = || Sample {
            image: image.clone(),
            mask: GrayImage::new(w, h),
            label: 0.0,
        };
        if !force_defect && !rng.gen_bool(self.config.defect_probability) {
            return normal();
        }
        let kind = self.pick_kind(rng);
        let attempts = if kind == DefectKind::Blend {
            1
        } else {
            ATTEMPTS
        };
        let found = (0..attempts)
            .map(|_| self.draw_defect(kind, image, others, foreground, rng))
            .find(|(_, mask)| mask.pixels().any(|m| m[0] > 0));
        let Some((change, mask)) = found else {
            return normal();
        };
        let mut out = image.clone();
        let (mut label_sum, mut count) = (0.0f64, 0usize);
        for (i, (o, m)) in out.pixels_mut().zip(mask.pixels()).enumerate() {
            if m[0] == 0 {
                continue;
            }
            let mut d = 0.0f32;
            for c in 0..3 {
                let orig = o[c] as f32;
                let v = change.apply(i, c, orig).round().clamp(0.0, 255.0);
                d += (v - orig) / 255.0 / 3.0;
                o[c] = v as u8;
            }
            let x = match self.config.soft_label {
                SoftLabel::Absolute => d.abs(),
                SoftLabel::Signed => d,
            };
            label_sum += f64::from(sigmoid(5.0 * x));
            count += 1;
        }
        // count > 0: the mask has at least one defect pixel
        Sample {
            image: out,
            mask,
            label: (label_sum / count as f64) as f32,
        }
    }

    /// Draws the kind of the next defect (no draw when only the method's kind is enabled, so
    /// that such configs make the very samples they made before the other kinds existed).
    fn pick_kind(&self, rng: &mut impl Rng) -> DefectKind {
        let (line, smooth) = (self.config.line_probability, self.config.smooth_probability);
        if line + smooth <= 0.0 {
            return DefectKind::Blend;
        }
        let u = rng.gen_range(0.0..1.0);
        if u < line {
            DefectKind::Line
        } else if u < line + smooth {
            DefectKind::Smooth
        } else {
            DefectKind::Blend
        }
    }

    /// A defect of `kind` with its mask, restricted to the foreground.
    fn draw_defect(
        &self,
        kind: DefectKind,
        image: &RgbImage,
        others: &[RgbImage],
        foreground: Option<&GrayImage>,
        rng: &mut impl Rng,
    ) -> (Change, GrayImage) {
        let (w, h) = image.dimensions();
        let (change, mut mask) = match kind {
            DefectKind::Blend => self.blend_defect(image, others, rng),
            DefectKind::Line => (
                Change::Line(scratch::LineShade::random(rng)),
                scratch::line_mask(w, h, rng),
            ),
            DefectKind::Smooth => {
                let d = smooth::SmoothDefect::random(w, h, rng);
                let mask = d.mask(w, h);
                (Change::Smooth(d), mask)
            }
        };
        if let Some(fg) = foreground {
            for (m, f) in mask.pixels_mut().zip(fg.pixels()) {
                if f[0] == 0 {
                    *m = Luma([0]);
                }
            }
        }
        (change, mask)
    }

    /// The method's defect: an augmented texture or good image, its opacity and a Perlin mask.
    fn blend_defect(
        &self,
        image: &RgbImage,
        others: &[RgbImage],
        rng: &mut impl Rng,
    ) -> (Change, GrayImage) {
        let (w, h) = image.dimensions();
        let use_texture = !self.textures.is_empty()
            && (others.is_empty() || rng.gen_bool(self.config.texture_probability));
        let mut source = if use_texture {
            self.textures[rng.gen_range(0..self.textures.len())].clone()
        } else if !others.is_empty() {
            others[rng.gen_range(0..others.len())].clone()
        } else {
            image.clone()
        };
        if source.dimensions() != (w, h) {
            source = image::imageops::resize(&source, w, h, image::imageops::FilterType::Triangle);
        }
        augment::augment(&mut source, self.config.augmenters, rng);
        let size = w.max(h) as usize;
        let mut mask = perlin::perlin_mask(
            size.next_power_of_two(),
            self.config.perlin_scale_max,
            self.config.perlin_threshold,
            rng,
        );
        if mask.dimensions() != (w, h) {
            mask = image::imageops::crop_imm(&mask, 0, 0, w, h).to_image();
        }
        let beta = self.config.beta_max * rng.gen_range(0.0f32..1.0);
        (Change::Blend { source, beta }, mask)
    }
}

/// A sheet of samples for people to look at: one row per sample with image, mask and the label
/// target map (grey level = label).
pub fn sample_sheet(samples: &[Sample]) -> RgbImage {
    let (w, h) = samples
        .first()
        .map(|s| s.image.dimensions())
        .unwrap_or((1, 1));
    let gap = 4;
    let mut sheet = RgbImage::from_pixel(
        3 * w + 4 * gap,
        samples.len() as u32 * (h + gap) + gap,
        image::Rgb([40, 40, 40]),
    );
    for (i, s) in samples.iter().enumerate() {
        let y = gap + i as u32 * (h + gap);
        image::imageops::replace(&mut sheet, &s.image, gap as i64, y as i64);
        let mask = image::DynamicImage::ImageLuma8(s.mask.clone()).to_rgb8();
        image::imageops::replace(&mut sheet, &mask, (2 * gap + w) as i64, y as i64);
        let target = RgbImage::from_fn(w, h, |x, yy| {
            let v = if s.mask.get_pixel(x, yy)[0] > 0 {
                (s.label * 255.0).round() as u8
            } else {
                0
            };
            image::Rgb([v; 3])
        });
        image::imageops::replace(&mut sheet, &target, (3 * gap + 2 * w) as i64, y as i64);
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn flat(v: u8) -> RgbImage {
        RgbImage::from_pixel(64, 64, image::Rgb([v; 3]))
    }

    #[test]
    fn defects_change_only_masked_pixels_and_labels_follow_the_rule() {
        let mixed = SynthConfig {
            line_probability: 0.3,
            smooth_probability: 0.3,
            ..SynthConfig::default()
        };
        for config in [SynthConfig::default(), mixed] {
            check_masks_and_labels(config);
        }
    }

    fn check_masks_and_labels(config: SynthConfig) {
        let texture = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 255])
        });
        let synth = DefectSynthesizer::new(config, vec![texture]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let img = flat(128);
        let mut defective = 0;
        for _ in 0..30 {
            let s = synth.sample(&img, &[flat(30)], None, true, &mut rng);
            let mut sum = 0.0f64;
            let mut n = 0;
            for ((p, m), o) in s.image.pixels().zip(s.mask.pixels()).zip(img.pixels()) {
                if m[0] == 0 {
                    assert_eq!(p, o, "pixels outside the mask are untouched");
                } else {
                    let d = (0..3)
                        .map(|c| (p[c] as f32 - o[c] as f32) / 255.0 / 3.0)
                        .sum::<f32>();
                    sum += f64::from(sigmoid(5.0 * d.abs()));
                    n += 1;
                }
            }
            if n > 0 {
                defective += 1;
                assert!(
                    (s.label as f64 - sum / n as f64).abs() < 1e-4,
                    "label = mean sigmoid(5|d|)"
                );
                assert!(s.label >= 0.5 && s.label < 1.0);
            } else {
                assert_eq!(s.label, 0.0);
            }
        }
        assert!(
            defective > 10,
            "most forced samples get a defect: {defective}"
        );
    }

    #[test]
    fn every_kind_is_drawn_at_its_rate() {
        let synth = DefectSynthesizer::new(
            SynthConfig {
                line_probability: 0.25,
                smooth_probability: 0.25,
                ..SynthConfig::default()
            },
            vec![],
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut counts = [0usize; 3];
        for _ in 0..2000 {
            counts[synth.pick_kind(&mut rng) as usize] += 1;
        }
        // Blend, Line, Smooth: 50 / 25 / 25 %
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
        assert!((400..600).contains(&counts[1]), "{counts:?}");
        assert!((400..600).contains(&counts[2]), "{counts:?}");
        // lines are thin: a forced line defect covers a small part of a 64 x 64 image
        let lines = DefectSynthesizer::new(
            SynthConfig {
                line_probability: 1.0,
                ..SynthConfig::default()
            },
            vec![],
        );
        let s = lines.sample(&flat(100), &[], None, true, &mut rng);
        let on = s.mask.pixels().filter(|m| m[0] == 255).count();
        assert!(on > 0 && on < 64 * 64 / 4, "{on}");
        assert!(s.label > 0.5);
    }

    #[test]
    fn foreground_restricts_defects_and_probability_zero_keeps_normal() {
        let synth = DefectSynthesizer::new(
            SynthConfig {
                perlin_threshold: -2.0,
                ..SynthConfig::default()
            },
            vec![],
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let fg = GrayImage::from_fn(64, 64, |x, _| Luma([if x < 16 { 255 } else { 0 }]));
        let s = synth.sample(&flat(100), &[flat(250)], Some(&fg), true, &mut rng);
        assert!(
            s.mask
                .enumerate_pixels()
                .all(|(x, _, m)| m[0] == 0 || x < 16)
        );
        assert!(
            s.mask.pixels().any(|m| m[0] == 255),
            "threshold -2 covers the whole foreground"
        );
        let never = DefectSynthesizer::new(
            SynthConfig {
                defect_probability: 0.0,
                ..SynthConfig::default()
            },
            vec![],
        );
        let s = never.sample(&flat(100), &[flat(250)], None, false, &mut rng);
        assert_eq!(s.label, 0.0);
        assert!(s.mask.pixels().all(|m| m[0] == 0));
        let sheet = sample_sheet(&[s.clone(), s]);
        assert_eq!(sheet.dimensions(), (3 * 64 + 16, 2 * 68 + 4));
    }
}
