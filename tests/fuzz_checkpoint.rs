//! Property test: checkpoint files with random damage (flipped bytes, truncation, edited
//! manifests) load or fail with an error, and never panic. `make test` runs a short seeded pass;
//! `PROPTEST_CASES=N cargo test --test fuzz_checkpoint` runs more.
mod common;

use clsflow::checkpoint::METADATA_KEY;
use clsflow::{ClsFlowModel, Detector, Scoring};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::HashMap;
use tch::Device;

/// A small valid checkpoint's bytes.
fn checkpoint_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let model = ClsFlowModel::new(common::tiny_config(), Device::Cpu).unwrap();
    let path = dir.path().join("m.clsflow");
    Detector::from_model(model, Scoring::default(), "fuzz")
        .save(&path, None)
        .unwrap();
    std::fs::read(path).unwrap()
}

/// The same tensors with a new manifest.
fn with_manifest(bytes: &[u8], manifest: &str) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let meta = HashMap::from([(METADATA_KEY.to_string(), manifest.to_string())]);
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

/// Loads `bytes` as a checkpoint file: Ok or Err, the test fails on a panic.
fn load(bytes: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.clsflow");
    std::fs::write(&path, bytes).unwrap();
    clsflow::checkpoint::load(&path, Device::Cpu)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn damaged_checkpoint_bytes_never_panic() {
    let good = checkpoint_bytes();
    let n = good.len();
    let strategy = (
        prop::collection::vec((0..n, any::<u8>()), 0..8),
        prop::option::of(0..n),
    );
    let tried = std::cell::Cell::new(0usize);
    runner()
        .run(&strategy, |(flips, cut)| {
            let mut b = good.clone();
            for (i, v) in flips {
                b[i] ^= v | 1;
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            let _ = load(&b);
            tried.set(tried.get() + 1);
            Ok(())
        })
        .unwrap();
    eprintln!("damaged checkpoint files: {} cases, no panic", tried.get());
}

/// Any JSON value at any place of the manifest.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([1.0, -1.0, 1e300])),
    ]
}

/// Every path to a leaf or container of a JSON value.
fn paths(v: &serde_json::Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    if let serde_json::Value::Object(m) = v {
        for (k, c) in m {
            let mut p = prefix.clone();
            p.push(k.clone());
            paths(c, p, out);
        }
    }
}

#[test]
fn edited_manifests_never_panic() {
    let good = checkpoint_bytes();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[METADATA_KEY]).unwrap();
    let mut all = Vec::new();
    paths(&manifest, Vec::new(), &mut all);
    let strategy = prop::collection::vec((0..all.len(), json_value(), any::<bool>()), 1..4);
    let tried = std::cell::Cell::new(0usize);
    let loaded = std::cell::Cell::new(0usize);
    runner()
        .run(&strategy, |edits| {
            let mut m = manifest.clone();
            for (i, value, remove) in edits {
                let path = &all[i];
                let Some((last, parents)) = path.split_last() else {
                    m = value;
                    continue;
                };
                let pointer: String = parents.iter().map(|k| format!("/{k}")).collect();
                if let Some(obj) = m.pointer_mut(&pointer).and_then(|n| n.as_object_mut()) {
                    if remove {
                        obj.remove(last);
                    } else {
                        obj.insert(last.clone(), value);
                    }
                }
            }
            let bytes = with_manifest(&good, &m.to_string());
            loaded.set(loaded.get() + usize::from(load(&bytes).is_ok()));
            tried.set(tried.get() + 1);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "edited manifests: {} cases ({} still valid), no panic",
        tried.get(),
        loaded.get()
    );
}
