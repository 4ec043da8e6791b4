//! `predict` over folders of real images, and `eval` on test sets without (or with only some)
//! pixel masks: on the demo category and on the real magnetic-tile images.

use clsflow::Detector;
use clsflow_train::data::{Dataset, OnBadImage};
use clsflow_train::demo_data::{DemoCounts, generate};
use clsflow_train::evaluate::{evaluate, score_test_set};
use clsflow_train::predict::{PredictOptions, Save, collect_inputs, predict};
use clsflow_train::report::write_report;
use std::path::{Path, PathBuf};

mod common;
use common::{load_on_cpu, magnetic_tile, tiny_config, train_model};

/// A tiny model trained on `data`, loaded on the CPU.
fn tiny_model(data: &Path, out: &Path) -> Detector {
    load_on_cpu(&train_model(tiny_config(16), data, out))
}

/// Copies the named test folders of a category (and their masks where `with_masks` names the
/// type) into a new category under `dst`; at most `per_type` images per folder.
fn copy_test_split(src: &Path, dst: &Path, types: &[&str], with_masks: &[&str], per_type: usize) {
    for t in types {
        let from = src.join("test").join(t);
        let to = dst.join("test").join(t);
        std::fs::create_dir_all(&to).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().take(per_type) {
            let name = f.file_name().unwrap();
            std::fs::copy(&f, to.join(name)).unwrap();
            if with_masks.contains(t) {
                let stem = f.file_stem().unwrap().to_string_lossy();
                let mask = format!("{stem}_mask.png");
                let gt = dst.join("ground_truth").join(t);
                std::fs::create_dir_all(&gt).unwrap();
                std::fs::copy(src.join("ground_truth").join(t).join(&mask), gt.join(mask)).unwrap();
            }
        }
    }
}

/// Checks one predict run: a JSON line per readable image, masks at each image's own size,
/// normalised scores on the right side of 0.5, and the unreadable file named and skipped.
fn check_predict(det: &Detector, input: &Path, out: &Path, expected_images: usize) {
    let files = collect_inputs(&[input.display().to_string()]).unwrap();
    let options = PredictOptions {
        save: vec![Save::All],
        batch_size: 3,
        min_region_area: 4,
    };
    let summary = predict(det, &files, out, &options).unwrap();
    assert_eq!(summary.predictions.len(), expected_images);
    assert_eq!(summary.skipped.len(), 1, "the corrupt file is skipped");
    assert!(summary.skipped[0].path.ends_with("broken.png"));
    let lines = std::fs::read_to_string(&summary.jsonl).unwrap();
    assert_eq!(lines.lines().count(), expected_images);
    for (line, p) in lines.lines().zip(&summary.predictions) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["path", "score", "normalized_score", "anomalous", "regions"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        let n = p.normalized_score;
        assert!((0.0..=1.0).contains(&n));
        assert_eq!(p.anomalous, n > 0.5, "{line}");
        assert_eq!(p.outputs.len(), 3);
        let img = image::open(&p.path).unwrap();
        for o in &p.outputs {
            assert!(
                o.starts_with(out),
                "{} under the output folder",
                o.display()
            );
            let written = image::open(o).unwrap();
            assert_eq!(
                (written.width(), written.height()),
                (img.width(), img.height()),
                "{} at the image's own size",
                o.display()
            );
        }
        let mask = image::open(&p.outputs[1]).unwrap().to_luma8();
        assert!(
            mask.pixels().all(|q| q[0] == 0 || q[0] == 255),
            "binary mask"
        );
        for r in &p.regions {
            assert!(r.region.x + r.region.width <= img.width());
            assert!(r.region.y + r.region.height <= img.height());
            assert!(
                r.normalized_score > 0.5,
                "regions are above their threshold"
            );
        }
    }
}

#[test]
fn predict_and_maskless_eval_on_the_demo_category() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("plates");
    let counts = DemoCounts {
        train: 16,
        test_good: 3,
        per_defect: 2,
    };
    generate(&data, counts, 5).unwrap();
    let det = tiny_model(&data, &dir.path().join("run"));

    // a folder searched recursively, with one corrupt file among the images
    std::fs::write(data.join("test/good/broken.png"), b"not a png").unwrap();
    check_predict(&det, &data.join("test"), &dir.path().join("predicted"), 9);
    // outputs keep the folder structure, so equal file names in two folders do not collide
    assert!(dir.path().join("predicted/crack/000.overlay.png").is_file());
    assert!(dir.path().join("predicted/good/000.overlay.png").is_file());
    std::fs::remove_file(data.join("test/good/broken.png")).unwrap();

    // a glob, and --save mask alone
    let files = collect_inputs(&[format!("{}/test/*/00[01].png", data.display())]).unwrap();
    assert_eq!(files.len(), 8);
    let out = dir.path().join("masks-only");
    let options = PredictOptions {
        save: vec![Save::Mask],
        batch_size: 8,
        min_region_area: 4,
    };
    let s = predict(&det, &files, &out, &options).unwrap();
    assert!(s.predictions.iter().all(|p| p.outputs.len() == 1));
    assert!(out.join("good/000.mask.png").is_file() && !out.join("good/000.heatmap.png").exists());
    let err = collect_inputs(&["/no/such/folder".into()]).unwrap_err();
    assert!(format!("{err:#}").contains("/no/such/folder"), "{err:#}");

    // eval on good / defective folders without any mask: image level only, said plainly
    let bare = dir.path().join("bare");
    copy_test_split(&data, &bare, &["good", "crack", "stain"], &[], 10);
    let ds = Dataset::open_test(&bare).unwrap();
    let set = score_test_set(&det, &ds, OnBadImage::Fail, 4).unwrap();
    let eval = evaluate(&set, det.map_size(), det.scoring());
    let fused = &eval.branches["fused"];
    assert!(fused.image_auroc.is_some());
    assert!(fused.pixel_auroc.is_none() && fused.au_pro.is_none() && fused.pixel_ap.is_none());
    assert!(eval.decisions.recall.is_some());
    let note = eval.pixel_coverage.note().unwrap();
    assert!(note.contains("need masks"), "{note}");
    let report = dir.path().join("report");
    write_report(
        &report,
        "t",
        &eval,
        &set.items,
        det.map_size(),
        serde_json::json!({}),
    )
    .unwrap();
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("need masks") && md.contains("n/a"), "{md}");

    // masks for one defect type only: pixel metrics cover that type and say so
    let some = dir.path().join("some-masks");
    copy_test_split(&data, &some, &["good", "crack", "stain"], &["crack"], 10);
    let ds = Dataset::open_test(&some).unwrap();
    let set = score_test_set(&det, &ds, OnBadImage::Fail, 4).unwrap();
    let eval = evaluate(&set, det.map_size(), det.scoring());
    assert!(eval.branches["fused"].pixel_auroc.is_some());
    assert!(eval.per_defect_type["crack"]["fused"].au_pro.is_some());
    assert!(eval.per_defect_type["stain"]["fused"].au_pro.is_none());
    assert!(eval.per_defect_type["stain"]["fused"].image_auroc.is_some());
    let note = eval.pixel_coverage.note().unwrap();
    assert!(note.contains("2 of 4") && note.contains("stain"), "{note}");
}

#[test]
fn predict_and_maskless_eval_on_real_magnetic_tile_images() {
    let Some(root) = magnetic_tile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let det = tiny_model(&root, &dir.path().join("run"));

    // real images of many sizes and shapes
    let input = dir.path().join("images");
    copy_test_split(&root, &input, &["good", "crack", "blowhole"], &[], 3);
    std::fs::write(input.join("test/crack/broken.png"), b"\x89PNG truncated").unwrap();
    check_predict(&det, &input.join("test"), &dir.path().join("predicted"), 9);
    std::fs::remove_file(input.join("test/crack/broken.png")).unwrap();

    // eval without masks, and without a train/ folder
    let ds = Dataset::open_test(&input).unwrap();
    assert!(ds.train.is_empty());
    let set = score_test_set(&det, &ds, OnBadImage::Fail, 4).unwrap();
    assert_eq!(set.items.len(), 9);
    let eval = evaluate(&set, det.map_size(), det.scoring());
    assert!(eval.branches["fused"].image_auroc.is_some());
    assert!(eval.branches["fused"].pixel_auroc.is_none());
    assert_eq!(eval.counts, (3, 6));
}
