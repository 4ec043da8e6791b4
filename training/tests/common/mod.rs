//! What the integration tests share: the checkout, the tiny test config, a tiny trained model,
//! the real category when it is there.
#![allow(dead_code)] // each test crate uses its own subset

use clsflow::{Detector, DetectorOptions, DeviceSpec};
use clsflow_train::config::TrainConfig;
use clsflow_train::train::{MODEL, Start, train};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `configs/test-tiny.toml` on at most `max_images` training images.
pub fn tiny_config(max_images: usize) -> TrainConfig {
    let mut cfg = TrainConfig::load(&repo().join("configs/test-tiny.toml")).unwrap();
    cfg.data.max_train_images = Some(max_images);
    cfg
}

/// Trains `cfg` on `data` into the fresh folder `out`; the model's path.
pub fn train_model(cfg: TrainConfig, data: &Path, out: &Path) -> PathBuf {
    train(
        cfg,
        data,
        out,
        Start::Fresh,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    out.join(MODEL)
}

/// A checkpoint loaded on the CPU in float32.
pub fn load_on_cpu(model: &Path) -> Detector {
    Detector::load(
        model,
        &DetectorOptions {
            device: DeviceSpec::Cpu,
            half: false,
        },
    )
    .unwrap()
}

#[path = "../../../tests/common/shared_data.rs"]
mod shared_data;
pub use shared_data::category;

/// The real Magnetic-Tile category, or `None` after saying that the test is skipped.
pub fn magnetic_tile() -> Option<PathBuf> {
    category("magnetic_tile")
}
