//! From network outputs to anomaly maps and image scores (METHOD.md sections 4, 5 and 8).
//!
//! - flow map: per tap t = log p / C; p = exp(t - max over the training set of t), upsampled
//!   bilinearly to the input size and summed over taps (S); inverted as ln(L) - ln(S) with L the
//!   number of taps, so that it grows with anomaly and needs no test-set statistic. METHOD.md
//!   allows any fixed monotone inversion; the paper's max(S) - S saturates in float32 (every
//!   position with all p below ~1e-7 gets the same value, so clearly anomalous images tie), the
//!   logarithm computed in float64 keeps them apart;
//! - classifier map: sigmoid of the decoder logits;
//! - fused map: flow + w * classifier (what is shown and outlined);
//! - image score: max of flow + w_s * classifier. The score has its own weight w_s because the
//!   two uses want different things of the classifier: its maps sharpen the outlines of most
//!   defects (pixel metrics rise with w), while its occasional spikes on good images cost more
//!   at image level than its detections gain (docs/accuracy.md, items 10-15). Both weights and
//!   both thresholds are calibrated without test labels; old checkpoints, which have one weight
//!   and one threshold, use them for both.

use crate::model::ClsFlowModel;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Calibration stored with a model: how maps are scaled, fused and thresholded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredScoring")]
pub struct Scoring {
    /// Per tap, the maximum over the training images of log p / C (the flow maps' reference).
    pub tap_log_prob_max: [f64; 3],
    /// Weight w of the classifier map in the fused map (the map that is shown and outlined).
    pub fusion_weight: f64,
    /// Weight w_s of the classifier map in the image score, max of flow + w_s * classifier.
    pub score_weight: f64,
    /// Image score above which a frame is reported anomalous.
    pub threshold: f64,
    /// Fused-map value above which pixels belong to a defect region.
    pub region_threshold: f64,
}

/// The stored form: checkpoints written before the score had its own weight and threshold
/// have only `fusion_weight` and `threshold`, which then serve both uses, as they did.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredScoring {
    tap_log_prob_max: [f64; 3],
    fusion_weight: f64,
    score_weight: Option<f64>,
    threshold: f64,
    region_threshold: Option<f64>,
}

impl From<StoredScoring> for Scoring {
    fn from(s: StoredScoring) -> Self {
        Scoring {
            tap_log_prob_max: s.tap_log_prob_max,
            fusion_weight: s.fusion_weight,
            score_weight: s.score_weight.unwrap_or(s.fusion_weight),
            threshold: s.threshold,
            region_threshold: s.region_threshold.unwrap_or(s.threshold),
        }
    }
}

impl Scoring {
    /// One weight and one threshold for both uses (the paper's scoring).
    pub fn single(tap_log_prob_max: [f64; 3], fusion_weight: f64, threshold: f64) -> Self {
        Scoring {
            tap_log_prob_max,
            fusion_weight,
            score_weight: fusion_weight,
            threshold,
            region_threshold: threshold,
        }
    }

    /// Whether every weight and threshold is a finite number.
    pub fn is_finite(&self) -> bool {
        [
            self.fusion_weight,
            self.score_weight,
            self.threshold,
            self.region_threshold,
        ]
        .iter()
        .chain(&self.tap_log_prob_max)
        .all(|v| v.is_finite())
    }
}

impl Default for Scoring {
    /// Uncalibrated: reference 0, w = 1, and a threshold of 10 (each tap about e^-10 as likely
    /// as the likeliest training feature); calibration replaces all of them.
    fn default() -> Self {
        Scoring::single([0.0; 3], 1.0, 10.0)
    }
}

/// All maps of a batch at the model's input resolution, on the model's device.
#[derive(Debug)]
pub struct BatchMaps {
    /// Image scores (N): max of flow + w_s * classifier.
    pub scores: Tensor,
    /// Fused map (N, 1, S, S).
    pub fused: Tensor,
    /// Flow (density) map (N, 1, S, S).
    pub flow: Tensor,
    /// Classifier map (N, 1, S, S), defect probability in 0..1.
    pub cls: Tensor,
}

/// Turns per-tap log p / C maps (N, h, w) into the flow anomaly map (N, 1, size, size):
/// ln(L) - ln(sum over taps of upsampled exp(t - max_train t)), in float64 so that nothing
/// saturates; about 0 where every tap is as likely as the likeliest training position.
pub fn flow_map(log_prob_maps: &[Tensor; 3], tap_max: &[f64; 3], size: i64) -> Tensor {
    let mut sum: Option<Tensor> = None;
    for (t, &m) in log_prob_maps.iter().zip(tap_max) {
        let p = (t.to_kind(Kind::Double) - m).exp().unsqueeze(1);
        let up = p.upsample_bilinear2d([size, size], false, None, None);
        sum = Some(match sum {
            Some(s) => s + up,
            None => up,
        });
    }
    let sum = sum.expect("three taps").clamp_min(f64::MIN_POSITIVE);
    ((sum.log() * -1.0) + (log_prob_maps.len() as f64).ln()).to_kind(Kind::Float)
}

/// Fused map: flow + w * classifier.
pub fn fuse(flow: &Tensor, cls: &Tensor, fusion_weight: f64) -> Tensor {
    flow + cls * fusion_weight
}

/// Image scores (N): the maximum of each map (N, 1, H, W).
pub fn image_scores(map: &Tensor) -> Tensor {
    map.flatten(1, -1).amax([1i64].as_slice(), false)
}

/// Resizes maps (N, 1, H, W) to (N, 1, height, width) bilinearly (e.g. to frame size).
pub fn resize_maps(maps: &Tensor, height: i64, width: i64) -> Tensor {
    maps.upsample_bilinear2d([height, width], false, None, None)
}

/// Runs the whole detector on a normalised batch (N, 3, S, S): extractor once, both heads, maps.
pub fn compute_maps(model: &ClsFlowModel, batch: &Tensor, scoring: &Scoring) -> BatchMaps {
    tch::no_grad(|| {
        let taps = model.features(batch);
        let logits = model.cls_logits(&taps, false);
        let logp = model.flow_log_prob_maps(&taps);
        maps_from_heads(&logits, &logp, scoring, model.config().input_size)
    })
}

/// The maps and scores from the two heads' outputs: classifier logits (N, 1, S, S) and per-tap
/// log p / C maps (N, h, w).
pub fn maps_from_heads(
    cls_logits: &Tensor,
    log_prob_maps: &[Tensor; 3],
    scoring: &Scoring,
    size: i64,
) -> BatchMaps {
    let cls = cls_logits.to_kind(Kind::Float).sigmoid();
    let flow = flow_map(log_prob_maps, &scoring.tap_log_prob_max, size);
    let fused = fuse(&flow, &cls, scoring.fusion_weight);
    let scores = if scoring.score_weight == scoring.fusion_weight {
        image_scores(&fused)
    } else {
        image_scores(&fuse(&flow, &cls, scoring.score_weight))
    };
    BatchMaps {
        scores,
        fused,
        flow,
        cls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_checkpoints_use_one_weight_and_threshold_for_both() {
        let old: Scoring = serde_json::from_str(
            r#"{"tap_log_prob_max":[1,2,3],"fusion_weight":4,"threshold":7.5}"#,
        )
        .unwrap();
        assert_eq!(old, Scoring::single([1.0, 2.0, 3.0], 4.0, 7.5));
        let two = Scoring {
            score_weight: 2.0,
            region_threshold: 9.0,
            ..old.clone()
        };
        let text = serde_json::to_string(&two).unwrap();
        assert_eq!(serde_json::from_str::<Scoring>(&text).unwrap(), two);
        let unknown = r#"{"tap_log_prob_max":[1,2,3],"fusion_weight":4,"threshold":7.5,"w":1}"#;
        assert!(serde_json::from_str::<Scoring>(unknown).is_err());
    }

    #[test]
    fn flow_map_is_a_monotone_inversion_that_does_not_saturate() {
        // three taps of 1x1 maps: at the training maximum, far below it, and very far below it
        let t = |v: f64| Tensor::from_slice(&[v as f32]).view([1, 1, 1]);
        let at = |d: f64| flow_map(&[t(d), t(d), t(d)], &[0.0; 3], 1).double_value(&[0, 0, 0, 0]);
        assert!(
            at(0.0).abs() < 1e-6,
            "ln 3 - ln 3 = 0 at the training maximum"
        );
        let (a, b, c) = (at(-20.0), at(-40.0), at(-300.0));
        assert!(
            (a - 20.0).abs() < 1e-3 && (b - 40.0).abs() < 1e-3 && (c - 300.0).abs() < 1e-2,
            "{a} {b} {c}"
        );
        assert!(a < b && b < c, "strongly anomalous positions stay ordered");
    }
}
