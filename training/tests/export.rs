//! `export`: the TorchScript module, loaded back with libtorch as a serving engine would, gives
//! the detector's maps and scores on real images; what cannot be exported is refused clearly.

use clsflow::preprocess::rgb_to_tensor;
use clsflow::{Detector, DetectorOptions, DeviceSpec};
use clsflow_train::data::{Dataset, read_rgb, resize_rgb};
use clsflow_train::demo_data::{DemoCounts, generate};
use clsflow_train::export::{ExportInput, export_torchscript};
use std::path::{Path, PathBuf};
use tch::{CModule, Kind, Tensor};

mod common;
use common::{magnetic_tile, tiny_config, train_model};

fn tiny_model(data: &Path, out: &Path, tile: bool) -> PathBuf {
    let mut cfg = tiny_config(12);
    if tile {
        cfg.model.resize = clsflow::InputResize::Tile;
    }
    train_model(cfg, data, out)
}

/// Exports `model` both ways and checks the loaded module on `images` against the detector.
fn check(model: &Path, images: &[PathBuf], dir: &Path) {
    let det = Detector::load(
        model,
        &DetectorOptions {
            device: DeviceSpec::Cpu,
            half: false,
        },
    )
    .unwrap();
    let s = det.map_size() as u32;
    let resized: Vec<_> = images
        .iter()
        .map(|p| resize_rgb(&read_rgb(p).unwrap(), s))
        .collect();
    let want = det.detect(&resized).unwrap();
    let batch = Tensor::stack(&resized.iter().map(rgb_to_tensor).collect::<Vec<_>>(), 0);
    for input in [ExportInput::Float, ExportInput::Uint8] {
        let out = dir.join(format!("{input:?}"));
        let e = export_torchscript(model, &out, input, Some(&batch.to_kind(Kind::Float))).unwrap();
        assert!(e.max_difference < 1e-5, "{}", e.max_difference);
        assert!(out.join("clsflow/config.pbtxt").is_file());
        let cal: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&e.calibration).unwrap()).unwrap();
        assert_eq!(cal["threshold"].as_f64().unwrap(), det.scoring().threshold);
        // as a server would: load the file, feed the batch
        let module = CModule::load(out.join("clsflow/1/model.pt")).unwrap();
        let norm = det.manifest().normalization;
        let x = match input {
            ExportInput::Uint8 => batch.shallow_clone(),
            ExportInput::Float => {
                let mean = Tensor::from_slice(&norm.mean.map(|v| v as f32)).view([1, 3, 1, 1]);
                let std = Tensor::from_slice(&norm.std.map(|v| v as f32)).view([1, 3, 1, 1]);
                (batch.to_kind(Kind::Float) / 255.0 - mean) / std
            }
        };
        let got = tch::no_grad(|| module.forward_ts(&[x])).unwrap();
        assert_eq!(got.size(), vec![images.len() as i64, 4, s as i64, s as i64]);
        for (i, d) in want.iter().enumerate() {
            let score = got.double_value(&[i as i64, 3, 0, 0]);
            assert!(
                (score - f64::from(d.score)).abs() < 1e-5,
                "{input:?} image {i}: {score} vs {}",
                d.score
            );
            let fused = Vec::<f32>::try_from(got.get(i as i64).get(0).flatten(0, -1)).unwrap();
            let worst = fused
                .iter()
                .zip(&d.fused.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst < 1e-5,
                "{input:?} image {i}: fused maps differ by {worst}"
            );
        }
    }
}

#[test]
fn exported_module_matches_the_detector_on_the_demo_category() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("plates");
    generate(
        &data,
        DemoCounts {
            train: 12,
            test_good: 2,
            per_defect: 1,
        },
        4,
    )
    .unwrap();
    let model = tiny_model(&data, &dir.path().join("run"), false);
    let images: Vec<PathBuf> = Dataset::open(&data)
        .unwrap()
        .test
        .iter()
        .map(|t| t.path.clone())
        .collect();
    check(&model, &images, dir.path());

    // a tiling model cuts frames in code a TorchScript module cannot hold: refused by name
    let tiled = tiny_model(&data, &dir.path().join("tiled"), true);
    let err = export_torchscript(&tiled, &dir.path().join("t"), ExportInput::Float, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tile") && err.contains("stretch"), "{err}");
    assert!(!dir.path().join("t/clsflow/1/model.pt").exists());
}

#[test]
fn exported_module_matches_the_detector_on_magnetic_tile() {
    let Some(root) = magnetic_tile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&root, &dir.path().join("run"), false);
    let ds = Dataset::open(&root).unwrap();
    let images: Vec<PathBuf> = ds.test.iter().step_by(97).map(|t| t.path.clone()).collect();
    assert!(images.len() >= 5);
    check(&model, &images, dir.path());
}
