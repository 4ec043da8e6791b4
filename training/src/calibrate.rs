//! Label-free calibration (docs/method.md section 8): the fusion weight and the decision threshold
//! come from held-out good training images and synthetic defects made from them, never from
//! test labels.
//!
//! - tap aggregation (docs/experiments.md): the paper's sum of likelihoods, or the mean or
//!   the largest of the taps' anomalies z-scored on the held-out good images; a variant is taken
//!   only when the flow map alone does clearly better (more than `fusion_tolerance`) on the
//!   synthetic validation set below, which does not flatter the flows (they never saw a defect);
//!   the per-position reference is chosen with it, by the same rule: every
//!   combination of aggregation and reference is scored, and one other than the paper's (sum,
//!   global) needs a gain above `fusion_tolerance`;
//! - weights: image AUROC, pixel AUROC and AU-PRO on the synthetic validation set (held-out good
//!   images + the same images with synthetic defects, made from textures kept out of stage 1
//!   when `holdout_textures` > 0) are computed for every candidate weight. The fused map's weight
//!   is the SMALLEST one within `fusion_tolerance` of the best mean of the three; the image
//!   score's weight the smallest one within one standard error of the best image AUROC
//!   (`score_tolerance_se`, Hanley and McNeil's closed form; at least `fusion_tolerance`),
//!   since the score is judged at image level only (the pixel metrics reward classifier
//!   weight that costs image AUROC on real good images, docs/experiments.md). The image
//!   score is the map's maximum or the mean of its top fraction: each of
//!   `score_top_fractions` is scored by its best validation image AUROC over the weights, and
//!   one other than the first (the paper's max) needs a gain above that same tolerance. The
//!   classifier was trained
//!   on defects from this very synthesiser, so the validation set flatters it: a weight is raised
//!   only when the gain is clear, not for a tie;
//! - thresholds: max(largest held-out good value, mean + k std of held-out good values), k = 3 by
//!   default, over the held-out good images' scores (the verdict) and their fused maps' maxima
//!   (the regions): with zero anomalies in a stream, a good frame is flagged, or gets a region,
//!   only when it goes above every good image seen in calibration. With `resize = "tile"` the
//!   validation set is made of the held-out images' tiles, while the thresholds come from whole
//!   images, their tiles' maps stitched as the detector stitches a frame's.

use crate::config::CalibrationConfig;
use crate::stage2::image_batches;
use crate::synth::DefectSynthesizer;
use clsflow::metrics::{auroc, auroc_standard_error, map_metrics};
use clsflow::scoring::{
    Scoring, centre_taps, combine, flow_map, image_score, image_scores, tap_stats,
};
use clsflow::tiling::{TileLayout, stitch};
use clsflow::{ClsFlowModel, Normalization};
use clsflow::{TapAggregation, TapReference, TapReferences};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

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

/// How the flow branch alone did on the synthetic validation set under one tap aggregation and
/// reference.
#[derive(Debug, Clone, Serialize)]
pub struct AggregationCandidate {
    /// The aggregation.
    pub aggregation: TapAggregation,
    /// The reference.
    pub reference: TapReference,
    /// Its figures (`fusion_weight` 0: the flow map alone).
    pub flow: Candidate,
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

/// Result of calibration.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Scoring to store in the checkpoint.
    pub scoring: Scoring,
    /// Every image-score reduction with its validation image AUROC per score weight (empty when
    /// the weights were fixed).
    pub score_reductions: Vec<ScoreCandidate>,
    /// The gain in validation image AUROC a larger score weight needed: `fusion_tolerance` or
    /// `score_tolerance_se` standard errors of the best AUROC, the larger.
    pub score_weight_tolerance: f64,
    /// Every candidate weight with its validation figures (empty when the weight was fixed).
    pub candidates: Vec<Candidate>,
    /// Every tap aggregation and reference with the flow branch's validation figures (empty
    /// when both are forced).
    pub aggregations: Vec<AggregationCandidate>,
    /// Held-out good images used.
    pub holdout_images: usize,
    /// Synthetic defective images used.
    pub synthetic_defects: usize,
    /// Held-out good image scores under the chosen score weight.
    pub holdout_scores: Vec<f32>,
    /// The threshold rule in words.
    pub threshold_rule: String,
}

/// Flow and classifier maps (per image, row-major) of images.
pub struct BranchMaps {
    /// Flow maps.
    pub flow: Vec<Vec<f32>>,
    /// Classifier maps.
    pub cls: Vec<Vec<f32>>,
}

/// What the two heads give for a set of images, before the taps are combined: per tap log p / C
/// maps (N, h, w) and classifier probability maps (N, 1, S, S), on the CPU.
pub struct HeadOutputs {
    /// Per tap log p / C.
    pub log_prob: [Tensor; 3],
    /// Classifier map (sigmoid of the logits).
    pub cls: Tensor,
}

fn to_rows(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float);
    (0..t.size()[0])
        .map(|i| Vec::<f32>::try_from(t.get(i).flatten(0, -1)).expect("map"))
        .collect()
}

/// Runs the extractor and both heads on images (batches of 16).
pub fn head_outputs(
    model: &ClsFlowModel,
    images: &[RgbImage],
    norm: &Normalization,
) -> HeadOutputs {
    let (mut logp, mut cls): ([Vec<Tensor>; 3], Vec<Tensor>) = Default::default();
    tch::no_grad(|| {
        for x in image_batches(images, 16, norm) {
            let taps = model.features(&x.to_device(model.device()));
            cls.push(
                model
                    .cls_logits(&taps, false)
                    .to_kind(Kind::Float)
                    .sigmoid()
                    .to_device(Device::Cpu),
            );
            for (p, t) in logp.iter_mut().zip(model.flow_log_prob_maps(&taps)) {
                p.push(t.to_kind(Kind::Float).to_device(Device::Cpu));
            }
        }
    });
    HeadOutputs {
        log_prob: logp.map(|p| Tensor::cat(&p, 0)),
        cls: Tensor::cat(&cls, 0),
    }
}

impl HeadOutputs {
    /// Both branch maps under a scoring's tap aggregation (its weights are not used).
    pub fn maps(&self, scoring: &Scoring, size: i64) -> BranchMaps {
        let flow = tch::no_grad(|| flow_map(&self.log_prob, scoring, size));
        BranchMaps {
            flow: to_rows(&flow),
            cls: to_rows(&self.cls),
        }
    }
}

/// Both branch maps of images at model resolution, with the paper's tap aggregation.
pub fn branch_maps(
    model: &ClsFlowModel,
    images: &[RgbImage],
    tap_max: [f64; 3],
    norm: &Normalization,
) -> BranchMaps {
    let size = model.config().input_size;
    head_outputs(model, images, norm).maps(&Scoring::single(tap_max, 0.0, 0.0), size)
}

/// Flow + w x classifier, map by map.
pub fn fused(maps: &BranchMaps, w: f64) -> Vec<Vec<f32>> {
    maps.flow
        .iter()
        .zip(&maps.cls)
        .map(|(f, c)| f.iter().zip(c).map(|(a, b)| a + w as f32 * b).collect())
        .collect()
}

/// Image scores of fused maps under weight `w`, each the mean of its top fraction `q`.
fn image_scores_of(maps: &BranchMaps, w: f64, q: f64) -> Vec<f32> {
    fused(maps, w).iter().map(|m| image_score(m, q)).collect()
}

/// The synthetic validation set: good images (no defect pixels) and defective ones with masks.
struct Validation<'a> {
    masks: &'a [Vec<bool>],
    size: usize,
}

impl Validation<'_> {
    /// Image AUROC of flow + w_s x classifier reduced by top fraction `q`, at every w_s.
    fn score_reduction(
        &self,
        good: &BranchMaps,
        bad: &BranchMaps,
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
    fn score(&self, good: &BranchMaps, bad: &BranchMaps, w: f64) -> Candidate {
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

/// Items 22 and 24's rule: the first candidate (the paper's sum with the global reference,
/// where it is a candidate) is replaced only by one whose flow objective exceeds it by more than
/// `tolerance`; of several, the best. Returns the chosen candidate's index.
pub fn pick_aggregation(candidates: &[AggregationCandidate], tolerance: f64) -> usize {
    let Some(first) = candidates.first() else {
        return 0;
    };
    let bar = first.flow.objective + tolerance;
    candidates
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, c)| c.flow.objective > bar)
        .max_by(|a, b| a.1.flow.objective.total_cmp(&b.1.flow.objective))
        .map_or(0, |(i, _)| i)
}

/// Item 25's rule: the first reduction (the paper's max, where it is a candidate) is replaced
/// only by one whose best validation image AUROC exceeds it by more than `tolerance`; of
/// several, the best. Returns the chosen candidate's index.
pub fn pick_reduction(candidates: &[ScoreCandidate], tolerance: f64) -> usize {
    let Some(first) = candidates.first() else {
        return 0;
    };
    let bar = first.best() + tolerance;
    candidates
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, c)| c.best() > bar)
        .max_by(|a, b| a.1.best().total_cmp(&b.1.best()))
        .map_or(0, |(i, _)| i)
}

/// Every (aggregation, reference) pair the settings allow, the paper's first: a forced value
/// allows only itself, and a fixed fusion weight (made for the paper's map) forces both.
fn allowed_combinations(cfg: &CalibrationConfig) -> Vec<(TapAggregation, TapReference)> {
    let paper = cfg.fusion_weight.is_some();
    let aggs: Vec<TapAggregation> = match cfg.tap_aggregation.forced() {
        Some(a) => vec![a],
        None if paper => vec![TapAggregation::Sum],
        None => TapAggregation::ALL.to_vec(),
    };
    let refs: Vec<TapReference> = match cfg.tap_reference.forced() {
        Some(r) => vec![r],
        None if paper => vec![TapReference::Global],
        None => TapReference::ALL.to_vec(),
    };
    refs.iter()
        .flat_map(|&r| aggs.iter().map(move |&a| (a, r)))
        .collect()
}

/// The scoring (references, tap scales, aggregation; no weights yet) of one combination.
fn base_scoring(
    refs: &TapReferences,
    good: &HeadOutputs,
    aggregation: TapAggregation,
    reference: TapReference,
) -> Scoring {
    let (tap_max, tap_offsets) = refs.for_reference(reference);
    let good_maps = centre_taps(&good.log_prob, &tap_offsets);
    Scoring {
        tap_aggregation: aggregation,
        tap_stats: tap_stats(&good_maps, &tap_max),
        tap_offsets,
        ..Scoring::single(tap_max, 0.0, 0.0)
    }
}

/// Chooses the tap aggregation, the weights and the thresholds.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model: &ClsFlowModel,
    refs: &TapReferences,
    holdout: &[RgbImage],
    layouts: &[TileLayout],
    holdout_fg: &[Option<GrayImage>],
    others: &[RgbImage],
    synth: &DefectSynthesizer,
    cfg: &CalibrationConfig,
    norm: &Normalization,
    seed: u64,
) -> Calibration {
    let size = model.config().input_size as usize;
    let good_out = head_outputs(model, holdout, norm);
    let combinations = allowed_combinations(cfg);
    let (agg0, ref0) = combinations[0];
    let scorings: Vec<Scoring> = combinations
        .iter()
        .map(|&(a, r)| base_scoring(refs, &good_out, a, r))
        .collect();
    let mut scoring = scorings[0].clone();
    let choose_combination = combinations.len() > 1;
    let mut candidates = Vec::new();
    let mut score_reductions = Vec::new();
    let mut aggregations = Vec::new();
    let mut synthetic_defects = 0;
    let choose_weights = cfg.fusion_weight.is_none();
    // the held-out good maps under the chosen combination, once it is known
    let mut good = None;
    if (choose_weights || choose_combination) && holdout.len() >= 2 {
        // the fixed synthetic validation set: every held-out image once with a defect
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ca1b);
        let mut defective = Vec::new();
        let mut masks = Vec::new();
        for (img, fg) in holdout.iter().zip(holdout_fg) {
            let s = synth.sample(img, others, fg.as_ref(), true, &mut rng);
            if s.label > 0.0 {
                masks.push(s.mask.pixels().map(|p| p[0] > 0).collect::<Vec<bool>>());
                defective.push(s.image);
            }
        }
        synthetic_defects = defective.len();
        let val = Validation {
            masks: &masks,
            size,
        };
        let bad_out = head_outputs(model, &defective, norm);
        if choose_combination {
            for (s, &(aggregation, reference)) in scorings.iter().zip(&combinations) {
                let (g, b) = (good_out.maps(s, size as i64), bad_out.maps(s, size as i64));
                aggregations.push(AggregationCandidate {
                    aggregation,
                    reference,
                    flow: val.score(&g, &b, 0.0),
                });
            }
            scoring = scorings[pick_aggregation(&aggregations, cfg.fusion_tolerance)].clone();
        }
        if choose_weights {
            let (g, b) = (
                good_out.maps(&scoring, size as i64),
                bad_out.maps(&scoring, size as i64),
            );
            candidates = cfg
                .fusion_weights
                .iter()
                .map(|&w| val.score(&g, &b, w))
                .collect();
            let score_weights = cfg
                .score_weight
                .map_or_else(|| cfg.fusion_weights.clone(), |w| vec![w]);
            score_reductions = cfg
                .score_top_fractions
                .iter()
                .map(|&q| val.score_reduction(&g, &b, &score_weights, q))
                .collect();
            good = Some(g);
        }
    } else if choose_weights || choose_combination {
        eprintln!(
            "warning: fewer than 2 held-out images: fusion weights left at 1.0, taps combined by {} with the {} reference (raise holdout_fraction)",
            agg0.name(),
            ref0.name()
        );
    }
    let fusion_weight = cfg
        .fusion_weight
        .or_else(|| pick_weight(&candidates, cfg.fusion_tolerance, |c| c.objective))
        .unwrap_or(1.0);
    // the image score's reduction, then its weight under that reduction, each needing a gain
    // above one standard error of the validation image AUROC
    let score_tolerance = |best: f64| {
        let se = auroc_standard_error(best, synthetic_defects, holdout.len()).unwrap_or(0.0);
        cfg.fusion_tolerance.max(cfg.score_tolerance_se * se)
    };
    let best_score = score_reductions
        .iter()
        .map(ScoreCandidate::best)
        .fold(f64::NEG_INFINITY, f64::max);
    let reduction = score_reductions
        .get(pick_reduction(
            &score_reductions,
            score_tolerance(best_score),
        ))
        .cloned();
    let score_weight_tolerance = reduction
        .as_ref()
        .map_or(cfg.fusion_tolerance, |r| score_tolerance(r.best()));
    let score_top_fraction = reduction.as_ref().map_or_else(
        || cfg.score_top_fractions.first().copied().unwrap_or(0.0),
        |r| r.top_fraction,
    );
    let score_weight = cfg
        .score_weight
        .or(cfg.fusion_weight)
        .or_else(|| {
            let r = reduction.as_ref()?;
            pick_weight_by(&r.image_auroc, score_weight_tolerance)
        })
        .unwrap_or(fusion_weight);
    let scoring = Scoring {
        fusion_weight,
        score_weight,
        score_top_fraction,
        ..scoring
    };
    // the held-out images scored as the detector scores frames: tiles stitched first
    let (scores, fused_maxima) = if layouts.iter().any(|l| l.tiles() > 1) {
        stitched_scores(&good_out, &scoring, layouts, size as i64)
    } else {
        let good = good.unwrap_or_else(|| good_out.maps(&scoring, size as i64));
        (
            image_scores_of(&good, score_weight, score_top_fraction),
            image_scores_of(&good, fusion_weight, 0.0),
        )
    };
    let threshold = threshold_from_good(&scores, cfg.threshold_sigmas);
    let region_threshold = threshold_from_good(&fused_maxima, cfg.threshold_sigmas);
    Calibration {
        scoring: Scoring {
            threshold,
            region_threshold,
            score_spread: spread_below(threshold, &scores),
            region_spread: spread_below(region_threshold, &fused_maxima),
            ..scoring
        },
        score_reductions,
        score_weight_tolerance,
        candidates,
        aggregations,
        holdout_images: layouts.len(),
        synthetic_defects,
        holdout_scores: scores,
        threshold_rule: format!(
            "max(largest held-out good value, mean + {} std of held-out good values), of image scores for the threshold and of fused-map maxima for the region threshold",
            cfg.threshold_sigmas
        ),
    }
}

/// Image scores and fused-map maxima of images whose tiles' head outputs are `out`, laid out as
/// `layouts` (in order): each image's branch maps stitched, then fused and scored by `scoring`.
fn stitched_scores(
    out: &HeadOutputs,
    scoring: &Scoring,
    layouts: &[TileLayout],
    size: i64,
) -> (Vec<f32>, Vec<f32>) {
    tch::no_grad(|| {
        let flow = flow_map(&out.log_prob, scoring, size);
        let (mut scores, mut maxima) = (Vec::new(), Vec::new());
        let mut start = 0;
        for layout in layouts {
            let t = layout.tiles() as i64;
            let stitch = |m: &Tensor| stitch(&m.narrow(0, start, t), layout).expect("tile maps");
            let maps = combine(stitch(&flow), stitch(&out.cls), scoring);
            scores.push(maps.scores.double_value(&[0]) as f32);
            maxima.push(image_scores(&maps.fused, 0.0).double_value(&[0]) as f32);
            start += t;
        }
        (scores, maxima)
    })
}

/// The smallest candidate weight whose `metric` is within `tolerance` of the best one.
pub fn pick_weight(
    candidates: &[Candidate],
    tolerance: f64,
    metric: impl Fn(&Candidate) -> f64,
) -> Option<f64> {
    let scored: Vec<(f64, f64)> = candidates
        .iter()
        .map(|c| (c.fusion_weight, metric(c)))
        .collect();
    pick_weight_by(&scored, tolerance)
}

/// The smallest weight of (weight, figure) pairs whose figure is within `tolerance` of the best.
fn pick_weight_by(scored: &[(f64, f64)], tolerance: f64) -> Option<f64> {
    let best = scored
        .iter()
        .map(|&(_, m)| m)
        .fold(f64::NEG_INFINITY, f64::max);
    scored
        .iter()
        .filter(|&&(_, m)| m >= best - tolerance)
        .map(|&(w, _)| w)
        .min_by(f64::total_cmp)
}

/// How far `threshold` lies above the median of the good values (the unit of the normalised
/// scores); a small positive floor where every good value sits at the threshold.
pub fn spread_below(threshold: f64, good: &[f32]) -> f64 {
    let mut v: Vec<f32> = good.to_vec();
    v.sort_by(f32::total_cmp);
    let median = v.get(v.len() / 2).map_or(threshold, |&m| f64::from(m));
    (threshold - median).max(1e-6 * threshold.abs().max(1.0))
}

/// The threshold rule: max(max, mean + k std) of good scores; for no scores at all, +inf is
/// not storable, so the caller must provide at least one good image.
pub fn threshold_from_good(scores: &[f32], sigmas: f64) -> f64 {
    assert!(
        !scores.is_empty(),
        "threshold needs at least one good score"
    );
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let var = scores
        .iter()
        .map(|&s| (f64::from(s) - mean).powi(2))
        .sum::<f64>()
        / n;
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max.max(mean + sigmas * var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(objectives: &[(f64, f64)]) -> Vec<Candidate> {
        objectives
            .iter()
            .map(|&(w, o)| Candidate {
                fusion_weight: w,
                image_auroc: o,
                pixel_auroc: o,
                au_pro: o,
                objective: o,
            })
            .collect()
    }

    #[test]
    fn fusion_weight_rises_only_for_a_clear_gain() {
        let pick = |c: &[Candidate], tol| pick_weight(c, tol, |c| c.objective);
        // a flat objective (a classifier that adds nothing visible): the smallest weight
        let flat = candidates(&[(0.05, 0.8407), (0.3, 0.8406), (2.0, 0.8412), (8.0, 0.8156)]);
        assert_eq!(pick(&flat, 0.005), Some(0.05));
        // a clear gain: the best weight, also when it is the largest
        let rising = candidates(&[(0.05, 0.848), (1.0, 0.860), (4.0, 0.881), (8.0, 0.895)]);
        assert_eq!(pick(&rising, 0.005), Some(8.0));
        // tolerance 0: the plain arg max
        assert_eq!(pick(&flat, 0.0), Some(2.0));
        assert_eq!(pick(&[], 0.005), None);
    }

    #[test]
    fn the_score_weight_follows_the_image_auroc_alone() {
        // pixel metrics climb with the weight while image AUROC peaks early (runs I-K)
        let mut c = candidates(&[
            (0.05, 0.86),
            (1.0, 0.88),
            (2.0, 0.90),
            (4.0, 0.92),
            (8.0, 0.94),
        ]);
        for (cand, img) in c.iter_mut().zip([0.970, 0.980, 0.984, 0.981, 0.975]) {
            cand.image_auroc = img;
        }
        assert_eq!(pick_weight(&c, 0.005, |c| c.objective), Some(8.0));
        assert_eq!(pick_weight(&c, 0.005, |c| c.image_auroc), Some(1.0));
        assert_eq!(pick_weight(&c, 0.0, |c| c.image_auroc), Some(2.0));
    }

    #[test]
    fn one_standard_error_keeps_the_smaller_score_weight() {
        // one training run's validation image AUROCs (76 good images, 70 synthetic defects) at w_s =
        // 0.6 ... 8: 0.005 takes 2 for a gain of 0.006, about two thirds of a standard error
        let scored = [
            (0.6, 0.97274),
            (1.0, 0.98045),
            (2.0, 0.98684),
            (4.0, 0.98797),
            (8.0, 0.98571),
        ];
        let se = auroc_standard_error(0.98797, 70, 76).unwrap();
        assert!((0.009..0.0097).contains(&se), "{se}");
        assert_eq!(pick_weight_by(&scored, 0.005), Some(2.0));
        assert_eq!(pick_weight_by(&scored, se), Some(1.0));
    }

    #[test]
    fn a_top_fraction_replaces_the_max_only_for_a_clear_gain() {
        let cand = |q: f64, aurocs: &[f64]| ScoreCandidate {
            top_fraction: q,
            image_auroc: [1.0, 2.0, 4.0]
                .into_iter()
                .zip(aurocs.iter().copied())
                .collect(),
        };
        // 0.001 is 0.004 better at its best weight: a tie, the max stays
        let mut c = vec![
            cand(0.0, &[0.970, 0.980, 0.975]),
            cand(0.001, &[0.984, 0.980, 0.970]),
        ];
        assert_eq!(pick_reduction(&c, 0.005), 0);
        // of two clear gains the larger wins; its weight is then picked on its own row
        c.push(cand(0.01, &[0.990, 0.992, 0.980]));
        c[1] = cand(0.001, &[0.987, 0.980, 0.970]);
        assert_eq!(pick_reduction(&c, 0.005), 2);
        assert_eq!(pick_weight_by(&c[2].image_auroc, 0.005), Some(1.0));
        assert_eq!(pick_weight_by(&c[2].image_auroc, 0.001), Some(2.0));
        assert_eq!(pick_reduction(&[], 0.005), 0);
    }

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
        let good = BranchMaps {
            flow: vec![map(3.0, 0.0, 0), map(0.5, 0.0, 0)],
            cls: vec![vec![0.0; n]; 2],
        };
        let bad = BranchMaps {
            flow: vec![map(0.0, 1.0, 40), map(0.0, 2.0, 40)],
            cls: vec![vec![0.0; n]; 2],
        };
        let masks = vec![vec![false; n]; 2];
        let val = Validation {
            masks: &masks,
            size: side,
        };
        let max = val.score_reduction(&good, &bad, &[0.0], 0.0);
        let top = val.score_reduction(&good, &bad, &[0.0], 0.01);
        assert!((max.best() - 0.5).abs() < 1e-9, "{}", max.best());
        assert_eq!(top.best(), 1.0);
    }

    #[test]
    fn a_tap_aggregation_replaces_the_sum_only_for_a_clear_gain() {
        // the candidates in allowed_combinations' order: sum, mean, max with the global
        // reference, then the same with the per-position one
        let agg = |objectives: &[f64]| -> Vec<AggregationCandidate> {
            let combos = allowed_combinations(&CalibrationConfig::default());
            combos
                .iter()
                .zip(candidates(
                    &objectives.iter().map(|&o| (0.0, o)).collect::<Vec<_>>(),
                ))
                .map(|(&(aggregation, reference), flow)| AggregationCandidate {
                    aggregation,
                    reference,
                    flow,
                })
                .collect()
        };
        let pick = |o: &[f64], tol| {
            let c = agg(o);
            let i = pick_aggregation(&c, tol);
            (c[i].aggregation, c[i].reference)
        };
        use TapAggregation::{Max, Mean, Sum};
        use TapReference::{Global, Position};
        assert_eq!(
            pick(&[0.90, 0.904, 0.903, 0.9049, 0.90, 0.90], 0.005),
            (Sum, Global)
        );
        assert_eq!(pick(&[0.90, 0.91, 0.93, 0.90], 0.005), (Max, Global));
        assert_eq!(pick(&[0.90, 0.92, 0.89], 0.005), (Mean, Global));
        assert_eq!(
            pick(&[0.90, 0.91, 0.89, 0.915, 0.92, 0.80], 0.005),
            (Mean, Position)
        );
        assert_eq!(pick(&[0.95, 0.92, 0.89, 0.94], 0.0), (Sum, Global));
        assert_eq!(pick_aggregation(&[], 0.005), 0);
    }

    #[test]
    fn forced_settings_and_fixed_weights_narrow_the_combinations() {
        let all = allowed_combinations(&CalibrationConfig::default());
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], (TapAggregation::Sum, TapReference::Global));
        let paper = CalibrationConfig {
            fusion_weight: Some(0.3),
            ..Default::default()
        };
        assert_eq!(
            allowed_combinations(&paper),
            [(TapAggregation::Sum, TapReference::Global)]
        );
        let forced = CalibrationConfig {
            tap_reference: crate::config::ReferenceChoice::Position,
            ..paper
        };
        assert_eq!(
            allowed_combinations(&forced),
            [(TapAggregation::Sum, TapReference::Position)]
        );
        let one_free = CalibrationConfig {
            tap_aggregation: crate::config::AggregationChoice::Max,
            ..Default::default()
        };
        assert_eq!(
            allowed_combinations(&one_free),
            [
                (TapAggregation::Max, TapReference::Global),
                (TapAggregation::Max, TapReference::Position)
            ]
        );
    }

    #[test]
    fn threshold_rule() {
        // mean 2, std 1 -> mean + 3 std = 5 > max 3
        assert!((super::threshold_from_good(&[1.0, 3.0, 1.0, 3.0], 3.0) - 5.0).abs() < 1e-9);
        // one outlier: the max wins when k is small
        assert!((super::threshold_from_good(&[1.0, 1.0, 1.0, 9.0], 0.5) - 9.0).abs() < 1e-9);
        assert!((super::threshold_from_good(&[2.0], 3.0) - 2.0).abs() < 1e-9);
    }
}
