//! Reports: JSON (machine-readable), Markdown (people), PNG figures (ROC and PRO curves, a sheet
//! of test images with ground truth, heatmap and predicted regions). Every file is written
//! atomically, so a failed run leaves an earlier report intact.

use crate::evaluate::{BRANCHES, BranchMetrics, Evaluation, ScoredItem};
use anyhow::{Context, Result};
use clsflow::checkpoint::write_atomic;
use clsflow::colormap::{self, HeatScale};
use clsflow::detector::AnomalyMap;
use clsflow::regions::find_regions;
use image::{Rgb, RgbImage};
use imageproc::drawing::draw_hollow_rect_mut;
use imageproc::rect::Rect;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Font used for figure text (Debian fonts-dejavu-core).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", 100.0 * x))
        .unwrap_or_else(|| "n/a".into())
}

fn row(name: &str, m: &BranchMetrics) -> String {
    format!(
        "| {name} | {} | {} | {} | {} |\n",
        pct(m.image_auroc),
        pct(m.pixel_auroc),
        pct(m.pixel_ap),
        pct(m.au_pro)
    )
}

/// When the flow branch alone does better than the fused map on the test images (at least as
/// well on every metric both have, by half a point or more on one of image AUROC, pixel AUROC
/// and AU-PRO): a note that says so and how to make the flow branch the detector. It means
/// the classifier does not transfer to the category (say, the parts' own lines look like its
/// synthetic defects), which calibration cannot see, as it has no real defects.
pub fn flow_alone_note(branches: &BTreeMap<String, BranchMetrics>) -> Option<String> {
    let (flow, fused) = (branches.get("flow")?, branches.get("fused")?);
    let pairs: Vec<(&str, f64, f64)> = [
        ("image AUROC", flow.image_auroc, fused.image_auroc),
        ("pixel AUROC", flow.pixel_auroc, fused.pixel_auroc),
        ("AU-PRO", flow.au_pro, fused.au_pro),
    ]
    .into_iter()
    .filter_map(|(name, a, b)| Some((name, a?, b?)))
    .collect();
    let better = !pairs.is_empty()
        && pairs.iter().all(|&(_, a, b)| a >= b)
        && pairs.iter().any(|&(_, a, b)| a - b >= 0.005);
    if !better {
        return None;
    }
    let figures: Vec<String> = pairs
        .iter()
        .map(|&(name, a, b)| format!("{name} {} against {}", pct(Some(a)), pct(Some(b))))
        .collect();
    Some(format!(
        "The flow branch alone does better than the fused map on these test images ({}): the \
         classifier does not seem to transfer to this category. To make the flow branch the \
         detector without training again: clsflow-train recalibrate --run RUN --out NEW \
         --fusion-weight 0 --score-weight 0 (RUN: the training run's folder).",
        figures.join(", ")
    ))
}

/// The Markdown report.
pub fn markdown(title: &str, eval: &Evaluation, extra: &serde_json::Value) -> String {
    let mut s = format!("# {title}\n\n");
    s += &format!(
        "Test images: {} good, {} defective. Inference {:.1} ms/image (batched, this machine).\n\n",
        eval.counts.0, eval.counts.1, eval.inference_ms_per_image
    );
    if let Some(note) = eval.pixel_coverage.note() {
        s += &format!("{note}\n\n");
    }
    if !eval.skipped.is_empty() {
        s += &format!("{} file(s) skipped (unreadable):\n\n", eval.skipped.len());
        for f in &eval.skipped {
            s += &format!("- `{}`: {}\n", f.path.display(), f.error);
        }
        s += "\n";
    }
    s +=
        "| branch | image AUROC | pixel AUROC | pixel AP | AU-PRO (0.3) |\n|---|---|---|---|---|\n";
    for b in BRANCHES {
        s += &row(b, &eval.branches[b]);
    }
    if let Some(note) = flow_alone_note(&eval.branches) {
        s += &format!("\n**{note}**\n");
    }
    if let (Some(w), Some(ws)) = (
        extra["fusion_weight"].as_f64(),
        extra["score_weight"].as_f64(),
    ) {
        let reference = match extra["tap_reference"].as_str() {
            Some("position") => ", each position first centred on the training images' mean there",
            _ => "",
        };
        let reduce = match extra["score_top_fraction"].as_f64() {
            Some(q) if q > 0.0 => format!("mean of the largest {} % of", 100.0 * q),
            _ => "max of".into(),
        };
        s += &format!(
            "\nFlow map: the paper's sum of the taps' likelihoods{reference}. Fused: map = flow + {w} x classifier (pixel metrics, regions); image score = {reduce} flow + {ws} x classifier (every branch's image score uses the same reduction).\n"
        );
    }
    let d = &eval.decisions;
    s += &format!(
        "\nAt the calibrated threshold {:.4} (fused image score): precision {}, recall {}, good images flagged {} ({} flagged in all).\n",
        d.threshold,
        pct(d.precision),
        pct(d.recall),
        pct(d.false_positive_rate),
        d.flagged
    );
    s += "\n## Per defect type (that type's images and all good images)\n\n";
    s += "| type | branch | image AUROC | pixel AUROC | pixel AP | AU-PRO (0.3) |\n|---|---|---|---|---|---|\n";
    for (t, per) in &eval.per_defect_type {
        for b in BRANCHES {
            s += &format!("| {t} {}", row(b, &per[b]));
        }
    }
    s += &format!(
        "\n## Run\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(extra).unwrap_or_default()
    );
    s += "\nFigures: `roc.png` (image-level ROC), `pro.png` (PRO curves to FPR 0.3), `samples.png` \
          (per row: image, ground truth, fused heatmap, predicted regions).\n";
    s
}

fn encode_png(img: &image::DynamicImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

/// Writes an RGB PNG atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    Ok(write_atomic(
        path,
        &encode_png(&image::DynamicImage::ImageRgb8(img.clone()))?,
    )?)
}

/// Writes a greyscale PNG atomically.
pub fn save_gray_png(img: &image::GrayImage, path: &Path) -> Result<()> {
    Ok(write_atomic(
        path,
        &encode_png(&image::DynamicImage::ImageLuma8(img.clone()))?,
    )?)
}

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        std::fs::read(FONT)
            .ok()
            .map(|b| {
                plotters::style::register_font(
                    "sans-serif",
                    FontStyle::Normal,
                    Box::leak(b.into_boxed_slice()),
                )
                .is_ok()
            })
            .unwrap_or(false)
    });
    anyhow::ensure!(ok, "font {FONT} missing (Debian package fonts-dejavu-core)");
    Ok(())
}

/// Line plot of one curve per branch.
fn curve_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_max: f64,
    curves: &[(&str, &[(f64, f64)])],
) -> Result<RgbImage> {
    register_font()?;
    let (w, h) = (640u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        let colours = [RED, BLUE, GREEN];
        for (i, (name, pts)) in curves.iter().enumerate() {
            let c = colours[i % 3];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("buffer size"))
}

/// A sheet of test images: up to `per_type` per defect type and good; per row image, ground
/// truth, fused heatmap (scaled so the threshold sits mid-range), predicted regions.
pub fn sample_sheet(
    items: &[ScoredItem],
    size: usize,
    threshold: f32,
    per_type: usize,
) -> Result<RgbImage> {
    let mut chosen: Vec<&ScoredItem> = Vec::new();
    let mut types: Vec<&str> = items.iter().map(|i| i.defect_type.as_str()).collect();
    types.dedup();
    for t in types {
        chosen.extend(items.iter().filter(|i| i.defect_type == t).take(per_type));
    }
    let s = size as u32;
    let gap = 4;
    let lo = items
        .iter()
        .filter(|i| !i.is_defective())
        .flat_map(|i| i.maps[0].iter().copied())
        .fold(f32::INFINITY, f32::min);
    // one scale for the whole sheet (the good images' smallest value at the bottom), so rows
    // can be compared
    let scale = HeatScale::new(lo, threshold);
    let mut sheet = RgbImage::from_pixel(
        4 * s + 5 * gap,
        chosen.len() as u32 * (s + gap) + gap,
        Rgb([40, 40, 40]),
    );
    for (r, item) in chosen.iter().enumerate() {
        let y = (gap + r as u32 * (s + gap)) as i64;
        let img = crate::data::resize_rgb(&crate::data::read_rgb(&item.path)?, s);
        image::imageops::replace(&mut sheet, &img, gap as i64, y);
        // ground truth: white on black; mid grey where the image has no mask
        let gt = RgbImage::from_fn(s, s, |x, yy| match &item.mask {
            Some(m) if m[(yy * s + x) as usize] => Rgb([255, 255, 255]),
            Some(_) => Rgb([0, 0, 0]),
            None => Rgb([96, 96, 96]),
        });
        image::imageops::replace(&mut sheet, &gt, (2 * gap + s) as i64, y);
        let heat = colormap::render(&item.maps[0], size, size, scale);
        image::imageops::replace(&mut sheet, &heat, (3 * gap + 2 * s) as i64, y);
        let mut boxed = img.clone();
        let map = AnomalyMap {
            width: size,
            height: size,
            data: item.maps[0].clone(),
        };
        for reg in find_regions(&map, threshold, 4) {
            let rect = Rect::at(reg.x as i32, reg.y as i32).of_size(reg.width, reg.height);
            draw_hollow_rect_mut(&mut boxed, rect, Rgb([255, 0, 0]));
        }
        image::imageops::replace(&mut sheet, &boxed, (4 * gap + 3 * s) as i64, y);
    }
    Ok(sheet)
}

/// Writes report.json, report.md, roc.png, pro.png and samples.png into `dir`; returns the paths.
pub fn write_report(
    dir: &Path,
    title: &str,
    eval: &Evaluation,
    items: &[ScoredItem],
    size: usize,
    extra: serde_json::Value,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut json = serde_json::to_value(eval)?;
    json["run"] = extra.clone();
    let p = dir.join("report.json");
    write_atomic(&p, serde_json::to_string_pretty(&json)?.as_bytes())?;
    written.push(p);
    let p = dir.join("report.md");
    write_atomic(&p, markdown(title, eval, &extra).as_bytes())?;
    written.push(p);
    let p = dir.join("scores.csv");
    write_atomic(&p, scores_csv(items, eval.decisions.threshold).as_bytes())?;
    written.push(p);
    let roc: Vec<(&str, &[(f64, f64)])> = BRANCHES
        .iter()
        .filter_map(|b| eval.curves.get(*b).map(|c| (*b, c.0.as_slice())))
        .collect();
    let pro: Vec<(&str, &[(f64, f64)])> = BRANCHES
        .iter()
        .filter_map(|b| eval.curves.get(*b).map(|c| (*b, c.1.as_slice())))
        .collect();
    match curve_plot(
        "Image-level ROC",
        "false positive rate",
        "true positive rate",
        1.0,
        &roc,
    )
    .and_then(|a| {
        Ok((
            a,
            curve_plot(
                "Per-region overlap",
                "false positive rate",
                "PRO",
                0.3,
                &pro,
            )?,
        ))
    }) {
        Ok((a, b)) => {
            for (img, name) in [(a, "roc.png"), (b, "pro.png")] {
                let p = dir.join(name);
                save_png(&img, &p)?;
                written.push(p);
            }
        }
        Err(e) => eprintln!("warning: curve figures skipped: {e:#}"),
    }
    let p = dir.join("samples.png");
    save_png(
        &sample_sheet(items, size, eval.decisions.region_threshold as f32, 3)?,
        &p,
    )?;
    written.push(p);
    Ok(written)
}

/// One line per test image: its path, defect type, the three image scores and whether the
/// fused score passes the threshold (which images were flagged, for a user to look at).
fn scores_csv(items: &[ScoredItem], threshold: f64) -> String {
    let mut s = String::from("path,defect_type,fused,flow,classifier,anomalous\n");
    for i in items {
        let path = i.path.display().to_string();
        // a comma or quote in a path is quoted as CSV does
        let path = if path.contains([',', '"']) {
            format!("\"{}\"", path.replace('"', "\"\""))
        } else {
            path
        };
        s += &format!(
            "{path},{},{},{},{},{}\n",
            i.defect_type,
            i.scores[0],
            i.scores[1],
            i.scores[2],
            f64::from(i.scores[0]) > threshold
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_csv_has_a_line_per_image_with_its_verdict() {
        let item = |path: &str, t: &str, score: f32| ScoredItem {
            path: path.into(),
            defect_type: t.into(),
            mask: None,
            maps: [Vec::new(), Vec::new(), Vec::new()],
            scores: [score, 0.5, 0.25],
        };
        let csv = scores_csv(
            &[
                item("a/good/1.png", "good", 1.0),
                item("b,c.png", "crack", 3.0),
            ],
            2.0,
        );
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "path,defect_type,fused,flow,classifier,anomalous");
        assert_eq!(lines[1], "a/good/1.png,good,1,0.5,0.25,false");
        assert_eq!(lines[2], "\"b,c.png\",crack,3,0.5,0.25,true");
    }

    fn branches(
        flow: [Option<f64>; 3],
        fused: [Option<f64>; 3],
    ) -> BTreeMap<String, BranchMetrics> {
        let m = |[i, p, a]: [Option<f64>; 3]| BranchMetrics {
            image_auroc: i,
            pixel_auroc: p,
            pixel_ap: None,
            au_pro: a,
        };
        BTreeMap::from([
            ("flow".to_string(), m(flow)),
            ("fused".to_string(), m(fused)),
        ])
    }

    #[test]
    fn a_flow_branch_above_the_fused_map_is_pointed_out() {
        // the accuracy issue's category: the flow branch above on every metric
        let note = flow_alone_note(&branches(
            [Some(0.852), Some(0.923), Some(0.561)],
            [Some(0.832), Some(0.919), Some(0.550)],
        ))
        .expect("a note");
        assert!(note.contains("image AUROC 85.2 against 83.2"), "{note}");
        assert!(
            note.contains("--fusion-weight 0 --score-weight 0"),
            "{note}"
        );
        // image level only (no masks)
        assert!(
            flow_alone_note(&branches(
                [Some(0.95), None, None],
                [Some(0.94), None, None]
            ))
            .is_some()
        );
        // the fused map ahead on one metric, or level within half a point: no note
        assert!(
            flow_alone_note(&branches(
                [Some(0.90), Some(0.80), Some(0.74)],
                [Some(0.91), Some(0.78), Some(0.73)],
            ))
            .is_none()
        );
        assert!(
            flow_alone_note(&branches(
                [Some(0.946), None, None],
                [Some(0.945), None, None]
            ))
            .is_none()
        );
        assert!(flow_alone_note(&branches([None; 3], [None; 3])).is_none());
    }
}
