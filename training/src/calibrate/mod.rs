//! Label-free calibration (docs/method.md section 8): the fusion weight and the decision threshold
//! come from held-out good training images and synthetic defects made from them, never from
//! test labels.
//!
//! - reference (docs/experiments.md): the per-position reference replaces the paper's global
//!   one only when the flow map alone does clearly better with it (more than `fusion_tolerance`)
//!   on the synthetic validation set below, which does not flatter the flows (they never saw a
//!   defect);
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
//!
//! In three decisions, one module each: [`validation`] (the synthetic validation set),
//! [`weights`] (the flow map's reference and the classifier's weights), [`thresholds`].

mod heads;
pub mod thresholds;
pub mod validation;
pub mod weights;

pub use heads::{HeadOutputs, MapRows, fused, head_outputs};
pub use thresholds::{spread_below, threshold_from_good};
pub use validation::{Candidate, ScoreCandidate, ValidationSet};
pub use weights::{ReferenceCandidate, pick_reduction, pick_reference, pick_weight};

use crate::config::CalibrationConfig;
use crate::synth::DefectSynthesizer;
use clsflow::scoring::Scoring;
use clsflow::{ClsFlowModel, Normalization, TapReferences, TileLayout};
use image::{GrayImage, RgbImage};
use serde::Serialize;

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
    /// Every reference with the flow branch's validation figures (empty
    /// when both are forced).
    pub references: Vec<ReferenceCandidate>,
    /// Held-out good images used.
    pub holdout_images: usize,
    /// Synthetic defective images used.
    pub synthetic_defects: usize,
    /// Held-out good image scores under the chosen score weight.
    pub holdout_scores: Vec<f32>,
    /// The threshold rule in words.
    pub threshold_rule: String,
}

/// What calibration works on.
pub struct CalibrationInput<'a> {
    /// The trained model.
    pub model: &'a ClsFlowModel,
    /// The flows' references from the training features.
    pub references: &'a TapReferences,
    /// Held-out good images (tiles with `resize = "tile"`), never trained on.
    pub holdout: &'a [RgbImage],
    /// How the held-out images were cut into `holdout`'s tiles, per image.
    pub layouts: &'a [TileLayout],
    /// Their foreground masks (where synthetic defects may go).
    pub holdout_foregrounds: &'a [Option<GrayImage>],
    /// In-domain images the synthesiser may blend from.
    pub sources: &'a [RgbImage],
    /// The validation defects' synthesiser.
    pub synth: &'a DefectSynthesizer,
    /// The calibration settings.
    pub config: &'a CalibrationConfig,
    /// The model's input normalisation.
    pub norm: &'a Normalization,
    /// The run's seed (fixes the validation set).
    pub seed: u64,
}

/// Chooses the flow map's reference, the weights and the thresholds.
pub fn calibrate(input: &CalibrationInput) -> Calibration {
    let cfg = input.config;
    let size = input.model.config().input_size as usize;
    let good = head_outputs(input.model, input.holdout, input.norm);
    let needs_validation =
        cfg.fusion_weight.is_none() || weights::allowed_references(cfg).len() > 1;
    let validation = (needs_validation && input.holdout.len() >= 2).then(|| {
        ValidationSet::build(
            input.model,
            input.holdout,
            input.holdout_foregrounds,
            input.sources,
            input.synth,
            input.norm,
            input.seed,
        )
    });
    let choice = weights::choose(&weights::WeightInputs {
        config: cfg,
        references: input.references,
        good: &good,
        validation: validation.as_ref(),
        holdout_images: input.holdout.len(),
        size,
    });
    let t = thresholds::from_held_out(
        &good,
        choice.good_maps,
        &choice.scoring,
        input.layouts,
        size,
        cfg.threshold_sigmas,
    );
    Calibration {
        scoring: Scoring {
            threshold: t.threshold,
            region_threshold: t.region_threshold,
            score_spread: t.score_spread,
            region_spread: t.region_spread,
            ..choice.scoring
        },
        score_reductions: choice.score_reductions,
        score_weight_tolerance: choice.score_weight_tolerance,
        candidates: choice.candidates,
        references: choice.references,
        holdout_images: input.layouts.len(),
        synthetic_defects: validation.as_ref().map_or(0, ValidationSet::defects),
        holdout_scores: t.holdout_scores,
        threshold_rule: format!(
            "max(largest held-out good value, mean + {} std of held-out good values), of image scores for the threshold and of fused-map maxima for the region threshold",
            cfg.threshold_sigmas
        ),
    }
}
