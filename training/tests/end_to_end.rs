//! A tiny real end-to-end run: train on a handful of real magnetic-tile images (or the demo
//! category when ../shared is absent), checkpoint, resume, evaluate, report.

use clsflow_train::config::TrainConfig;
use clsflow_train::data::{Dataset, OnBadImage};
use clsflow_train::demo_data::{DemoCounts, generate};
use clsflow_train::evaluate::{evaluate, score_test_set};
use clsflow_train::report::write_report;
use clsflow_train::train::{MODEL, Start, train};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

mod common;
use common::{load_on_cpu, magnetic_tile, repo, tiny_config};

fn tiny() -> TrainConfig {
    let mut cfg = tiny_config(16);
    cfg.model.weights = Some(repo().join("models/efficientnet_lite0.safetensors"));
    cfg
}

#[test]
fn train_resume_evaluate_report_on_demo_category() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    generate(
        &data,
        DemoCounts {
            train: 16,
            test_good: 4,
            per_defect: 2,
        },
        3,
    )
    .unwrap();
    let out = dir.path().join("run");
    let stop = Arc::new(AtomicBool::new(false));
    let r = train(tiny(), &data, &out, Start::Fresh, stop.clone()).unwrap();
    assert!(
        r.model.exists() && out.join("last.clsflow").exists() && out.join("state.json").exists()
    );
    assert_eq!(r.state.stage1_losses.len(), 2);
    assert!(r.state.stage2_losses.iter().all(|l| l.len() == 2));
    assert!(
        r.state
            .stage1_losses
            .iter()
            .all(|l| l.is_finite() && *l > 0.0)
    );
    let cal = &r.calibration;
    assert!(
        cal.candidates.len() == 2,
        "both candidate weights were scored"
    );
    assert!(
        cal.scoring.threshold >= cal.holdout_scores.iter().copied().fold(f32::MIN, f32::max) as f64
    );
    // both weights are candidates, each chosen by its own rule from the scored candidates
    let w: Vec<f64> = cal.candidates.iter().map(|c| c.fusion_weight).collect();
    assert!(w.contains(&cal.scoring.fusion_weight) && w.contains(&cal.scoring.score_weight));
    let best_image = cal
        .candidates
        .iter()
        .map(|c| c.image_auroc)
        .fold(f64::MIN, f64::max);
    let chosen = cal
        .candidates
        .iter()
        .find(|c| c.fusion_weight == cal.scoring.score_weight)
        .unwrap();
    // within one standard error of the best validation AUROC, and never less than
    // the fixed tolerance
    let se = clsflow::metrics::auroc_standard_error(
        best_image,
        cal.synthetic_defects,
        cal.holdout_images,
    )
    .unwrap();
    assert!(cal.score_weight_tolerance >= 0.005 && cal.score_weight_tolerance >= se - 1e-12);
    assert!(chosen.image_auroc >= best_image - cal.score_weight_tolerance);
    assert!(cal.scoring.region_threshold.is_finite());

    // the joint epoch trained the extractor (it runs unfolded there, folded in the decoder-only
    // epoch and after stage 1), and its running statistics stayed as loaded
    let (trained, _) = clsflow::checkpoint::load(&out.join(MODEL), tch::Device::Cpu).unwrap();
    let imagenet: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(repo().join("models/efficientnet_lite0.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let (mut moved, mut compared) = (0, 0);
    for (name, t) in trained.named_variables() {
        let Some(r) = name.strip_prefix("backbone.").and_then(|k| imagenet.get(k)) else {
            continue;
        };
        compared += 1;
        let same = t.equal(r);
        if name.ends_with(".running_mean") || name.ends_with(".running_var") {
            assert!(same, "{name}: a running statistic changed");
        } else if !same {
            moved += 1;
        }
    }
    assert!(
        compared > 100,
        "only {compared} extractor tensors matched ImageNet names"
    );
    assert!(
        moved > 0,
        "the joint epoch left every extractor weight as loaded"
    );

    // resuming a finished run redoes no epoch and gives the same calibrated model
    let again = train(tiny(), &data, &out, Start::Resume, stop).unwrap();
    assert_eq!(again.state.stage1_losses, r.state.stage1_losses);

    let det = load_on_cpu(&out.join(MODEL));
    assert_eq!(det.manifest().name, "demo");
    assert!(det.manifest().training.is_some());
    let ds = Dataset::open(&data).unwrap();
    let set = score_test_set(&det, &ds, OnBadImage::Fail, 4).unwrap();
    assert_eq!(set.items.len(), 10);
    assert!(set.ms_per_image > 0.0);
    let eval = evaluate(&set, det.map_size(), det.scoring());
    assert!(
        eval.pixel_coverage.note().is_none(),
        "every defect has a mask"
    );
    for b in ["fused", "flow", "classifier"] {
        let m = &eval.branches[b];
        for v in [m.image_auroc, m.pixel_auroc, m.pixel_ap, m.au_pro] {
            let v = v.expect("defined with good and defective images");
            assert!((0.0..=1.0).contains(&v), "{b}: {v}");
        }
    }
    assert_eq!(eval.per_defect_type.len(), 3);
    let files = write_report(
        &dir.path().join("report"),
        "t",
        &eval,
        &set.items,
        det.map_size(),
        serde_json::json!({}),
    )
    .unwrap();
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() > 100,
            "{} written",
            f.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report/report.json")).unwrap())
            .unwrap();
    assert!(json["branches"]["fused"]["au_pro"].is_number());
    // every Markdown table row has as many cells as its header
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    let mut columns = 0;
    for line in md.lines().filter(|l| l.starts_with('|')) {
        let cells = line.matches('|').count();
        if line.contains("image AUROC") {
            columns = cells;
        }
        assert_eq!(cells, columns, "row does not fit its header: {line}");
    }
    assert!(
        md.contains("| fused |") && columns == 7,
        "per-type table: type | branch | 4 metrics"
    );
}

#[test]
fn resume_without_state_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    generate(
        &data,
        DemoCounts {
            train: 2,
            test_good: 0,
            per_defect: 0,
        },
        3,
    )
    .unwrap();
    let err = train(
        tiny(),
        &data,
        &dir.path().join("run"),
        Start::Resume,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("nothing to resume"), "{err:#}");
}

#[test]
fn an_interrupted_run_saves_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    generate(
        &data,
        DemoCounts {
            train: 8,
            test_good: 0,
            per_defect: 0,
        },
        5,
    )
    .unwrap();
    let out = dir.path().join("run");
    // the stop flag is already raised: the first step notices it, saves, and reports how to resume
    let err = train(
        tiny(),
        &data,
        &out,
        Start::Fresh,
        Arc::new(AtomicBool::new(true)),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
    assert!(out.join("state.json").exists() && out.join("last.clsflow").exists());
    let r = train(
        tiny(),
        &data,
        &out,
        Start::Resume,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert_eq!(r.state.stage1_done, 2);
}

#[test]
fn data_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    // a missing folder is reported as missing, a file as not being a folder
    let err = Dataset::open(&dir.path().join("missing")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("missing") && msg.contains("No such file"),
        "{msg}"
    );
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let err = Dataset::open(&dir.path().join("file")).unwrap_err();
    assert!(format!("{err:#}").contains("not a folder"), "{err:#}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("train/good")).unwrap();
    let err = Dataset::open(&empty).unwrap_err();
    assert!(format!("{err:#}").contains("no images"), "{err:#}");
    // a defective test image without its mask
    let d = dir.path().join("nomask");
    generate(
        &d,
        DemoCounts {
            train: 1,
            test_good: 0,
            per_defect: 1,
        },
        1,
    )
    .unwrap();
    // a defective test image without its mask counts at image level only
    std::fs::remove_file(d.join("ground_truth/crack/000_mask.png")).unwrap();
    let ds = Dataset::open(&d).unwrap();
    let crack = ds.test.iter().find(|t| t.defect_type == "crack").unwrap();
    assert!(crack.mask.is_none());
    assert!(
        ds.test.iter().any(|t| t.mask.is_some()),
        "the other types keep theirs"
    );
    // unreadable image: skipped with --on-bad-image skip, fatal with fail
    let bad = dir.path().join("plain");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("broken.png"), b"not a png").unwrap();
    image::RgbImage::new(8, 8).save(bad.join("ok.png")).unwrap();
    let ds = Dataset::open(&bad).unwrap();
    assert!(
        ds.test.is_empty() && ds.train.len() == 2,
        "plain folder of good images"
    );
    let ok = clsflow_train::data::load_images(&ds.train, 32, OnBadImage::Skip, "t").unwrap();
    assert_eq!(ok.images.len(), 1);
    assert!(ok.skipped[0].path.ends_with("broken.png"));
    let err = clsflow_train::data::load_images(&ds.train, 32, OnBadImage::Fail, "t").unwrap_err();
    assert!(format!("{err:#}").contains("broken.png"), "{err:#}");
}

#[test]
fn real_images_of_any_channel_count_load() {
    let Some(root) = magnetic_tile() else {
        return;
    };
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.train.len(), 762);
    assert_eq!(ds.test.len(), 582);
    assert_eq!(ds.test.iter().filter(|t| t.mask.is_some()).count(), 392);
    // grayscale JPEGs of varying size become RGB at the model size
    let imgs = clsflow_train::data::load_images(&ds.train[..3], 64, OnBadImage::Fail, "t").unwrap();
    assert!(imgs.images.iter().all(|(_, i)| i.dimensions() == (64, 64)));
    let m =
        clsflow_train::data::read_mask(ds.test.iter().find_map(|t| t.mask.as_ref()).unwrap(), 64)
            .unwrap();
    assert!(m.pixels().any(|p| p[0] == 255));
}

/// `resize = "tile"` on real non-square images: the images become tiles, the stages keep their
/// cost per epoch, calibration counts and thresholds whole images, and evaluation scores each
/// test image stitched on the masks' grid.
#[test]
fn tiled_training_and_evaluation_on_real_non_square_images() {
    let Some(root) = magnetic_tile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny();
    cfg.model.input_size = 64;
    cfg.model.resize = clsflow::InputResize::Tile;
    cfg.data.max_train_images = Some(20);
    cfg.calibration.holdout_fraction = 0.25;
    cfg.stage2.vectors_per_epoch = None;
    let out = dir.path().join("run");
    let r = train(
        cfg,
        &root,
        &out,
        Start::Fresh,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r.summary).unwrap()).unwrap();
    let (images, tiles) = (
        summary["train_images"].as_u64().unwrap(),
        summary["train_tiles"].as_u64().unwrap(),
    );
    assert_eq!(images, 15);
    assert!(tiles > images, "{tiles} tiles of {images} images");
    assert_eq!(summary["resize"], "tile");
    // the diagnostics (training/examples) see the same inputs as the stages: tiles, not stretches
    let (train_inputs, held_inputs) = r.state.good_images().unwrap();
    assert_eq!(train_inputs.len() as u64, tiles);
    assert_eq!(
        held_inputs.len() as u64,
        summary["holdout_tiles"].as_u64().unwrap()
    );
    assert!(
        train_inputs
            .iter()
            .chain(&held_inputs)
            .all(|t| t.dimensions() == (64, 64))
    );
    let cal = &r.calibration;
    assert_eq!(cal.holdout_images, 5, "thresholds from whole images");
    assert_eq!(cal.holdout_scores.len(), 5);
    assert!(
        cal.scoring.threshold >= cal.holdout_scores.iter().copied().fold(f32::MIN, f32::max) as f64
    );
    assert!(
        cal.synthetic_defects as u64 > 5,
        "the validation set is made of tiles"
    );

    let det = load_on_cpu(&out.join(MODEL));
    assert_eq!(det.resize(), clsflow::InputResize::Tile);
    let mut ds = Dataset::open(&root).unwrap();
    // three good and three defective test images
    let good: Vec<_> = ds
        .test
        .iter()
        .filter(|t| t.mask.is_none())
        .take(3)
        .cloned()
        .collect();
    let bad: Vec<_> = ds
        .test
        .iter()
        .filter(|t| t.mask.is_some())
        .take(3)
        .cloned()
        .collect();
    ds.test = good.into_iter().chain(bad).collect();
    let set = score_test_set(&det, &ds, OnBadImage::Fail, 4).unwrap();
    assert_eq!(set.items.len(), 6);
    let mut non_square = 0;
    for it in &set.items {
        assert!(
            it.maps.iter().all(|m| m.len() == 64 * 64),
            "on the masks' grid"
        );
        // the detector's score of the stitched map, at least the resized map's maximum
        let resized_max = it.maps[0].iter().copied().fold(f32::MIN, f32::max);
        assert!(it.scores[0] >= resized_max - 1e-4);
        let img = clsflow_train::data::read_rgb(&it.path).unwrap();
        let d = det.detect(std::slice::from_ref(&img)).unwrap().remove(0);
        let (w, h) = det
            .input_dims(img.width() as usize, img.height() as usize)
            .unwrap();
        assert_eq!((d.fused.width, d.fused.height), (w, h));
        assert_eq!(w.min(h), 64, "{w}x{h}");
        non_square += usize::from(w != h);
    }
    assert!(non_square > 0, "magnetic-tile images are mostly not square");
    let eval = evaluate(&set, det.map_size(), det.scoring());
    assert!(eval.branches["fused"].image_auroc.is_some());
}
