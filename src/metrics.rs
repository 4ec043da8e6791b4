//! Evaluation metrics with the official MVTec AD definitions (docs/method.md section 7), exact (over
//! sorted scores, ties grouped), no threshold grid.

use image::{GrayImage, Luma};
use imageproc::region_labelling::{Connectivity, connected_components};

/// Points of a curve, e.g. (FPR, TPR) or (FPR, PRO), starting at (0, 0).
pub type Curve = Vec<(f64, f64)>;

/// A u32 whose unsigned order is the total order of the f32 (negatives below positives).
#[inline]
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// (score key << 32 | payload) sorted by descending score: sorting plain u64s is several times
/// faster than an indirect comparator on tens of millions of pixels.
fn packed_desc(scores: &[f32], payload: impl Fn(usize) -> u32) -> Vec<u64> {
    let mut v: Vec<u64> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (u64::from(order_key(s)) << 32) | u64::from(payload(i)))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

/// ROC curve (FPR, TPR), one point per distinct score, from (0, 0) to (1, 1).
/// Returns `None` when only one class is present.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Option<Curve> {
    roc_and_ap(scores, labels).map(|(c, _)| c)
}

/// ROC curve and average precision from one sort. `None` when only one class is present.
pub fn roc_and_ap(scores: &[f32], labels: &[bool]) -> Option<(Curve, f64)> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let sorted = packed_desc(scores, |i| u32::from(labels[i]));
    let mut curve = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut prev_recall, mut ap) = (0.0, 0.0);
    for (k, &v) in sorted.iter().enumerate() {
        if v & 1 == 1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = k + 1 == sorted.len() || sorted[k + 1] >> 32 != v >> 32;
        if last_of_tie {
            curve.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
            let recall = tp as f64 / pos as f64;
            ap += (recall - prev_recall) * (tp as f64 / (tp + fp) as f64);
            prev_recall = recall;
        }
    }
    Some((curve, ap))
}

/// Area under a curve by the trapezoid rule.
pub fn trapezoid(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// Area under the ROC curve (trapezoid; ties count half). `None` with one class only.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    roc_curve(scores, labels).map(|c| trapezoid(&c))
}

/// Hanley and McNeil's (1982) standard error of an AUROC `a` measured on `positives` anomalous
/// and `negatives` normal items: SE² = (A(1-A) + (n₁-1)(Q₁-A²) + (n₀-1)(Q₂-A²)) / (n₁n₀) with
/// Q₁ = A/(2-A) and Q₂ = 2A²/(1+A). `None` without positives or negatives.
pub fn auroc_standard_error(a: f64, positives: usize, negatives: usize) -> Option<f64> {
    if positives == 0 || negatives == 0 || !(0.0..=1.0).contains(&a) {
        return None;
    }
    let (n1, n0) = (positives as f64, negatives as f64);
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var = (a * (1.0 - a) + (n1 - 1.0) * (q1 - a * a) + (n0 - 1.0) * (q2 - a * a)) / (n1 * n0);
    Some(var.max(0.0).sqrt())
}

/// Average precision: sum over distinct thresholds of (R_n - R_{n-1}) P_n (scikit-learn's
/// definition). `None` without positives (or without negatives).
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    roc_and_ap(scores, labels).map(|(_, ap)| ap)
}

/// 8-connected components of a binary mask (non-zero = defect): a label per pixel (0 = none)
/// and the number of regions.
pub fn label_regions(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, usize) {
    let img = GrayImage::from_fn(width as u32, height as u32, |x, y| {
        Luma([if mask[y as usize * width + x as usize] {
            255
        } else {
            0
        }])
    });
    let labels = connected_components(&img, Connectivity::Eight, Luma([0u8]));
    let data: Vec<u32> = labels.pixels().map(|p| p[0]).collect();
    let n = data.iter().copied().max().unwrap_or(0) as usize;
    (data, n)
}

/// One image's anomaly map and ground truth for [`pro_curve`].
#[derive(Debug, Clone)]
pub struct MaskedMap<'a> {
    /// Scores, row-major.
    pub scores: &'a [f32],
    /// Ground truth (true = defect), same layout.
    pub mask: &'a [bool],
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// The per-region-overlap curve (FPR, PRO) over all distinct thresholds: FPR over all normal
/// pixels of all images, PRO the mean over ground-truth regions (8-connected components of each
/// mask, all weighing the same) of the fraction of the region above the threshold.
/// `None` when there is no region or no normal pixel.
pub fn pro_curve(maps: &[MaskedMap]) -> Option<Curve> {
    let mut region_sizes: Vec<usize> = Vec::new();
    let mut packed: Vec<u64> = Vec::new(); // score key << 32 | (global region id + 1, 0 = normal)
    let mut normal = 0usize;
    for m in maps {
        assert_eq!(m.scores.len(), m.width * m.height, "map size");
        assert_eq!(m.mask.len(), m.width * m.height, "mask size");
        let (labels, n) = label_regions(m.mask, m.width, m.height);
        let base = region_sizes.len() as u32;
        region_sizes.extend(std::iter::repeat_n(0usize, n));
        packed.reserve(m.scores.len());
        for (&s, &l) in m.scores.iter().zip(&labels) {
            let id = if l == 0 {
                normal += 1;
                0
            } else {
                region_sizes[(base + l - 1) as usize] += 1;
                base + l
            };
            packed.push((u64::from(order_key(s)) << 32) | u64::from(id));
        }
    }
    let regions = region_sizes.len();
    if regions == 0 || normal == 0 {
        return None;
    }
    packed.sort_unstable_by(|a, b| b.cmp(a));
    let (mut fpr, mut pro) = (0.0f64, 0.0f64);
    let mut curve = vec![(0.0, 0.0)];
    for k in 0..packed.len() {
        let id = (packed[k] & 0xffff_ffff) as usize;
        if id == 0 {
            fpr += 1.0 / normal as f64;
        } else {
            pro += 1.0 / (region_sizes[id - 1] as f64 * regions as f64);
        }
        if k + 1 == packed.len() || packed[k + 1] >> 32 != packed[k] >> 32 {
            curve.push((fpr.min(1.0), pro.min(1.0)));
        }
    }
    Some(curve)
}

/// Area under `curve` for x in [0, x_max], with linear interpolation at exactly x_max.
pub fn partial_area(curve: &[(f64, f64)], x_max: f64) -> f64 {
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 >= x_max {
            break;
        }
        if x1 <= x_max {
            area += (x1 - x0) * (y0 + y1) / 2.0;
        } else {
            let y = if x1 > x0 {
                y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            } else {
                y1
            };
            area += (x_max - x0) * (y0 + y) / 2.0;
            break;
        }
    }
    area
}

/// AU-PRO up to `fpr_limit` (0.3 officially), normalised by the limit.
pub fn au_pro(maps: &[MaskedMap], fpr_limit: f64) -> Option<f64> {
    pro_curve(maps).map(|c| partial_area(&c, fpr_limit) / fpr_limit)
}

/// Image AUROC (an image's score is its map's maximum), pixel AUROC and AU-PRO to `fpr_limit`
/// of maps against their ground truth; `None` where a metric is undefined.
pub fn map_metrics(
    maps: &[&[f32]],
    masks: &[&[bool]],
    labels: &[bool],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let scores: Vec<f32> = maps
        .iter()
        .map(|m| m.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let px: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
    let pl: Vec<bool> = masks.iter().flat_map(|m| m.iter().copied()).collect();
    let masked: Vec<MaskedMap> = maps
        .iter()
        .zip(masks)
        .map(|(scores, mask)| MaskedMap {
            scores,
            mask,
            width,
            height,
        })
        .collect();
    (
        auroc(&scores, labels),
        auroc(&px, &pl),
        au_pro(&masked, fpr_limit),
    )
}

/// Precision and recall of binary decisions (`None` parts where undefined).
pub fn precision_recall(predicted: &[bool], labels: &[bool]) -> (Option<f64>, Option<f64>) {
    let tp = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p && **l)
        .count();
    let pp = predicted.iter().filter(|&&p| p).count();
    let ap = labels.iter().filter(|&&l| l).count();
    (
        (pp > 0).then(|| tp as f64 / pp as f64),
        (ap > 0).then(|| tp as f64 / ap as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn auroc_hand_computed() {
        // 4 pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) loss, 0.8 wins both: 3/4
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!(close(auroc(&s, &l).unwrap(), 0.75));
        // ties count half
        assert!(close(auroc(&[0.5, 0.5], &[false, true]).unwrap(), 0.5));
        assert!(close(auroc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0));
        assert!(
            auroc(&[0.1, 0.2], &[true, true]).is_none(),
            "one class only"
        );
    }

    #[test]
    fn auroc_standard_error_follows_hanley_mcneil_and_sampling() {
        // the closed form (Hanley and McNeil's table: about 0.032 for A = 0.9, 50 + 50 items)
        let se = auroc_standard_error(0.9, 50, 50).unwrap();
        assert!((se - 0.032124).abs() < 1e-5, "{se}");
        assert_eq!(auroc_standard_error(1.0, 50, 50), Some(0.0));
        assert!(auroc_standard_error(0.9, 0, 50).is_none());
        assert!(auroc_standard_error(0.9, 200, 200).unwrap() < se / 1.9);
        // against the spread of AUROCs actually drawn: binormal scores, d' = 1.5 (A = 0.856),
        // 30 positives and 40 negatives, 400 draws (the closed form is known to run ~10 % high)
        tch::manual_seed(7);
        let labels: Vec<bool> = (0..70).map(|i| i < 30).collect();
        let shift = tch::Tensor::from_slice(
            &labels
                .iter()
                .map(|&l| if l { 1.5f32 } else { 0.0 })
                .collect::<Vec<_>>(),
        );
        let draws: Vec<f64> = (0..400)
            .map(|_| {
                let s = tch::Tensor::randn([70], (tch::Kind::Float, tch::Device::Cpu)) + &shift;
                auroc(&Vec::<f32>::try_from(s).unwrap(), &labels).unwrap()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / 400.0;
        let sd = (draws.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 400.0).sqrt();
        let predicted = auroc_standard_error(mean, 30, 40).unwrap();
        assert!((0.83..0.87).contains(&mean), "mean AUROC {mean}");
        assert!(
            (0.8..1.25).contains(&(predicted / sd)),
            "predicted {predicted:.4} against drawn {sd:.4}"
        );
    }

    #[test]
    fn average_precision_hand_computed() {
        // thresholds 0.8 (P=1, R=.5), 0.4 (P=.5, R=.5), 0.35 (P=2/3, R=1): .5*1 + .5*2/3
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!(close(
            average_precision(&s, &l).unwrap(),
            0.5 + 0.5 * 2.0 / 3.0
        ));
        assert!(average_precision(&s, &[false; 4]).is_none());
    }

    #[test]
    fn regions_are_eight_connected() {
        // diagonal neighbours join; a far pixel is its own region
        let mask = [
            true, false, false, false, false, true, false, false, false, false, false, true,
        ];
        let (labels, n) = label_regions(&mask, 4, 3);
        assert_eq!(n, 2);
        assert_eq!(labels[0], labels[5]);
        assert_ne!(labels[0], labels[11]);
    }

    #[test]
    fn au_pro_single_region() {
        // region found first, then normals: PRO = 1 from FPR 0 on: normalised area 1
        let s = [0.9, 0.2, 0.8, 0.1];
        let m = [true, false, false, false];
        let maps = [MaskedMap {
            scores: &s,
            mask: &m,
            width: 4,
            height: 1,
        }];
        assert!(close(au_pro(&maps, 0.3).unwrap(), 1.0));
    }

    #[test]
    fn au_pro_weighs_regions_equally_and_interpolates_at_the_limit() {
        // A: region of 2 px (0.9, 0.3), normals 0.5, 0.1; B: region of 1 px (0.2), normals 0.6, 0.05.
        // Curve: (0,0) (0,.25) (.25,.25) (.5,.25) (.5,.5) (.5,1) (.75,1) (1,1).
        let (sa, ma) = ([0.9, 0.3, 0.5, 0.1], [true, true, false, false]);
        let (sb, mb) = ([0.2, 0.6, 0.05], [true, false, false]);
        let maps = [
            MaskedMap {
                scores: &sa,
                mask: &ma,
                width: 4,
                height: 1,
            },
            MaskedMap {
                scores: &sb,
                mask: &mb,
                width: 3,
                height: 1,
            },
        ];
        let curve = pro_curve(&maps).unwrap();
        let want = [
            (0.0, 0.0),
            (0.0, 0.25),
            (0.25, 0.25),
            (0.5, 0.25),
            (0.5, 0.5),
            (0.5, 1.0),
            (0.75, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(curve.len(), want.len());
        for (a, b) in curve.iter().zip(want) {
            assert!(close(a.0, b.0) && close(a.1, b.1), "{a:?} vs {b:?}");
        }
        // to 0.3: .25 * .25 + .05 * .25 = .075, normalised .25
        assert!(close(au_pro(&maps, 0.3).unwrap(), 0.25));
        assert!(close(partial_area(&curve, 1.0), 0.625));
        // ties between a normal and a region pixel are one threshold
        let (s, m) = ([0.5, 0.5], [true, false]);
        let c = pro_curve(&[MaskedMap {
            scores: &s,
            mask: &m,
            width: 2,
            height: 1,
        }])
        .unwrap();
        assert_eq!(c, vec![(0.0, 0.0), (1.0, 1.0)]);
    }

    #[test]
    fn precision_recall_counts() {
        let (p, r) = precision_recall(&[true, true, false, false], &[true, false, true, false]);
        assert_eq!((p, r), (Some(0.5), Some(0.5)));
        assert_eq!(precision_recall(&[false], &[false]), (None, None));
    }

    #[test]
    fn map_metrics_scores_images_by_their_maximum() {
        // 2x1 maps: a good image, a defect found at its pixel, a defect missed by the maximum
        let maps: [&[f32]; 3] = [&[0.1, 0.3], &[0.9, 0.2], &[0.25, 0.05]];
        let masks: [&[bool]; 3] = [&[false, false], &[true, false], &[false, true]];
        let (img, pix, pro) = map_metrics(&maps, &masks, &[false, true, true], 2, 1, 0.3);
        // image scores 0.3, 0.9, 0.25: one of the two defective images ranks above the good one
        assert!(close(img.unwrap(), 0.5));
        let px = [0.1, 0.3, 0.9, 0.2, 0.25, 0.05];
        let pl = [false, false, true, false, false, true];
        assert!(close(pix.unwrap(), auroc(&px, &pl).unwrap()));
        let mm: Vec<MaskedMap> = maps
            .iter()
            .zip(&masks)
            .map(|(scores, mask)| MaskedMap {
                scores,
                mask,
                width: 2,
                height: 1,
            })
            .collect();
        assert!(close(pro.unwrap(), au_pro(&mm, 0.3).unwrap()));
        assert_eq!(
            map_metrics(&maps[..1], &masks[..1], &[false], 2, 1, 0.3).0,
            None
        );
    }
}
