//! The synthetic validation set and how a candidate scoring does on it: held-out good images
//! and the same images with synthetic defects, scored by image AUROC, pixel AUROC and AU-PRO.

use super::heads::{HeadOutputs, MapRows, fused, head_outputs, image_scores_of};
use crate::synth::DefectSynthesizer;
use clsflow::metrics::{auroc, map_metrics};
use clsflow::{ClsFlowModel, Normalization};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use serde::Serialize;

/// How one candidate fusion weight did.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Fusion weight.
    pub fusion_weight: f64,
    /// Image AUROC on the synthetic validation set.
    pub image_auroc: f64,
    /// Pixel AUROC.
    pub pixel_auroc: f64,
    /// AU-PRO to FPR 0.3.
    pub au_pro: f64,
    /// Mean of the three.
    pub objective: f64,
}

/// How one image-score reduction did: validation image AUROC of flow + w_s x classifier,
/// reduced to the mean of the top fraction of each map, at every candidate w_s.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreCandidate {
    /// Fraction of the map's pixels averaged (0: the maximum).
    pub top_fraction: f64,
    /// Side of the averaging window before it (0: none).
    #[serde(default)]
    pub pool: u32,
    /// (w_s, validation image AUROC) over the weight grid: what the choice reads, the mean of
    /// the two families' figures below when the faint family is made, else the usual one's.
    pub image_auroc: Vec<(f64, f64)>,
    /// (w_s, image AUROC) on the usual synthetic defects.
    #[serde(default)]
    pub usual_image_auroc: Vec<(f64, f64)>,
    /// (w_s, image AUROC) on the same defects at reduced contrast (empty when not made).
    #[serde(default)]
    pub faint_image_auroc: Vec<(f64, f64)>,
}

impl ScoreCandidate {
    /// Its best validation image AUROC over the grid.
    pub fn best(&self) -> f64 {
        self.image_auroc
            .iter()
            .map(|&(_, a)| a)
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The synthetic validation set: the held-out good images once as they are and once with a
/// synthetic defect each (fixed by the seed), with the defects' masks and the heads' outputs
/// on the defective copies; optionally also the same defects faded to a fraction of their
/// contrast, a family whose image AUROC is not saturated, for the image-level choices.
pub struct ValidationSet {
    masks: Vec<Vec<bool>>,
    size: usize,
    /// The heads on the defective copies.
    pub defective: HeadOutputs,
    /// The heads on the faint copies (None when not made).
    pub faint: Option<HeadOutputs>,
}

/// `defective` faded toward `original`: original + contrast x (defective - original), so the
/// defect keeps its place, shape and kind with a fraction of its change.
pub fn faded(original: &RgbImage, defective: &RgbImage, contrast: f64) -> RgbImage {
    let mut out = defective.clone();
    for (o, &a) in out.iter_mut().zip(original.as_raw()) {
        let (a, d) = (f64::from(a), f64::from(*o));
        *o = (a + contrast * (d - a)).round().clamp(0.0, 255.0) as u8;
    }
    out
}

impl ValidationSet {
    /// Makes one defective copy of every held-out image (`foregrounds` restrict where defects
    /// go; `sources` are in-domain images to blend from) and runs the heads on them; with
    /// `faint_contrast` > 0 also on each copy faded to that fraction of its change.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &ClsFlowModel,
        holdout: &[RgbImage],
        foregrounds: &[Option<GrayImage>],
        sources: &[RgbImage],
        synth: &DefectSynthesizer,
        norm: &Normalization,
        seed: u64,
        faint_contrast: f64,
    ) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ca1b);
        let (mut defective, mut faint, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        for (img, fg) in holdout.iter().zip(foregrounds) {
            let s = synth.sample(img, sources, fg.as_ref(), true, &mut rng);
            if s.label <= 0.0 {
                continue;
            }
            masks.push(s.mask.pixels().map(|p| p[0] > 0).collect::<Vec<bool>>());
            if faint_contrast > 0.0 {
                faint.push(faded(img, &s.image, faint_contrast));
            }
            defective.push(s.image);
        }
        ValidationSet {
            masks,
            size: model.config().input_size as usize,
            defective: head_outputs(model, &defective, norm),
            faint: (faint_contrast > 0.0).then(|| head_outputs(model, &faint, norm)),
        }
    }

    /// Synthetic defects in the set.
    pub fn defects(&self) -> usize {
        self.masks.len()
    }

    /// Image AUROC of flow + w_s x classifier, averaged over `pool` windows and reduced by top
    /// fraction `q`, at every w_s: on the usual defects (`bad`) and, when given, on the faint
    /// ones (`faint`), the choice reading the mean of the two.
    pub fn score_reduction(
        &self,
        good: &MapRows,
        bad: &MapRows,
        faint: Option<&MapRows>,
        weights: &[f64],
        q: f64,
        pool: u32,
    ) -> ScoreCandidate {
        let family = |bad: &MapRows| -> Vec<(f64, f64)> {
            let n = good.flow.len();
            let labels: Vec<bool> = (0..n + bad.flow.len()).map(|i| i >= n).collect();
            weights
                .iter()
                .map(|&w| {
                    let mut scores = image_scores_of(good, self.size, w, q, pool);
                    scores.extend(image_scores_of(bad, self.size, w, q, pool));
                    (w, auroc(&scores, &labels).unwrap_or(0.5))
                })
                .collect()
        };
        let usual = family(bad);
        let faint = faint.map(family).unwrap_or_default();
        let image_auroc = if faint.is_empty() {
            usual.clone()
        } else {
            usual
                .iter()
                .zip(&faint)
                .map(|(&(w, a), &(_, b))| (w, (a + b) / 2.0))
                .collect()
        };
        ScoreCandidate {
            top_fraction: q,
            pool,
            image_auroc,
            usual_image_auroc: usual,
            faint_image_auroc: faint,
        }
    }

    /// Image AUROC, pixel AUROC, AU-PRO and their mean for the fused maps under weight `w`.
    pub fn score(&self, good: &MapRows, bad: &MapRows, w: f64) -> Candidate {
        let (g, b) = (fused(good, w), fused(bad, w));
        let empty = vec![false; self.size * self.size];
        let labels: Vec<bool> = (0..g.len())
            .map(|_| false)
            .chain((0..b.len()).map(|_| true))
            .collect();
        let all_masks: Vec<&[bool]> = (0..g.len())
            .map(|_| empty.as_slice())
            .chain(self.masks.iter().map(Vec::as_slice))
            .collect();
        let maps: Vec<&[f32]> = g.iter().chain(&b).map(Vec::as_slice).collect();
        let (image_auroc, pixel_auroc, pro) =
            map_metrics(&maps, &all_masks, &labels, self.size, self.size, 0.3);
        let (image_auroc, pixel_auroc, au_pro) = (
            image_auroc.unwrap_or(0.5),
            pixel_auroc.unwrap_or(0.5),
            pro.unwrap_or(0.0),
        );
        Candidate {
            fusion_weight: w,
            image_auroc,
            pixel_auroc,
            au_pro,
            objective: (image_auroc + pixel_auroc + au_pro) / 3.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held-out good maps are spiky (one high pixel), defective ones have a broad raised area:
    /// the max ranks some good maps above defective ones, a 1 % top mean does not.
    #[test]
    fn the_validation_image_auroc_uses_the_reduction() {
        let side = 20;
        let n = side * side;
        let map = |spike: f32, area: f32, cells: usize| {
            let mut v = vec![0.0f32; n];
            v[..cells].iter_mut().for_each(|x| *x = area);
            v[n - 1] = spike;
            v
        };
        let good = MapRows {
            flow: vec![map(3.0, 0.0, 0), map(0.5, 0.0, 0)],
            cls: vec![vec![0.0; n]; 2],
        };
        let bad = MapRows {
            flow: vec![map(0.0, 1.0, 40), map(0.0, 2.0, 40)],
            cls: vec![vec![0.0; n]; 2],
        };
        let masks = vec![vec![false; n]; 2];
        let val = ValidationSet {
            masks,
            size: side,
            defective: HeadOutputs {
                log_prob: std::array::from_fn(|_| tch::Tensor::zeros([0], tch::kind::FLOAT_CPU)),
                cls: tch::Tensor::zeros([0], tch::kind::FLOAT_CPU),
            },
            faint: None,
        };
        let max = val.score_reduction(&good, &bad, None, &[0.0], 0.0, 0);
        let top = val.score_reduction(&good, &bad, None, &[0.0], 0.01, 0);
        // a 5-pixel average: the spike's 3 becomes 0.12, below the raised areas' 1 and 2
        let pooled = val.score_reduction(&good, &bad, None, &[0.0], 0.0, 5);
        assert_eq!(pooled.best(), 1.0);
        assert!((max.best() - 0.5).abs() < 1e-9, "{}", max.best());
        assert_eq!(top.best(), 1.0);
        assert!(max.faint_image_auroc.is_empty());
        assert_eq!(max.usual_image_auroc, max.image_auroc);
        // a faint family where the max ranks every defect right: the choice reads the mean
        let faint = MapRows {
            flow: vec![map(0.0, 4.0, 40), map(0.0, 5.0, 40)],
            cls: vec![vec![0.0; n]; 2],
        };
        let both = val.score_reduction(&good, &bad, Some(&faint), &[0.0], 0.0, 0);
        assert_eq!(both.faint_image_auroc, [(0.0, 1.0)]);
        assert!((both.best() - 0.75).abs() < 1e-9, "{}", both.best());
    }

    #[test]
    fn a_faded_defect_keeps_its_place_with_a_fraction_of_its_change() {
        let original = RgbImage::from_pixel(4, 3, image::Rgb([100, 100, 100]));
        let mut defective = original.clone();
        defective.put_pixel(1, 1, image::Rgb([200, 0, 101]));
        assert_eq!(faded(&original, &defective, 0.0), original);
        let third = faded(&original, &defective, 0.3);
        assert_eq!(third.get_pixel(1, 1).0, [130, 70, 100]);
        for (x, y, p) in third.enumerate_pixels() {
            if (x, y) != (1, 1) {
                assert_eq!(p, original.get_pixel(x, y));
            }
        }
    }
}
