//! Evaluation on the test split with the official MVTec AD metrics, for the fused map and for
//! each branch alone, overall and per defect type, plus decisions at the calibrated threshold.

use crate::data::SkippedFile;
use crate::data::{Dataset, OnBadImage, TestItem, progress, read_mask, read_rgb, resize_for, warn};
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
    /// Ground truth at model resolution (all false for good images); None for a defective
    /// image without a mask, which counts at image level only.
    pub mask: Option<Vec<bool>>,
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

/// Leaves out of `ds`'s test split the images that the model trained on: the good images that
/// `update` added (listed in the model's training summary `training`), so that a report never
/// scores an image the model learnt as good. Returns the images left out.
pub fn leave_out_trained(ds: &mut Dataset, training: Option<&serde_json::Value>) -> Vec<PathBuf> {
    let canonical = |p: &std::path::Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let trained: std::collections::HashSet<PathBuf> = training
        .and_then(|t| t["update"]["added"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .map(|p| canonical(std::path::Path::new(p)))
        .collect();
    if trained.is_empty() {
        return Vec::new();
    }
    let (out, kept): (Vec<TestItem>, Vec<TestItem>) = std::mem::take(&mut ds.test)
        .into_iter()
        .partition(|t| trained.contains(&canonical(&t.path)));
    ds.test = kept;
    out.into_iter().map(|t| t.path).collect()
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

/// Which test images the pixel metrics cover: good images and defective ones with masks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PixelCoverage {
    /// Defective images with a ground-truth mask.
    pub defective_with_masks: usize,
    /// All defective images.
    pub defective: usize,
    /// Defect types without any mask (image-level metrics only).
    pub types_without_masks: Vec<String>,
    /// Defect types where only some images have masks.
    pub types_partly_masked: Vec<String>,
}

impl PixelCoverage {
    /// Counts what `items` have.
    pub fn of(items: &[ScoredItem]) -> Self {
        let mut per_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for i in items.iter().filter(|i| i.is_defective()) {
            let e = per_type.entry(&i.defect_type).or_default();
            e.0 += usize::from(i.mask.is_some());
            e.1 += 1;
        }
        PixelCoverage {
            defective_with_masks: per_type.values().map(|v| v.0).sum(),
            defective: per_type.values().map(|v| v.1).sum(),
            types_without_masks: per_type
                .iter()
                .filter(|(_, v)| v.0 == 0)
                .map(|(t, _)| t.to_string())
                .collect(),
            types_partly_masked: per_type
                .iter()
                .filter(|(_, v)| v.0 > 0 && v.0 < v.1)
                .map(|(t, _)| t.to_string())
                .collect(),
        }
    }

    /// What the pixel metrics cover, in a sentence (None when every defective image has a mask).
    pub fn note(&self) -> Option<String> {
        if self.defective_with_masks == self.defective {
            return None;
        }
        if self.defective_with_masks == 0 {
            return Some(
                "No ground-truth masks found: image-level metrics only. Pixel AUROC, pixel AP \
                 and AU-PRO need masks as ground_truth/<type>/<name>_mask.png."
                    .into(),
            );
        }
        let mut s = format!(
            "Pixel metrics cover the good images and the {} of {} defective images that have \
             ground-truth masks",
            self.defective_with_masks, self.defective
        );
        if !self.types_without_masks.is_empty() {
            s += &format!(
                "; types without masks (image level only): {}",
                self.types_without_masks.join(", ")
            );
        }
        if !self.types_partly_masked.is_empty() {
            s += &format!(
                "; types with masks for some images only: {}",
                self.types_partly_masked.join(", ")
            );
        }
        Some(s + ".")
    }
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
    /// Which images the pixel metrics cover.
    pub pixel_coverage: PixelCoverage,
    /// Test files that could not be read, each named with its error.
    pub skipped: Vec<SkippedFile>,
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

/// The scored test split.
#[derive(Debug, Clone)]
pub struct ScoredTestSet {
    /// Every readable test image.
    pub items: Vec<ScoredItem>,
    /// Mean detector time per image in milliseconds (batched, without file reading).
    pub ms_per_image: f64,
    /// Unreadable test files (with `--on-bad-image skip`).
    pub skipped: Vec<SkippedFile>,
}

/// Scores every test image with the detector.
pub fn score_test_set(
    det: &Detector,
    ds: &Dataset,
    on_bad: OnBadImage,
    batch: usize,
) -> Result<ScoredTestSet> {
    if ds.test.is_empty() {
        bail!(
            "{}: no test/ folder with images: nothing to evaluate (expected test/good and test/<defect type>)",
            ds.root.display()
        );
    }
    let size = det.map_size() as u32;
    let pb = progress(ds.test.len() as u64, "evaluating");
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut infer_secs = 0.0;
    for chunk in ds.test.chunks(batch) {
        let mut imgs = Vec::new();
        let mut metas = Vec::new();
        for t in chunk {
            let img = match read_rgb(&t.path) {
                Ok(i) => i,
                Err(e) if on_bad == OnBadImage::Skip => {
                    warn(&pb, &format!("skipping {e:#}"));
                    skipped.push(SkippedFile {
                        path: t.path.clone(),
                        error: format!("{e:#}"),
                    });
                    continue;
                }
                Err(e) => return Err(e.context("use --on-bad-image skip to leave such files out")),
            };
            let mask = match &t.mask {
                Some(m) => Some(read_mask(m, size)?.pixels().map(|p| p[0] > 0).collect()),
                None if t.defect_type == "good" => Some(vec![false; (size * size) as usize]),
                None => None,
            };
            imgs.push(rgb_to_tensor(&resize_for(&img, size, det.resize())));
            metas.push((t.path.clone(), t.defect_type.clone(), mask));
        }
        pb.inc(chunk.len() as u64);
        if imgs.is_empty() {
            continue;
        }
        let start = Instant::now();
        if det.resize() == InputResize::Tile {
            // each shape has its own tiles: one image at a time
            for (img, meta) in imgs.iter().zip(metas) {
                items.extend(scored_items(
                    det,
                    &img.unsqueeze(0),
                    vec![meta],
                    size as i64,
                )?);
            }
        } else {
            items.extend(scored_items(
                det,
                &Tensor::stack(&imgs, 0),
                metas,
                size as i64,
            )?);
        }
        infer_secs += start.elapsed().as_secs_f64();
    }
    pb.finish_and_clear();
    if items.is_empty() {
        bail!(
            "{}: none of the {} test images could be read",
            ds.root.display(),
            ds.test.len()
        );
    }
    let ms_per_image = 1000.0 * infer_secs / items.len() as f64;
    Ok(ScoredTestSet {
        items,
        ms_per_image,
        skipped,
    })
}

/// The detector on a batch of same-sized images, described by `metas` (path, defect type, mask)
/// in batch order: per image its fused, flow and classifier maps at `size` x `size` (the masks'
/// grid; tiled images' maps are resized to it) and their image scores, the detector's for the
/// fused map and the same reduction of each branch's map, computed before any resize.
fn scored_items(
    det: &Detector,
    batch: &Tensor,
    metas: Vec<(PathBuf, String, Option<Vec<bool>>)>,
    size: i64,
) -> Result<Vec<ScoredItem>> {
    let q = det.scoring().score_top_fraction;
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
    Ok(metas
        .into_iter()
        .enumerate()
        .map(|(i, (path, defect_type, mask))| ScoredItem {
            path,
            defect_type,
            mask,
            maps: on_grid
                .each_ref()
                .map(|t| Vec::<f32>::try_from(t.get(i as i64).flatten(0, -1)).expect("map")),
            scores: [0, 1, 2].map(|b| scores[b][i]),
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
    // pixel metrics: good images and defective ones with masks, and only if some defect has one
    let masked_items: Vec<&&ScoredItem> = items.iter().filter(|i| i.mask.is_some()).collect();
    let any_defect_mask = masked_items.iter().any(|i| i.is_defective());
    let masked_items = if any_defect_mask {
        masked_items
    } else {
        Vec::new()
    };
    let px: Vec<f32> = masked_items
        .iter()
        .flat_map(|i| i.maps[b].iter().copied())
        .collect();
    let pl: Vec<bool> = masked_items
        .iter()
        .flat_map(|i| i.mask.iter().flatten().copied())
        .collect();
    let masked: Vec<MaskedMap> = masked_items
        .iter()
        .filter_map(|i| {
            Some(MaskedMap {
                scores: &i.maps[b],
                mask: i.mask.as_ref()?,
                width: size,
                height: size,
            })
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

/// All metrics for the scored test split at the detector's thresholds.
pub fn evaluate(set: &ScoredTestSet, size: usize, scoring: &Scoring) -> Evaluation {
    let items = &set.items;
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
        pixel_coverage: PixelCoverage::of(items),
        skipped: set.skipped.clone(),
        inference_ms_per_image: set.ms_per_image,
        curves,
    }
}
