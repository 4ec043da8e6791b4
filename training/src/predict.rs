//! `clsflow-train predict`: a trained model over an image, a folder (recursively) or a glob.
//! One JSON line per image (path, size, score, normalised score, verdict, regions) in
//! `predictions.jsonl`, and per image a heatmap, a binary mask and an overlay PNG at the image's
//! own size, under the output folder in the inputs' folder structure.

use crate::data::{IMAGE_EXTENSIONS, SkippedFile, is_image, progress, read_rgb, warn};
use crate::report::{save_gray_png, save_png};
use anyhow::{Context, Result, bail};
use clsflow::checkpoint::write_atomic;
use clsflow::colormap::{self, HeatScale};
use clsflow::draw::{self, Canvas, OverlayStyle};
use clsflow::regions::{FrameRegion, frame_regions, threshold_mask};
use clsflow::{Detection, Detector};
use image::RgbImage;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Which images `predict` writes per input image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Save {
    /// Only the JSON lines.
    None,
    /// The fused anomaly map as a colour image.
    Heatmap,
    /// The defect mask: white where the fused map is above the region threshold.
    Mask,
    /// The image with the heatmap, region boxes and verdict drawn on it.
    Overlay,
    /// Heatmap, mask and overlay.
    All,
}

/// Settings of a `predict` run.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Images written per input image.
    pub save: Vec<Save>,
    /// Images per detector call.
    pub batch_size: usize,
    /// Smallest region reported, in map pixels (as the element's `min-region-area`).
    pub min_region_area: u32,
}

impl PredictOptions {
    fn saves(&self, what: Save) -> bool {
        !self.save.contains(&Save::None)
            && (self.save.contains(&what) || self.save.contains(&Save::All))
    }
}

/// A defect region in image pixels, with its confidence.
#[derive(Debug, Clone, Serialize)]
pub struct PredictedRegion {
    /// Box, area and fused-map values.
    #[serde(flatten)]
    pub region: FrameRegion,
    /// The region's largest value normalised: 0.5 at the region threshold.
    pub normalized_score: f64,
}

/// What `predict` found in one image (one line of `predictions.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Raw image score (the element's `score`).
    pub score: f64,
    /// Score in [0, 1], 0.5 at the calibrated threshold.
    pub normalized_score: f64,
    /// Verdict: score above the threshold.
    pub anomalous: bool,
    /// The image-score threshold (raw units).
    pub threshold: f64,
    /// Defect regions, largest value first, in image pixels.
    pub regions: Vec<PredictedRegion>,
    /// Images written for this one.
    pub outputs: Vec<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct PredictSummary {
    /// One per readable image, in input order.
    pub predictions: Vec<Prediction>,
    /// Unreadable files, each named with its error.
    pub skipped: Vec<SkippedFile>,
    /// The JSON lines file.
    pub jsonl: PathBuf,
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Image files under `dir`, recursively, sorted.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The images that the inputs name: files as given, folders recursively, globs expanded.
pub fn collect_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let p = Path::new(input);
        let before = files.len();
        if p.is_dir() {
            walk(p, &mut files)?;
        } else if p.is_file() {
            files.push(p.to_path_buf());
        } else if has_glob_chars(input) {
            let paths = glob::glob(input).with_context(|| format!("invalid pattern {input:?}"))?;
            for entry in paths {
                let path = entry.with_context(|| format!("while expanding {input:?}"))?;
                if path.is_dir() {
                    walk(&path, &mut files)?;
                } else if path.is_file() {
                    files.push(path);
                }
            }
        } else {
            bail!("{input}: no such file or folder");
        }
        if files.len() == before {
            bail!(
                "{input}: no image files (extensions {})",
                IMAGE_EXTENSIONS.join(", ")
            );
        }
    }
    Ok(files)
}

/// The deepest folder that holds every file, so that outputs keep the inputs' structure.
fn common_parent(files: &[PathBuf]) -> PathBuf {
    let abs: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let mut root = abs[0].parent().map(Path::to_path_buf).unwrap_or_default();
    while !abs.iter().all(|f| f.starts_with(&root)) {
        if !root.pop() {
            break;
        }
    }
    root
}

/// Runs the detector over `files` and writes the results under `out`.
pub fn predict(
    det: &Detector,
    files: &[PathBuf],
    out: &Path,
    options: &PredictOptions,
) -> Result<PredictSummary> {
    if files.is_empty() {
        bail!("no images to predict on");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let root = common_parent(files);
    let font = if options.saves(Save::Overlay) {
        draw::load_font(draw::DEFAULT_FONT)
            .map_err(|e| eprintln!("warning: overlays without the caption: {e}"))
            .ok()
    } else {
        None
    };
    let pb = progress(files.len() as u64, "predicting");
    let mut predictions = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for chunk in files.chunks(options.batch_size.max(1)) {
        let mut images = Vec::new();
        let mut paths = Vec::new();
        for path in chunk {
            match read_rgb(path) {
                Ok(img) => {
                    images.push(img);
                    paths.push(path);
                }
                Err(e) => {
                    warn(&pb, &format!("skipping {e:#}"));
                    skipped.push(SkippedFile {
                        path: path.clone(),
                        error: format!("{e:#}"),
                    });
                }
            }
        }
        let detections = det.detect(&images)?;
        for ((path, img), d) in paths.into_iter().zip(&images).zip(detections) {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let stem = out.join(abs.strip_prefix(&root).unwrap_or(&abs));
            predictions.push(one_image(det, path, img, d, &stem, options, font.as_ref())?);
            pb.inc(1);
        }
        pb.inc((chunk.len() - images.len()) as u64);
    }
    pb.finish_and_clear();
    let mut lines = String::new();
    for p in &predictions {
        lines += &serde_json::to_string(p)?;
        lines.push('\n');
    }
    let jsonl = out.join("predictions.jsonl");
    write_atomic(&jsonl, lines.as_bytes())?;
    Ok(PredictSummary {
        predictions,
        skipped,
        jsonl,
    })
}

/// `stem` with `.<what>.png` in place of the image's extension.
fn output_path(stem: &Path, what: &str) -> PathBuf {
    stem.with_extension(format!("{what}.png"))
}

/// Regions, verdict and the images of one detection.
fn one_image(
    det: &Detector,
    path: &Path,
    img: &RgbImage,
    d: Detection,
    stem: &Path,
    options: &PredictOptions,
    font: Option<&ab_glyph::FontArc>,
) -> Result<Prediction> {
    let scoring = det.scoring();
    let (w, h) = img.dimensions();
    let region_threshold = scoring.region_threshold as f32;
    let regions = frame_regions(&d.fused, region_threshold, options.min_region_area, w, h);
    let mut outputs = Vec::new();
    if options.saves(Save::Heatmap) || options.saves(Save::Mask) || options.saves(Save::Overlay) {
        let map = d.fused.resized(w as usize, h as usize);
        if options.saves(Save::Heatmap) {
            let scale = HeatScale::of_map(&map.data, region_threshold);
            let p = output_path(stem, "heatmap");
            save_png(
                &colormap::render(&map.data, map.width, map.height, scale),
                &p,
            )?;
            outputs.push(p);
        }
        if options.saves(Save::Mask) {
            let p = output_path(stem, "mask");
            save_gray_png(&threshold_mask(&map, region_threshold), &p)?;
            outputs.push(p);
        }
        if options.saves(Save::Overlay) {
            let mut overlay = img.clone();
            let mut canvas = Canvas::of_rgb(&mut overlay);
            let style = OverlayStyle::default();
            let boxes: Vec<_> = regions.iter().map(FrameRegion::rect).collect();
            draw::paint(&mut canvas, &map, region_threshold, &boxes, &style);
            if let Some(font) = font {
                let text = draw::caption(
                    d.anomalous,
                    f64::from(d.score),
                    scoring.threshold,
                    regions.len(),
                );
                let colour = if d.anomalous {
                    style.line_colour
                } else {
                    [255, 255, 255]
                };
                draw::draw_caption(&mut canvas, font, &text, colour);
            }
            let p = output_path(stem, "overlay");
            save_png(&overlay, &p)?;
            outputs.push(p);
        }
    }
    Ok(Prediction {
        path: path.to_path_buf(),
        width: w,
        height: h,
        score: d.score.into(),
        normalized_score: scoring.normalized_score(d.score.into()),
        anomalous: d.anomalous,
        threshold: scoring.threshold,
        regions: regions
            .into_iter()
            .map(|r| PredictedRegion {
                normalized_score: scoring.normalized_region_score(r.max_score.into()),
                region: r,
            })
            .collect(),
        outputs,
    })
}
