//! Helpers shared by the integration tests of the core crate.
#![allow(dead_code)]

use std::path::PathBuf;
use tch::Tensor;

/// A reference-tensor fixture kept in the repository (`tests/fixtures/`, whose README says how
/// each was made); panics with a clear message when it is absent.
pub fn fixture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(
        p.exists(),
        "fixture {} is missing from the checkout",
        p.display()
    );
    p
}

/// Reads all tensors of a safetensors file by name.
pub fn read_tensors(path: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("readable safetensors")
        .into_iter()
        .collect()
}

/// The converted ImageNet Lite0 weights; panics with the fix when absent.
pub fn lite0_weights() -> PathBuf {
    lite_weights(0)
}

/// The converted ImageNet EfficientNet-LiteN weights; panics with the fix when absent.
pub fn lite_weights(n: u8) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("models/efficientnet_lite{n}.safetensors"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (make test does)",
        p.display()
    );
    p
}

/// Max |a - b| / (max |b| + eps).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / (b.abs().max().double_value(&[]) + 1e-12)
}

use clsflow::decoder::{DecoderConfig, Upsample};
use clsflow::flow::FlowConfig;
use clsflow::{BackboneKind, ModelConfig};

/// A small Lite0 model config for fast tests (64x64 input, thin decoder, short flows).
pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        backbone: BackboneKind::EfficientnetLite0,
        input_size: 64,
        resize: clsflow::InputResize::Stretch,
        decoder: DecoderConfig {
            head_channels: 16,
            stage_channels: vec![16, 8, 4, 4],
            stage_blocks: vec![1, 1, 1, 1],
            upsample: Upsample::Bilinear,
        },
        flow: FlowConfig {
            blocks: 2,
            condition_channels: 8,
            clamp: 1.9,
        },
    }
}
