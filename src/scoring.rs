//! From network outputs to anomaly maps and image scores (METHOD.md sections 4, 5 and 8).
//!
//! - flow map: per tap t = log p / C; p = exp(t - max over the training set of t), upsampled
//!   bilinearly to the input size and summed over taps; inverted as (number of taps - sum) so that
//!   it grows with anomaly and needs no test-set statistic;
//! - classifier map: sigmoid of the decoder logits;
//! - fused map: flow + w * classifier; image score: max of the fused map.

use crate::model::ClsFlowModel;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Calibration stored with a model: how maps are scaled, fused and thresholded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// Per tap, the maximum over the training images of log p / C (the flow maps' reference).
    pub tap_log_prob_max: [f64; 3],
    /// Weight w of the classifier map in the fused map.
    pub fusion_weight: f64,
    /// Image score above which a frame is reported anomalous (also the region threshold on the
    /// fused map).
    pub threshold: f64,
}

impl Default for Scoring {
    /// Uncalibrated: reference 0, w = 1, threshold at the maximum a fused map can reach for normal
    /// data (3 taps + w).
    fn default() -> Self {
        Scoring {
            tap_log_prob_max: [0.0; 3],
            fusion_weight: 1.0,
            threshold: 4.0,
        }
    }
}

/// All maps of a batch at the model's input resolution, on the model's device.
#[derive(Debug)]
pub struct BatchMaps {
    /// Image scores (N): max of the fused map.
    pub scores: Tensor,
    /// Fused map (N, 1, S, S).
    pub fused: Tensor,
    /// Flow (density) map (N, 1, S, S).
    pub flow: Tensor,
    /// Classifier map (N, 1, S, S), defect probability in 0..1.
    pub cls: Tensor,
}

/// Turns per-tap log p / C maps (N, h, w) into the flow anomaly map (N, 1, size, size).
pub fn flow_map(log_prob_maps: &[Tensor; 3], tap_max: &[f64; 3], size: i64) -> Tensor {
    let mut sum: Option<Tensor> = None;
    for (t, &m) in log_prob_maps.iter().zip(tap_max) {
        let p = (t.to_kind(Kind::Float) - m).exp().unsqueeze(1);
        let up = p.upsample_bilinear2d([size, size], false, None, None);
        sum = Some(match sum {
            Some(s) => s + up,
            None => up,
        });
    }
    let sum = sum.expect("three taps");
    (sum * -1.0) + log_prob_maps.len() as f64
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
        let cls = model
            .cls_logits(&taps, false)
            .to_kind(Kind::Float)
            .sigmoid();
        let logp = model.flow_log_prob_maps(&taps);
        let flow = flow_map(&logp, &scoring.tap_log_prob_max, model.config().input_size);
        let fused = fuse(&flow, &cls, scoring.fusion_weight);
        BatchMaps {
            scores: image_scores(&fused),
            fused,
            flow,
            cls,
        }
    })
}
