//! Evaluation on the test split with the official MVTec AD metrics, for the fused map and for
//! each branch alone, overall and per defect type, plus decisions at the calibrated threshold.

use crate::data::{Dataset, OnBadImage, progress, read_mask, read_rgb, resize_for};
use anyhow::{Result, bail};
use clsflow::metrics::{self, Curve, MaskedMap};
use clsflow::preprocess::rgb_to_tensor;
use clsflow::scoring::{image_scores, resize_maps};
use clsflow::{Detector, InputResize, Scoring};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Branch names, in the order of [`ScoredItem::maps`].
pub const BRANCHES: [&str; 3] = ["fused", "flow", "classifier"];

/// One scored test image.
#[derive(Debug, Clone)]
pub struct ScoredItem {
    /// Image path.
    pub path: PathBuf,
    /// Folder under test/.
    pub defect_type: String,
    /// Ground truth at model resolution (all false for good images).
    pub mask: Vec<bool>,
    /// Fused, flow and classifier maps at model resolution.
    pub maps: [Vec<f32>; 3],
    /// Image scores: the detector's score (max, or mean of the top fraction, of flow + w_s *
    /// classifier) for the fused branch, the same reduction of the map for each branch alone.
    pub scores: [f32; 3],
}

impl ScoredItem {
    /// Whether the image has a defect.
    pub fn is_defective(&self) -> bool {
        self.defect_type != "good"
    }
}

/// The four metrics of one branch (None where undefined, e.g. no defects in a subset).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BranchMetrics {
    /// Image AUROC.
    pub image_auroc: Option<f64>,
    /// Pixel AUROC.
    pub pixel_auroc: Option<f64>,
    /// Pixel average precision.
    pub pixel_ap: Option<f64>,
    /// AU-PRO to FPR 0.3, normalised.
    pub au_pro: Option<f64>,
}

/// Decisions of the fused image score at the calibrated threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Decisions {
    /// The image-score threshold.
    pub threshold: f64,
    /// The fused-map threshold of the regions (the sample sheet's outlines).
    pub region_threshold: f64,
    /// Precision of "anomalous".
    pub precision: Option<f64>,
    /// Recall of defective images.
    pub recall: Option<f64>,
    /// Share of good images flagged.
    pub false_positive_rate: Option<f64>,
    /// Images flagged anomalous.
    pub flagged: usize,
}

/// Everything evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Metrics per branch over the whole test split.
    pub branches: BTreeMap<String, BranchMetrics>,
    /// Per defect type (each type's images plus all good images), per branch.
    pub per_defect_type: BTreeMap<String, BTreeMap<String, BranchMetrics>>,
    /// Decisions at the calibrated threshold.
    pub decisions: Decisions,
    /// Test images (good, defective).
    pub counts: (usize, usize),
    /// Mean detector time per image in milliseconds (batched, without file reading).
    pub inference_ms_per_image: f64,
    /// Curves for figures, per branch: image ROC and PRO (thinned).
    #[serde(skip)]
    pub curves: BTreeMap<String, (Curve, Curve)>,
}

fn thin(c: Curve, max_points: usize) -> Curve {
    if c.len() <= max_points {
        return c;
    }
    let step = c.len().div_ceil(max_points);
    let last = *c.last().unwrap();
    let mut out: Curve = c.into_iter().step_by(step).collect();
    out.push(last);
    out
}

/// Scores every test image with the detector.
pub fn score_test_set(
    det: &Detector,
    ds: &Dataset,
    on_bad: OnBadImage,
    batch: usize,
) -> Result<(Vec<ScoredItem>, f64)> {
    if ds.test.is_empty() {
        bail!(
            "{}: no test/ folder with images: nothing to evaluate (expected test/good and test/<defect type>)",
            ds.root.display()
        );
    }
    let size = det.map_size() as u32;
    let q = det.scoring().score_top_fraction;
    let pb = progress(ds.test.len() as u64, "evaluating");
    let mut items = Vec::new();
    let mut infer_secs = 0.0;
    for chunk in ds.test.chunks(batch) {
        let mut imgs = Vec::new();
        let mut metas = Vec::new();
        for t in chunk {
            let img = match read_rgb(&t.path) {
                Ok(i) => i,
                Err(e) if on_bad == OnBadImage::Skip => {
                    pb.println(format!("warning: skipping {e:#}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mask = match &t.mask {
                Some(m) => read_mask(m, size)?.pixels().map(|p| p[0] > 0).collect(),
                None => vec![false; (size * size) as usize],
            };
            imgs.push(rgb_to_tensor(&resize_for(&img, size, det.resize())));
            metas.push((t.path.clone(), t.defect_type.clone(), mask));
        }
        pb.inc(chunk.len() as u64);
        if imgs.is_empty() {
            continue;
        }
        let start = Instant::now();
        let scored = if det.resize() == InputResize::Tile {
            // each shape has its own tiles: one image at a time
            let mut all = Vec::new();
            for img in &imgs {
                all.extend(scored_maps(det, &img.unsqueeze(0), q, size as i64)?);
            }
            all
        } else {
            scored_maps(det, &Tensor::stack(&imgs, 0), q, size as i64)?
        };
        infer_secs += start.elapsed().as_secs_f64();
        for ((path, defect_type, mask), (maps, scores)) in metas.into_iter().zip(scored) {
            items.push(ScoredItem {
                path,
                defect_type,
                mask,
                maps,
                scores,
            });
        }
    }
    pb.finish_and_clear();
    let ms = 1000.0 * infer_secs / items.len().max(1) as f64;
    Ok((items, ms))
}

/// One image's fused, flow and classifier maps and image scores.
type MapsAndScores = ([Vec<f32>; 3], [f32; 3]);

/// The detector on a batch of same-sized images: per image its fused, flow and classifier maps
/// at `size` x `size` (the masks' grid; tiled images' maps are resized to it) and their image
/// scores, the detector's for the fused map and the same reduction of each branch's map,
/// computed before any resize.
fn scored_maps(det: &Detector, batch: &Tensor, q: f64, size: i64) -> Result<Vec<MapsAndScores>> {
    let maps = det.detect_batch(batch)?;
    let all =
        [&maps.fused, &maps.flow, &maps.cls].map(|t| t.to_device(Device::Cpu).to_kind(Kind::Float));
    let scores = [
        maps.scores.to_device(Device::Cpu).to_kind(Kind::Float),
        image_scores(&all[1], q),
        image_scores(&all[2], q),
    ]
    .map(|t| Vec::<f32>::try_from(t).expect("scores"));
    let on_grid = all.map(|t| {
        let (h, w) = (t.size()[2], t.size()[3]);
        if (h, w) == (size, size) {
            t
        } else {
            resize_maps(&t, size, size)
        }
    });
    Ok((0..batch.size()[0])
        .map(|i| {
            let m = on_grid
                .each_ref()
                .map(|t| Vec::<f32>::try_from(t.get(i).flatten(0, -1)).expect("map"));
            (m, [0, 1, 2].map(|b| scores[b][i as usize]))
        })
        .collect())
}

/// The four metrics of branch `b` over `items`; curves too when asked.
pub fn branch_metrics(
    items: &[&ScoredItem],
    b: usize,
    size: usize,
    with_curves: bool,
) -> (BranchMetrics, Option<(Curve, Curve)>) {
    let scores: Vec<f32> = items.iter().map(|i| i.scores[b]).collect();
    let labels: Vec<bool> = items.iter().map(|i| i.is_defective()).collect();
    let roc = metrics::roc_curve(&scores, &labels);
    let px: Vec<f32> = items
        .iter()
        .flat_map(|i| i.maps[b].iter().copied())
        .collect();
    let pl: Vec<bool> = items.iter().flat_map(|i| i.mask.iter().copied()).collect();
    let masked: Vec<MaskedMap> = items
        .iter()
        .map(|i| MaskedMap {
            scores: &i.maps[b],
            mask: &i.mask,
            width: size,
            height: size,
        })
        .collect();
    let pro = metrics::pro_curve(&masked);
    let pixel = metrics::roc_and_ap(&px, &pl);
    drop((px, pl));
    let m = BranchMetrics {
        image_auroc: roc.as_ref().map(|c| metrics::trapezoid(c)),
        pixel_auroc: pixel.as_ref().map(|(c, _)| metrics::trapezoid(c)),
        pixel_ap: pixel.map(|(_, ap)| ap),
        au_pro: pro.as_ref().map(|c| metrics::partial_area(c, 0.3) / 0.3),
    };
    let curves = if with_curves {
        match (roc, pro) {
            (Some(r), Some(p)) => Some((
                thin(r, 2000),
                thin(p.into_iter().take_while(|q| q.0 <= 0.3).collect(), 2000),
            )),
            _ => None,
        }
    } else {
        None
    };
    (m, curves)
}

/// All metrics for scored items at the detector's thresholds.
pub fn evaluate(items: &[ScoredItem], size: usize, scoring: &Scoring, ms: f64) -> Evaluation {
    let threshold = scoring.threshold;
    let all: Vec<&ScoredItem> = items.iter().collect();
    let mut branches = BTreeMap::new();
    let mut curves = BTreeMap::new();
    let pb = progress(3, "metrics");
    for (b, name) in BRANCHES.iter().enumerate() {
        let (m, c) = branch_metrics(&all, b, size, true);
        branches.insert(name.to_string(), m);
        if let Some(c) = c {
            curves.insert(name.to_string(), c);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let types: std::collections::BTreeSet<&str> = items
        .iter()
        .filter(|i| i.is_defective())
        .map(|i| i.defect_type.as_str())
        .collect();
    let mut per_defect_type = BTreeMap::new();
    let pb = progress((types.len() * 3) as u64, "per type");
    for t in types {
        let subset: Vec<&ScoredItem> = items
            .iter()
            .filter(|i| !i.is_defective() || i.defect_type == t)
            .collect();
        let mut per = BTreeMap::new();
        for (b, name) in BRANCHES.iter().enumerate() {
            per.insert(name.to_string(), branch_metrics(&subset, b, size, false).0);
            pb.inc(1);
        }
        per_defect_type.insert(t.to_string(), per);
    }
    pb.finish_and_clear();
    let predicted: Vec<bool> = items
        .iter()
        .map(|i| f64::from(i.scores[0]) > threshold)
        .collect();
    let labels: Vec<bool> = items.iter().map(|i| i.is_defective()).collect();
    let (precision, recall) = metrics::precision_recall(&predicted, &labels);
    let good = labels.iter().filter(|l| !**l).count();
    let fp = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p && !**l)
        .count();
    Evaluation {
        branches,
        per_defect_type,
        decisions: Decisions {
            threshold,
            region_threshold: scoring.region_threshold,
            precision,
            recall,
            false_positive_rate: (good > 0).then(|| fp as f64 / good as f64),
            flagged: predicted.iter().filter(|p| **p).count(),
        },
        counts: (good, items.len() - good),
        inference_ms_per_image: ms,
        curves,
    }
}
