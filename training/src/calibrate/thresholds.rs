//! The decision thresholds from the held-out good images alone: with no anomaly in a stream, a
//! good frame is flagged, or gets a region, only when it goes above every good image seen in
//! calibration (and k standard deviations above their mean). With `resize = "tile"` they come
//! from whole images, their tiles' maps stitched as the detector stitches a frame's.

use super::heads::{HeadOutputs, MapRows, image_scores_of};
use clsflow::TileLayout;
use clsflow::scoring::{BranchMaps, Scoring, combine, flow_map, image_scores};
use clsflow::tiling::stitch;
use tch::Tensor;

/// Both thresholds and the spreads of the normalised scores.
pub struct Thresholds {
    /// Image-score threshold.
    pub threshold: f64,
    /// Fused-map threshold of the regions.
    pub region_threshold: f64,
    /// Unit of the normalised image score.
    pub score_spread: f64,
    /// Unit of the normalised region score.
    pub region_spread: f64,
    /// The held-out good images' scores.
    pub holdout_scores: Vec<f32>,
}

/// The thresholds of `scoring` on the held-out good images (`good_maps`: their branch maps
/// under the scoring's reference, if already made), laid out as `layouts`.
pub fn from_held_out(
    good: &HeadOutputs,
    good_maps: Option<MapRows>,
    scoring: &Scoring,
    layouts: &[TileLayout],
    size: usize,
    sigmas: f64,
) -> Thresholds {
    let (scores, fused_maxima) = if layouts.iter().any(|l| l.tiles() > 1) {
        stitched_scores(good, scoring, layouts, size as i64)
    } else {
        let maps = good_maps.unwrap_or_else(|| good.maps(scoring, size as i64));
        (
            image_scores_of(&maps, scoring.score_weight, scoring.score_top_fraction),
            image_scores_of(&maps, scoring.fusion_weight, 0.0),
        )
    };
    let threshold = threshold_from_good(&scores, sigmas);
    let region_threshold = threshold_from_good(&fused_maxima, sigmas);
    Thresholds {
        threshold,
        region_threshold,
        score_spread: spread_below(threshold, &scores),
        region_spread: spread_below(region_threshold, &fused_maxima),
        holdout_scores: scores,
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
            let branches = BranchMaps {
                flow: stitch(&flow),
                cls: stitch(&out.cls),
            };
            let maps = combine(branches, scoring);
            scores.push(maps.scores.double_value(&[0]) as f32);
            maxima.push(image_scores(&maps.fused, 0.0).double_value(&[0]) as f32);
            start += t;
        }
        (scores, maxima)
    })
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

    #[test]
    fn threshold_rule() {
        // mean 2, std 1 -> mean + 3 std = 5 > max 3
        assert!((threshold_from_good(&[1.0, 3.0, 1.0, 3.0], 3.0) - 5.0).abs() < 1e-9);
        // one outlier: the max wins when k is small
        assert!((threshold_from_good(&[1.0, 1.0, 1.0, 9.0], 0.5) - 9.0).abs() < 1e-9);
        assert!((threshold_from_good(&[2.0], 3.0) - 2.0).abs() < 1e-9);
    }
}
