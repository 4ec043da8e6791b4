//! The label-free choice of the flow map's reference (global or per position) and of the
//! classifier's two weights (fused map, image score) with the image score's reduction. Every
//! rule keeps the paper's choice, or the smaller weight, unless another is clearly better on
//! the validation set: the set is synthetic and flatters the classifier, so ties go to the
//! simpler scoring.

use super::heads::{HeadOutputs, MapRows};
use super::validation::{Candidate, ScoreCandidate, ValidationSet};
use crate::config::CalibrationConfig;
use clsflow::metrics::auroc_standard_error;
use clsflow::scoring::Scoring;
use clsflow::{TapReference, TapReferences};
use serde::Serialize;

/// How the flow branch alone did on the synthetic validation set under one reference.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceCandidate {
    /// The reference.
    pub reference: TapReference,
    /// Its figures (`fusion_weight` 0: the flow map alone).
    pub flow: Candidate,
}

/// What the choice settled on, with the figures behind it.
pub struct WeightChoice {
    /// References, both weights and the score's reduction (thresholds not yet).
    pub scoring: Scoring,
    /// Every candidate fusion weight with its validation figures (empty when fixed).
    pub candidates: Vec<Candidate>,
    /// Every reference with the flow branch's validation figures (empty when forced).
    pub references: Vec<ReferenceCandidate>,
    /// Every image-score reduction with its validation image AUROC per weight.
    pub score_reductions: Vec<ScoreCandidate>,
    /// The gain in validation image AUROC a larger score weight needed.
    pub score_weight_tolerance: f64,
    /// The held-out good images' branch maps under the chosen reference, when computed.
    pub good_maps: Option<MapRows>,
}

/// What the choice looks at.
pub struct WeightInputs<'a> {
    /// The calibration settings.
    pub config: &'a CalibrationConfig,
    /// The flows' references from the training features.
    pub references: &'a TapReferences,
    /// The heads on the held-out good images.
    pub good: &'a HeadOutputs,
    /// The synthetic validation set; None when there are too few held-out images.
    pub validation: Option<&'a ValidationSet>,
    /// Held-out good images (for the standard error of the validation AUROC).
    pub holdout_images: usize,
    /// Side of the maps.
    pub size: usize,
}

/// Chooses the reference, then the fusion weight, then the score's reduction and weight.
pub fn choose(inputs: &WeightInputs) -> WeightChoice {
    let cfg = inputs.config;
    let size = inputs.size as i64;
    let references = allowed_references(cfg);
    let scorings: Vec<Scoring> = references
        .iter()
        .map(|&r| base_scoring(inputs.references, r))
        .collect();
    let mut choice = WeightChoice {
        scoring: scorings[0].clone(),
        candidates: Vec::new(),
        references: Vec::new(),
        score_reductions: Vec::new(),
        score_weight_tolerance: cfg.fusion_tolerance,
        good_maps: None,
    };
    let choose_reference = references.len() > 1;
    let choose_weights = cfg.fusion_weight.is_none();
    match inputs.validation {
        Some(val) if choose_weights || choose_reference => {
            let bad = &val.defective;
            if choose_reference {
                for (s, &reference) in scorings.iter().zip(&references) {
                    let (g, b) = (inputs.good.maps(s, size), bad.maps(s, size));
                    choice.references.push(ReferenceCandidate {
                        reference,
                        flow: val.score(&g, &b, 0.0),
                    });
                }
                let i = pick_reference(&choice.references, cfg.fusion_tolerance);
                choice.scoring = scorings[i].clone();
            }
            if choose_weights {
                let (g, b) = (
                    inputs.good.maps(&choice.scoring, size),
                    bad.maps(&choice.scoring, size),
                );
                choice.candidates = cfg
                    .fusion_weights
                    .iter()
                    .map(|&w| val.score(&g, &b, w))
                    .collect();
                let score_weights = cfg
                    .score_weight
                    .map_or_else(|| cfg.fusion_weights.clone(), |w| vec![w]);
                choice.score_reductions = cfg
                    .score_top_fractions
                    .iter()
                    .map(|&q| val.score_reduction(&g, &b, &score_weights, q))
                    .collect();
                choice.good_maps = Some(g);
            }
        }
        None if choose_weights || choose_reference => {
            eprintln!(
                "warning: fewer than 2 held-out images: fusion weights left at 1.0, the flow map with the {} reference (raise holdout_fraction)",
                references[0].name()
            );
        }
        _ => {}
    }
    let defects = inputs.validation.map_or(0, ValidationSet::defects);
    let fusion_weight = cfg
        .fusion_weight
        .or_else(|| pick_weight(&choice.candidates, cfg.fusion_tolerance, |c| c.objective))
        .unwrap_or(1.0);
    // the image score's reduction, then its weight under that reduction, each needing a gain
    // above one standard error of the validation image AUROC
    let score_tolerance = |best: f64| {
        let se = auroc_standard_error(best, defects, inputs.holdout_images).unwrap_or(0.0);
        cfg.fusion_tolerance.max(cfg.score_tolerance_se * se)
    };
    let best_score = choice
        .score_reductions
        .iter()
        .map(ScoreCandidate::best)
        .fold(f64::NEG_INFINITY, f64::max);
    let reduction = choice
        .score_reductions
        .get(pick_reduction(
            &choice.score_reductions,
            score_tolerance(best_score),
        ))
        .cloned();
    choice.score_weight_tolerance = reduction
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
            pick_weight_by(
                &reduction.as_ref()?.image_auroc,
                choice.score_weight_tolerance,
            )
        })
        .unwrap_or(fusion_weight);
    choice.scoring = Scoring {
        fusion_weight,
        score_weight,
        score_top_fraction,
        ..choice.scoring
    };
    choice
}

/// The reference rule: the first candidate (the paper's global reference, where it is a
/// candidate) is replaced only by one whose flow objective exceeds it by more than `tolerance`.
/// Returns the chosen candidate's index.
pub fn pick_reference(candidates: &[ReferenceCandidate], tolerance: f64) -> usize {
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

/// The reduction rule: the first reduction (the paper's max, where it is a candidate) is replaced
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

/// Every reference the settings allow, the paper's first: a forced value allows only itself,
/// and a fixed fusion weight (made for the paper's map) forces the paper's.
pub(super) fn allowed_references(cfg: &CalibrationConfig) -> Vec<TapReference> {
    match cfg.tap_reference.forced() {
        Some(r) => vec![r],
        None if cfg.fusion_weight.is_some() => vec![TapReference::Global],
        None => TapReference::ALL.to_vec(),
    }
}

/// The scoring (references only; no weights yet) of one reference.
fn base_scoring(refs: &TapReferences, reference: TapReference) -> Scoring {
    let (tap_max, tap_offsets) = refs.for_reference(reference);
    Scoring {
        tap_offsets,
        ..Scoring::single(tap_max, 0.0, 0.0)
    }
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
pub fn pick_weight_by(scored: &[(f64, f64)], tolerance: f64) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clsflow::metrics::auroc_standard_error;

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

    #[test]
    fn the_position_reference_replaces_the_global_one_only_for_a_clear_gain() {
        let pick = |objectives: [f64; 2], tol| {
            let c: Vec<ReferenceCandidate> = allowed_references(&CalibrationConfig::default())
                .into_iter()
                .zip(candidates(&objectives.map(|o| (0.0, o))))
                .map(|(reference, flow)| ReferenceCandidate { reference, flow })
                .collect();
            c[pick_reference(&c, tol)].reference
        };
        assert_eq!(pick([0.90, 0.9049], 0.005), TapReference::Global);
        assert_eq!(pick([0.90, 0.906], 0.005), TapReference::Position);
        assert_eq!(pick([0.95, 0.94], 0.0), TapReference::Global);
        assert_eq!(pick_reference(&[], 0.005), 0);
    }

    #[test]
    fn forced_settings_and_fixed_weights_narrow_the_references() {
        let all = allowed_references(&CalibrationConfig::default());
        assert_eq!(all, [TapReference::Global, TapReference::Position]);
        let paper = CalibrationConfig {
            fusion_weight: Some(0.3),
            ..Default::default()
        };
        assert_eq!(allowed_references(&paper), [TapReference::Global]);
        let forced = CalibrationConfig {
            tap_reference: crate::config::ReferenceChoice::Position,
            ..paper
        };
        assert_eq!(allowed_references(&forced), [TapReference::Position]);
    }
}
