//! Checkpoints round-trip exactly, and every kind of bad file fails with a clear message.
mod common;

use clsflow::checkpoint::{self, METADATA_KEY};
use clsflow::{ClsFlowModel, Detector, DetectorOptions, Scoring};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn saved_model(dir: &Path) -> (PathBuf, Detector) {
    tch::manual_seed(11);
    // three blocks per flow, so that the round trip covers a non-default count
    let mut config = common::tiny_config();
    config.flow.blocks = 3;
    let model = ClsFlowModel::new(config, Device::Cpu).unwrap();
    let scoring = Scoring {
        tap_log_prob_max: [-1.0, -2.0, -3.0],
        // per-position offsets for the 8x8, 4x4 and 2x2 taps of the 64-px tiny model
        tap_offsets: [8usize, 4, 2]
            .map(|side| (0..side * side).map(|i| i as f32 * 0.1 - 0.3).collect()),
        fusion_weight: 0.5,
        score_weight: 0.25,
        score_top_fraction: 0.01,
        threshold: 2.5,
        region_threshold: 3.5,
        score_spread: 0.75,
        region_spread: 1.25,
    };
    let det = Detector::from_model(model, scoring, "tiny");
    let path = dir.join("m.clsflow");
    det.save(&path, Some(serde_json::json!({"epochs": 0})))
        .unwrap();
    (path, det)
}

fn images() -> Tensor {
    tch::manual_seed(1);
    (Tensor::rand([2, 3, 50, 70], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8)
}

/// Loads a checkpoint on the CPU in float32.
fn load_cpu(path: &Path) -> clsflow::Result<Detector> {
    Detector::load(
        path,
        &DetectorOptions {
            device: clsflow::DeviceSpec::Cpu,
            half: false,
        },
    )
}

fn load_err(path: &Path) -> String {
    load_cpu(path).unwrap_err().to_string()
}

/// Rewrites a checkpoint with edited tensors and/or manifest.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit_tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
    edit_manifest: impl FnOnce(&mut serde_json::Value),
) {
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit_tensors(&mut tensors);
    edit_manifest(&mut manifest);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let meta = HashMap::from([(METADATA_KEY.to_string(), manifest.to_string())]);
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn save_load_gives_identical_maps() {
    let dir = tempfile::tempdir().unwrap();
    let (path, det) = saved_model(dir.path());
    let loaded = load_cpu(&path).unwrap();
    assert_eq!(loaded.scoring(), det.scoring());
    assert_eq!(loaded.model().config().flow.blocks, 3);
    let blocks: Vec<usize> = loaded
        .model()
        .flows()
        .iter()
        .map(|f| f.block_count())
        .collect();
    assert_eq!(blocks, [3, 3, 3]);
    assert_eq!(loaded.manifest().name, "tiny");
    assert_eq!(
        loaded.manifest().training,
        Some(serde_json::json!({"epochs": 0}))
    );
    // One input for both: tch's generator is global, and tests running in parallel threads can
    // reseed or draw from it between two calls of images().
    let input = images();
    let a = det.detect_batch(&input).unwrap();
    let b = loaded.detect_batch(&input).unwrap();
    for (x, y) in [
        (&a.fused, &b.fused),
        (&a.flow, &b.flow),
        (&a.cls, &b.cls),
        (&a.scores, &b.scores),
    ] {
        assert!(x.equal(y), "maps differ after save/load");
    }
    assert_eq!(a.fused.size(), vec![2, 1, 64, 64]);
    // the manifest can be read alone
    let m = checkpoint::read_manifest(&path).unwrap();
    assert_eq!(m.tap_channels, [40, 112, 320]);
    assert_eq!(m.format_version, checkpoint::FORMAT_VERSION);
}

/// Checkpoints that name the removed options with their neutral values (everything written
/// while the options existed) load; those that used them are refused with the option named.
#[test]
fn removed_options_load_when_neutral_and_are_named_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (path, det) = saved_model(dir.path());
    let neutral = dir.path().join("neutral.clsflow");
    rewrite(
        &path,
        &neutral,
        |_| {},
        |m| {
            m["config"]["input_padding"] = serde_json::json!(0);
            m["config"]["flow"]["input_pool"] = serde_json::json!(1);
            m["config"]["flow"]["blocks_per_tap"] = serde_json::json!([3, 3, 3]);
            m["scoring"]["tap_aggregation"] = serde_json::json!("sum");
            m["scoring"]["score_pool"] = serde_json::json!(0);
            m["scoring"]["tap_stats"] = serde_json::json!([{"mean": 0, "std": 1}, {"mean": 0, "std": 1}, {"mean": 0, "std": 1}]);
        },
    );
    let loaded = load_cpu(&neutral).unwrap();
    assert_eq!(loaded.model().config(), det.model().config());
    assert_eq!(loaded.scoring(), det.scoring());
    for (key, value, name) in [
        ("input_padding", serde_json::json!(32), "input_padding = 32"),
        ("input_pool", serde_json::json!(3), "flow.input_pool = 3"),
        (
            "blocks_per_tap",
            serde_json::json!([3, 2, 1]),
            "flow.blocks_per_tap = [3, 2, 1]",
        ),
        (
            "tap_aggregation",
            serde_json::json!("mean"),
            "tap_aggregation = \"mean\"",
        ),
        ("score_pool", serde_json::json!(9), "score_pool = 9"),
    ] {
        let bad = dir.path().join(format!("{key}.clsflow"));
        rewrite(
            &path,
            &bad,
            |_| {},
            |m| {
                if key == "input_padding" {
                    m["config"][key] = value.clone();
                } else if key == "tap_aggregation" || key == "score_pool" {
                    m["scoring"][key] = value.clone();
                } else {
                    m["config"]["flow"][key] = value.clone();
                }
            },
        );
        let e = load_err(&bad);
        assert!(e.contains(name) && e.contains("no longer"), "{key}: {e}");
    }
}

#[test]
fn save_is_atomic_and_keeps_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let (path, det) = saved_model(dir.path());
    det.save(&path, None).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "only the checkpoint remains: {names:?}");
    // saving into a path whose folder is a file fails and leaves the old file intact
    let before = std::fs::read(&path).unwrap();
    let bad = path.join("x.clsflow");
    assert!(det.save(&bad, None).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn truncated_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = saved_model(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.clsflow");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(&cut);
    assert!(
        msg.contains("cut.clsflow") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn corrupted_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = saved_model(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55; // flip bits in the last tensor's data
    let bad = dir.path().join("bad.clsflow");
    std::fs::write(&bad, &bytes).unwrap();
    let msg = load_err(&bad);
    assert!(msg.contains("corrupted"), "{msg}");
}

#[test]
fn missing_extra_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = saved_model(dir.path());
    let p = dir.path().join("missing.clsflow");
    rewrite(
        &path,
        &p,
        |t| t.retain(|(n, _, _)| n != "flows.1.0.global_offset"),
        |_| {},
    );
    let msg = load_err(&p);
    assert!(
        msg.contains("missing") && msg.contains("flows.1.0.global_offset"),
        "{msg}"
    );

    let p = dir.path().join("extra.clsflow");
    rewrite(
        &path,
        &p,
        |t| t.push(("decoder.surprise".into(), vec![1], vec![0; 4])),
        |_| {},
    );
    let msg = load_err(&p);
    assert!(
        msg.contains("unexpected") && msg.contains("decoder.surprise"),
        "{msg}"
    );

    // config says 2 flow blocks... but the weights were made for a wider decoder head
    let p = dir.path().join("disagree.clsflow");
    rewrite(
        &path,
        &p,
        |_| {},
        |m| m["config"]["decoder"]["head_channels"] = 24.into(),
    );
    let msg = load_err(&p);
    assert!(
        msg.contains("config and weights disagree") && msg.contains("decoder.head"),
        "{msg}"
    );
}

#[test]
fn unknown_version_and_foreign_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = saved_model(dir.path());
    let p = dir.path().join("v99.clsflow");
    rewrite(&path, &p, |_| {}, |m| m["format_version"] = 99.into());
    let msg = load_err(&p);
    assert!(
        msg.contains("unknown checkpoint format version 99"),
        "{msg}"
    );

    let p = dir.path().join("offsets.clsflow");
    rewrite(
        &path,
        &p,
        |_| {},
        |m| m["scoring"]["tap_offsets"][1] = serde_json::json!([0.0, 1.0]),
    );
    let msg = load_err(&p);
    assert!(
        msg.contains("tap 1 has 2 per-position offsets, its 4x4 map needs 16"),
        "{msg}"
    );

    let msg = load_err(&common::lite0_weights());
    assert!(msg.contains("not a clsflow checkpoint"), "{msg}");

    let msg = load_err(&dir.path().join("nope.clsflow"));
    assert!(msg.contains("nope.clsflow"), "{msg}");
}

#[test]
fn lite2_model_round_trips() {
    // The larger extractor: its wider taps shape the decoder and flows, and the manifest names it.
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let config = clsflow::ModelConfig {
        backbone: clsflow::BackboneKind::EfficientnetLite2,
        ..common::tiny_config()
    };
    let model = ClsFlowModel::new(config, Device::Cpu).unwrap();
    let det = Detector::from_model(model, Scoring::default(), "tiny-lite2");
    let path = dir.path().join("lite2.clsflow");
    det.save(&path, None).unwrap();
    let m = checkpoint::read_manifest(&path).unwrap();
    assert_eq!(m.tap_channels, [48, 120, 352]);
    assert_eq!(m.config.backbone, clsflow::BackboneKind::EfficientnetLite2);
    let loaded = load_cpu(&path).unwrap();
    let input = images();
    let a = det.detect_batch(&input).unwrap();
    let b = loaded.detect_batch(&input).unwrap();
    assert!(a.fused.equal(&b.fused), "Lite2 maps differ after save/load");
    assert_eq!(a.fused.size(), vec![2, 1, 64, 64]);
}
