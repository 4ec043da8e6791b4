//! The synthetic validation set and how a candidate scoring does on it: held-out good images
//! and the same images with synthetic defects, scored by image AUROC, pixel AUROC and AU-PRO.

use super::heads::{HeadOutputs, MapRows, fused, head_outputs, image_scores_of};
use crate::synth::{DefectSynthesizer, Sample};
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
    /// (w_s, validation image AUROC) over the weight grid.
    pub image_auroc: Vec<(f64, f64)>,
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
/// on the defective copies.
pub struct ValidationSet {
    masks: Vec<Vec<bool>>,
    size: usize,
    /// The heads on the defective copies.
    pub defective: HeadOutputs,
}

impl ValidationSet {
    /// Makes one defective copy of every held-out image (`foregrounds` restrict where defects
    /// go; `sources` are in-domain images to blend from) and runs the heads on them.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &ClsFlowModel,
        holdout: &[RgbImage],
        foregrounds: &[Option<GrayImage>],
        sources: &[RgbImage],
        synth: &DefectSynthesizer,
        norm: &Normalization,
        seed: u64,
    ) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ca1b);
        let samples = holdout
            .iter()
            .zip(foregrounds)
            .map(|(img, fg)| synth.sample(img, sources, fg.as_ref(), true, &mut rng));
        Self::of_samples(model, norm, samples)
    }

    /// The defective samples (those with a defect) and the heads on them.
    fn of_samples(
        model: &ClsFlowModel,
        norm: &Normalization,
        samples: impl Iterator<Item = Sample>,
    ) -> Self {
        let (mut defective, mut masks) = (Vec::new(), Vec::new());
        for s in samples.filter(|s| s.label > 0.0) {
            masks.push(s.mask.pixels().map(|p| p[0] > 0).collect::<Vec<bool>>());
            defective.push(s.image);
        }
        ValidationSet {
            masks,
            size: model.config().input_size as usize,
            defective: head_outputs(model, &defective, norm),
        }
    }

    /// Synthetic defects in the set.
    pub fn defects(&self) -> usize {
        self.masks.len()
    }

    /// Image AUROC of flow + w_s x classifier reduced by top fraction `q`, at every w_s.
    pub fn score_reduction(
        &self,
        good: &MapRows,
        bad: &MapRows,
        weights: &[f64],
        q: f64,
    ) -> ScoreCandidate {
        let n = good.flow.len();
        let labels: Vec<bool> = (0..n + bad.flow.len()).map(|i| i >= n).collect();
        let image_auroc = weights
            .iter()
            .map(|&w| {
                let mut scores = image_scores_of(good, w, q);
                scores.extend(image_scores_of(bad, w, q));
                (w, auroc(&scores, &labels).unwrap_or(0.5))
            })
            .collect();
        ScoreCandidate {
            top_fraction: q,
            image_auroc,
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
        };
        let max = val.score_reduction(&good, &bad, &[0.0], 0.0);
        let top = val.score_reduction(&good, &bad, &[0.0], 0.01);
        assert!((max.best() - 0.5).abs() < 1e-9, "{}", max.best());
        assert_eq!(top.best(), 1.0);
    }
}
