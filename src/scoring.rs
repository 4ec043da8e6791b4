//! From network outputs to anomaly maps and image scores (docs/method.md sections 4, 5 and 8).
//!
//! - flow map: per tap t = log p / C; p = exp(t - max over the training set of t), upsampled
//!   bilinearly to the input size and summed over taps (S); inverted as ln(L) - ln(S) with L the
//!   number of taps, so that it grows with anomaly and needs no test-set statistic. docs/method.md
//!   allows any fixed monotone inversion; the paper's max(S) - S saturates in float32 (every
//!   position with all p below ~1e-7 gets the same value, so clearly anomalous images tie), the
//!   logarithm computed in float64 keeps them apart;
//!   with the per-position reference ([`TapReference::Position`]) every tap's map is first
//!   centred position by position (the training images' mean log p / C at the position minus
//!   their mean over all positions is subtracted), so that positions whose normal features are
//!   merely less predictable (borders, irregular regions) do not look anomalous;
//! - classifier map: sigmoid of the decoder logits;
//! - fused map: flow + w * classifier (what is shown and outlined);
//! - image score: max of flow + w_s * classifier. The score has its own weight w_s because the
//!   two uses want different things of the classifier: its maps sharpen the outlines of most
//!   defects (pixel metrics rise with w), while its occasional spikes on good images cost more
//!   at image level than its detections gain (docs/experiments.md). Both weights and
//!   both thresholds are calibrated without test labels; old checkpoints, which have one weight
//!   and one threshold, use them for both. Instead of the max, the score can be the mean of the
//!   map's largest values, a fraction q of its pixels (`score_top_fraction`), which
//!   averages single-pixel spikes away; old checkpoints use the max.

use crate::model::ClsFlowModel;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// What each position's log p / C is compared with before the taps are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapReference {
    /// The paper's: one reference per tap, the same for every position.
    #[default]
    Global,
    /// Every position first centred on the training images' mean at that position.
    Position,
}

impl TapReference {
    /// Both references, the paper's first.
    pub const ALL: [TapReference; 2] = [TapReference::Global, TapReference::Position];

    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            TapReference::Global => "global",
            TapReference::Position => "position",
        }
    }
}

/// Calibration stored with a model: how maps are scaled, fused and thresholded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredScoring")]
pub struct Scoring {
    /// Per tap, the maximum over the training images of log p / C (the flow maps' reference).
    pub tap_log_prob_max: [f64; 3],
    /// Per tap, row-major offsets (one per position of its map) subtracted from log p / C
    /// before the taps are combined: the per-position reference. Empty: the paper's global one.
    pub tap_offsets: [Vec<f32>; 3],
    /// Weight w of the classifier map in the fused map (the map that is shown and outlined).
    pub fusion_weight: f64,
    /// Weight w_s of the classifier map in the image score, max (or mean of the top fraction)
    /// of flow + w_s * classifier.
    pub score_weight: f64,
    /// Fraction q of a map's pixels whose largest values are averaged into the image score;
    /// 0: the maximum (the paper's).
    pub score_top_fraction: f64,
    /// Image score above which a frame is reported anomalous.
    pub threshold: f64,
    /// Fused-map value above which pixels belong to a defect region.
    pub region_threshold: f64,
    /// How far the calibrated threshold lies above the median held-out good image score: the
    /// unit of [`Self::normalized_score`] (a score that far below the threshold maps to 0.1).
    pub score_spread: f64,
    /// The same for the region threshold and the held-out good images' fused-map maxima: the
    /// unit of [`Self::normalized_region_score`].
    pub region_spread: f64,
}

/// The stored form: checkpoints written before the score had its own weight and threshold
/// have only `fusion_weight` and `threshold`, which then serve both uses, as they did; those
/// that combined the taps other than by the paper's sum (the removed `mean` and `max`) are
/// refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredScoring {
    tap_log_prob_max: [f64; 3],
    #[serde(default)]
    tap_aggregation: Option<String>,
    /// The removed aggregations' tap scales: read and ignored.
    #[serde(default, rename = "tap_stats")]
    _tap_stats: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    tap_offsets: [Vec<f32>; 3],
    fusion_weight: f64,
    score_weight: Option<f64>,
    #[serde(default)]
    score_top_fraction: f64,
    /// The removed pooled image score's window: 0 or 1 (none) is read, others refused.
    #[serde(default)]
    score_pool: u32,
    threshold: f64,
    region_threshold: Option<f64>,
    score_spread: Option<f64>,
    region_spread: Option<f64>,
}

impl TryFrom<StoredScoring> for Scoring {
    type Error = String;

    fn try_from(s: StoredScoring) -> Result<Self, String> {
        if s.score_pool > 1 {
            return Err(crate::model::removed_option(
                "score_pool",
                &s.score_pool.to_string(),
            ));
        }
        if let Some(a) = s.tap_aggregation.filter(|a| a != "sum") {
            return Err(crate::model::removed_option(
                "tap_aggregation",
                &format!("\"{a}\""),
            ));
        }
        let region_threshold = s.region_threshold.unwrap_or(s.threshold);
        Ok(Scoring {
            tap_log_prob_max: s.tap_log_prob_max,
            tap_offsets: s.tap_offsets,
            fusion_weight: s.fusion_weight,
            score_weight: s.score_weight.unwrap_or(s.fusion_weight),
            score_top_fraction: s.score_top_fraction,
            threshold: s.threshold,
            region_threshold,
            score_spread: s
                .score_spread
                .unwrap_or_else(|| assumed_spread(s.threshold)),
            region_spread: s
                .region_spread
                .unwrap_or_else(|| assumed_spread(region_threshold)),
        })
    }
}

/// The spread of a checkpoint that did not store one (written before normalised scores
/// existed): half the threshold's magnitude, at least 0.001.
fn assumed_spread(threshold: f64) -> f64 {
    (threshold.abs() / 2.0).max(1e-3)
}

/// ln 9: the logistic's slope at which a score one spread below the threshold maps to 0.1.
const LN_9: f64 = 2.197_224_577_336_219_6;

/// Maps `value` into (0, 1): 0.5 at `threshold`, 0.1 one `spread` below it, 0.9 one above,
/// strictly increasing (a logistic).
fn normalize(value: f64, threshold: f64, spread: f64) -> f64 {
    let spread = if spread.is_finite() && spread > 0.0 {
        spread
    } else {
        assumed_spread(threshold)
    };
    1.0 / (1.0 + (-LN_9 * (value - threshold) / spread).exp())
}

impl Scoring {
    /// One weight and one threshold for both uses (the paper's scoring).
    pub fn single(tap_log_prob_max: [f64; 3], fusion_weight: f64, threshold: f64) -> Self {
        Scoring {
            tap_log_prob_max,
            tap_offsets: Default::default(),
            fusion_weight,
            score_weight: fusion_weight,
            score_top_fraction: 0.0,
            threshold,
            region_threshold: threshold,
            score_spread: assumed_spread(threshold),
            region_spread: assumed_spread(threshold),
        }
    }

    /// An image score in [0, 1] that is 0.5 at [`Self::threshold`] and increases with the raw
    /// score (anomalib's convention): a median held-out good image scores about 0.1.
    pub fn normalized_score(&self, score: f64) -> f64 {
        normalize(score, self.threshold, self.score_spread)
    }

    /// A fused-map value in [0, 1] that is 0.5 at [`Self::region_threshold`]: a region's
    /// confidence from its largest value.
    pub fn normalized_region_score(&self, value: f64) -> f64 {
        normalize(value, self.region_threshold, self.region_spread)
    }

    /// The reference the flow map uses: per position when offsets are stored.
    pub fn tap_reference(&self) -> TapReference {
        if self.tap_offsets.iter().all(Vec::is_empty) {
            TapReference::Global
        } else {
            TapReference::Position
        }
    }

    /// Whether every weight and threshold is a finite number, the score's top fraction in
    /// [0, 1), and the offsets finite and given for every tap or for none.
    pub fn is_valid(&self) -> bool {
        let offsets_ok = self
            .tap_offsets
            .iter()
            .all(|o| o.iter().all(|v| v.is_finite()))
            && (self.tap_offsets.iter().all(Vec::is_empty)
                || self.tap_offsets.iter().all(|o| !o.is_empty()));
        offsets_ok
            && (0.0..1.0).contains(&self.score_top_fraction)
            && self.score_spread > 0.0
            && self.region_spread > 0.0
            && [
                self.fusion_weight,
                self.score_weight,
                self.threshold,
                self.region_threshold,
                self.score_spread,
                self.region_spread,
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

/// The two branch maps of a batch before fusion, on the model's device: flow (density) and
/// classifier, (N, 1, H, W) each.
#[derive(Debug)]
pub struct BranchMaps {
    /// Flow (density) map.
    pub flow: Tensor,
    /// Classifier map, defect probability in 0..1.
    pub cls: Tensor,
}

/// All maps of a batch at the model's input resolution, on the model's device.
#[derive(Debug)]
pub struct BatchMaps {
    /// Image scores (N): max (or mean of the top fraction) of flow + w_s * classifier.
    pub scores: Tensor,
    /// Fused map (N, 1, H, W): S x S, or the tiled images' shape ([`crate::tiling`]).
    pub fused: Tensor,
    /// Flow (density) map (N, 1, H, W).
    pub flow: Tensor,
    /// Classifier map (N, 1, H, W), defect probability in 0..1.
    pub cls: Tensor,
}

/// Turns per-tap log p / C maps (N, h, w) into the flow anomaly map (N, 1, size, size) by the
/// scoring's reference and the paper's sum ([`sum_flow_map`]).
pub fn flow_map(log_prob_maps: &[Tensor; 3], scoring: &Scoring, size: i64) -> Tensor {
    flow_map_with(log_prob_maps, scoring, None, size)
}

/// [`flow_map`] with the per-position offsets already made tensors ([`offset_tensors`]; a
/// detector keeps them, so that its forward pass creates no tensor from host data, which a
/// TorchScript trace would record as zeros).
pub fn flow_map_with(
    log_prob_maps: &[Tensor; 3],
    scoring: &Scoring,
    offsets: Option<&[Tensor; 3]>,
    size: i64,
) -> Tensor {
    let centred;
    let log_prob_maps = match (scoring.tap_reference(), offsets) {
        (TapReference::Global, _) => log_prob_maps,
        (TapReference::Position, Some(o)) => {
            centred = std::array::from_fn(|l| {
                let t = &log_prob_maps[l];
                t - o[l].to_kind(t.kind())
            });
            &centred
        }
        (TapReference::Position, None) => {
            centred = centre_taps(log_prob_maps, &scoring.tap_offsets);
            &centred
        }
    };
    sum_flow_map(log_prob_maps, &scoring.tap_log_prob_max, size)
}

/// The paper's aggregation: ln(L) - ln(sum over taps of upsampled exp(t - max_train t)), in
/// float64 so that nothing saturates; about 0 where every tap is as likely as the likeliest
/// training position.
pub fn sum_flow_map(log_prob_maps: &[Tensor; 3], tap_max: &[f64; 3], size: i64) -> Tensor {
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

/// A scoring's per-position offsets as (1, h, w) tensors on `device` for taps of `sizes` (the
/// model's [`crate::ModelConfig::tap_sizes`]); None for the global reference.
pub fn offset_tensors(scoring: &Scoring, sizes: [i64; 3], device: Device) -> Option<[Tensor; 3]> {
    if scoring.tap_reference() == TapReference::Global {
        return None;
    }
    Some(std::array::from_fn(|l| {
        Tensor::from_slice(&scoring.tap_offsets[l])
            .view([1, sizes[l], sizes[l]])
            .to_device(device)
    }))
}

/// Per tap, log p / C maps (N, h, w) minus the tap's per-position offsets (h * w, row-major;
/// an empty list leaves the tap as it is).
pub fn centre_taps(log_prob_maps: &[Tensor; 3], offsets: &[Vec<f32>; 3]) -> [Tensor; 3] {
    std::array::from_fn(|l| {
        let t = &log_prob_maps[l];
        if offsets[l].is_empty() {
            return t.shallow_clone();
        }
        let (h, w) = (t.size()[1], t.size()[2]);
        let o = Tensor::from_slice(&offsets[l])
            .view([1, h, w])
            .to_device(t.device())
            .to_kind(t.kind());
        t - o
    })
}

/// The references of the flow maps, from per-tap log p / C maps (N, h, w) of the training
/// images: the paper's per-tap maximum, and for the per-position reference the centring offsets
/// (each position's mean minus the mean over all positions, so that the taps keep their
/// balance) with the maximum of the centred maps.
#[derive(Debug, Clone, PartialEq)]
pub struct TapReferences {
    /// Per tap, the maximum of log p / C (the paper's reference).
    pub max: [f64; 3],
    /// Per tap, the row-major centring offsets.
    pub offsets: [Vec<f32>; 3],
    /// Per tap, the maximum of the centred maps.
    pub centred_max: [f64; 3],
}

impl TapReferences {
    /// Computes all three from the training images' maps.
    pub fn from_maps(log_prob_maps: &[Tensor; 3]) -> Self {
        let max = std::array::from_fn(|l| log_prob_maps[l].max().double_value(&[]));
        let offsets: [Vec<f32>; 3] = std::array::from_fn(|l| {
            let mean = log_prob_maps[l]
                .to_kind(Kind::Double)
                .mean_dim(0, false, Kind::Double);
            let centred = (&mean - mean.mean(Kind::Double)).to_kind(Kind::Float);
            Vec::<f32>::try_from(centred.flatten(0, -1).to_device(tch::Device::Cpu))
                .expect("offsets")
        });
        let c = centre_taps(log_prob_maps, &offsets);
        let centred_max = std::array::from_fn(|l| c[l].max().double_value(&[]));
        TapReferences {
            max,
            offsets,
            centred_max,
        }
    }

    /// A scoring's reference fields for one choice: (tap_log_prob_max, tap_offsets).
    pub fn for_reference(&self, reference: TapReference) -> ([f64; 3], [Vec<f32>; 3]) {
        match reference {
            TapReference::Global => (self.max, Default::default()),
            TapReference::Position => (self.centred_max, self.offsets.clone()),
        }
    }
}

/// Fused map: flow + w * classifier.
pub fn fuse(flow: &Tensor, cls: &Tensor, fusion_weight: f64) -> Tensor {
    flow + cls * fusion_weight
}

/// How many of a map's `pixels` largest values the image score averages at top fraction `q`:
/// ceil(q * pixels), at least one (q = 0: the maximum alone).
pub fn top_count(pixels: usize, q: f64) -> usize {
    ((q * pixels as f64).ceil() as usize).clamp(1, pixels.max(1))
}

/// Image scores (N) of maps (N, 1, H, W): the mean of each map's largest values, the fraction
/// `q` of its pixels ([`top_count`]); the maximum for q = 0.
pub fn image_scores(map: &Tensor, q: f64) -> Tensor {
    let flat = map.flatten(1, -1);
    let k = top_count(flat.size()[1] as usize, q);
    if k == 1 {
        flat.amax([1i64].as_slice(), false)
    } else {
        let (top, _) = flat.topk(k as i64, 1, true, false);
        top.mean_dim([1i64].as_slice(), false, None)
    }
}

/// [`image_scores`] of one map held as values on the host.
pub fn image_score(values: &[f32], q: f64) -> f32 {
    let k = top_count(values.len(), q);
    if k == 1 || values.len() <= 1 {
        return values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    }
    let mut v = values.to_vec();
    // the k largest end up in front, in no particular order
    v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    (v[..k].iter().map(|&x| f64::from(x)).sum::<f64>() / k as f64) as f32
}

/// Resizes maps (N, 1, H, W) to (N, 1, height, width) bilinearly (e.g. to frame size).
pub fn resize_maps(maps: &Tensor, height: i64, width: i64) -> Tensor {
    maps.upsample_bilinear2d([height, width], false, None, None)
}

/// The two branch maps of a normalised batch (N, 3, S, S), (N, 1, S, S) each.
pub fn branch_maps(model: &ClsFlowModel, batch: &Tensor, scoring: &Scoring) -> BranchMaps {
    branch_maps_with(model, batch, scoring, None)
}

/// [`branch_maps`] with the scoring's offsets already tensors ([`flow_map_with`]).
pub fn branch_maps_with(
    model: &ClsFlowModel,
    batch: &Tensor,
    scoring: &Scoring,
    offsets: Option<&[Tensor; 3]>,
) -> BranchMaps {
    tch::no_grad(|| {
        let taps = model.features(batch);
        let cls = model
            .cls_logits(&taps, false)
            .to_kind(Kind::Float)
            .sigmoid();
        let logp = model.flow_log_prob_maps(&taps);
        BranchMaps {
            flow: flow_map_with(&logp, scoring, offsets, model.config().input_size),
            cls,
        }
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
    let flow = flow_map(log_prob_maps, scoring, size);
    combine(BranchMaps { flow, cls }, scoring)
}

/// The fused map and the image scores from the two branch maps (N, 1, H, W) of any shape.
pub fn combine(maps: BranchMaps, scoring: &Scoring) -> BatchMaps {
    let BranchMaps { flow, cls } = maps;
    let fused = fuse(&flow, &cls, scoring.fusion_weight);
    let q = scoring.score_top_fraction;
    let scores = if scoring.score_weight == scoring.fusion_weight {
        image_scores(&fused, q)
    } else {
        image_scores(&fuse(&flow, &cls, scoring.score_weight), q)
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
    fn normalized_scores_are_half_at_the_threshold_and_increase() {
        let s = Scoring {
            threshold: 2.0,
            score_spread: 1.0,
            region_threshold: -3.0,
            region_spread: 0.5,
            ..Scoring::default()
        };
        assert!((s.normalized_score(2.0) - 0.5).abs() < 1e-12);
        assert!((s.normalized_score(1.0) - 0.1).abs() < 1e-12);
        assert!((s.normalized_score(3.0) - 0.9).abs() < 1e-12);
        assert!((s.normalized_region_score(-3.0) - 0.5).abs() < 1e-12);
        assert!((s.normalized_region_score(-3.5) - 0.1).abs() < 1e-12);
        let xs: Vec<f64> = (-400..400).map(|i| f64::from(i) * 0.05).collect();
        for w in xs.windows(2) {
            let (a, b) = (s.normalized_score(w[0]), s.normalized_score(w[1]));
            assert!(
                (0.0..=1.0).contains(&a) && a <= b,
                "{} -> {a}, {} -> {b}",
                w[0],
                w[1]
            );
        }
        // a checkpoint without spreads gets one from its threshold
        let old: Scoring = serde_json::from_value(serde_json::json!({
            "tap_log_prob_max": [0.0, 0.0, 0.0], "fusion_weight": 1.0, "score_weight": 1.0,
            "threshold": 4.0, "region_threshold": 1.0
        }))
        .unwrap();
        assert_eq!((old.score_spread, old.region_spread), (2.0, 0.5));
        assert!((old.normalized_score(4.0) - 0.5).abs() < 1e-12);
    }

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
        let at =
            |d: f64| sum_flow_map(&[t(d), t(d), t(d)], &[0.0; 3], 1).double_value(&[0, 0, 0, 0]);
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

    #[test]
    fn the_image_score_averages_the_top_fraction_of_the_map() {
        // one map of 10 pixels: 0..9, with a spike of 100 at the end
        let mut v: Vec<f32> = (0..9).map(|i| i as f32).collect();
        v.push(100.0);
        let map = Tensor::from_slice(&v).view([1, 1, 2, 5]);
        assert_eq!(top_count(10, 0.0), 1);
        assert_eq!(top_count(10, 0.2), 2);
        assert_eq!(top_count(10, 0.21), 3);
        for (q, want) in [(0.0, 100.0), (0.2, 54.0), (0.3, 115.0 / 3.0)] {
            let t = image_scores(&map, q).double_value(&[0]) as f32;
            let h = image_score(&v, q);
            assert!(
                (t - want).abs() < 1e-4 && (h - want).abs() < 1e-4,
                "q {q}: {t} {h}"
            );
        }
        let old: Scoring = serde_json::from_str(
            r#"{"tap_log_prob_max":[1,2,3],"fusion_weight":4,"threshold":7.5}"#,
        )
        .unwrap();
        assert_eq!(
            old.score_top_fraction, 0.0,
            "old checkpoints score by the max"
        );
        let bad = Scoring {
            score_top_fraction: 1.0,
            ..old
        };
        assert!(!bad.is_valid(), "a top fraction of 1 is refused");
    }

    #[test]
    fn scorings_of_the_removed_aggregations_are_refused_by_name() {
        let sum: Scoring = serde_json::from_str(
            r#"{"tap_log_prob_max":[1,2,3],"tap_aggregation":"sum","tap_stats":[{"mean":0,"std":1},{"mean":0,"std":1},{"mean":0,"std":1}],"fusion_weight":4,"threshold":7.5}"#,
        )
        .unwrap();
        assert!(sum.is_valid(), "the sum, as stored by older checkpoints");
        let err = serde_json::from_str::<Scoring>(
            r#"{"tap_log_prob_max":[1,2,3],"tap_aggregation":"max","tap_stats":[{"mean":1,"std":2},{"mean":0,"std":1},{"mean":0,"std":1}],"fusion_weight":4,"threshold":7.5}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("tap_aggregation = \"max\"") && err.contains("no longer has"),
            "{err}"
        );
    }

    #[test]
    fn the_position_reference_centres_each_position_on_its_training_mean() {
        // tap 0: two training images of a 1x2 map whose second position is always 4 less likely
        let maps = [
            Tensor::from_slice(&[-1.0f32, -5.0, -3.0, -7.0]).view([2, 1, 2]),
            Tensor::from_slice(&[-2.0f32; 4]).view([2, 1, 2]),
            Tensor::from_slice(&[-1.0f32, -1.0, -3.0, -3.0]).view([2, 1, 2]),
        ];
        let r = TapReferences::from_maps(&maps);
        assert_eq!(r.max, [-1.0, -2.0, -1.0]);
        // position means -2 and -6 around the tap's mean -4; the other taps are level
        assert_eq!(r.offsets, [vec![2.0, -2.0], vec![0.0, 0.0], vec![0.0, 0.0]]);
        assert_eq!(r.centred_max, [-3.0, -2.0, -1.0]);
        let at = |reference| {
            let (tap_log_prob_max, tap_offsets) = r.for_reference(reference);
            let s = Scoring {
                tap_offsets,
                ..Scoring::single(tap_log_prob_max, 0.0, 0.0)
            };
            assert_eq!(s.tap_reference(), reference);
            assert!(s.is_valid());
            let m = flow_map(&maps, &s, 2); // (2, 1, 2, 2)
            (m.double_value(&[0, 0, 0, 0]), m.double_value(&[0, 0, 0, 1]))
        };
        // global: the less predictable position looks anomalous in a good image
        let (a, b) = at(TapReference::Global);
        assert!(b - a > 0.2, "{a} {b}");
        // per position: both positions of the first image are equally normal
        let (a, b) = at(TapReference::Position);
        assert!((b - a).abs() < 1e-6, "{a} {b}");
        let partial = Scoring {
            tap_offsets: [vec![0.0, 0.0], vec![], vec![]],
            ..Scoring::default()
        };
        assert!(
            !partial.is_valid(),
            "offsets for some taps only are refused"
        );
    }
}
