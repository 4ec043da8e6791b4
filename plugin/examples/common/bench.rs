//! What the GStreamer benchmarks share: the model they time when none is given (the CPU
//! default's architecture with seeded random weights: speed does not depend on the weights),
//! their command-line reading and memory and percentile figures.

use clsflow::{ClsFlowModel, Detector, Scoring, torch_thread};
use std::path::{Path, PathBuf};

/// Writes the default architecture's checkpoint into `dir` and returns its path.
pub fn default_model(dir: &Path) -> PathBuf {
    let cfg = clsflow_train::config::TrainConfig::builtin();
    let path = dir.join("bench.clsflow");
    let p = path.clone();
    // all libtorch work of this process on its one libtorch thread, as in the element
    torch_thread::run(move || {
        tch::manual_seed(0);
        let det = Detector::from_model(
            ClsFlowModel::new(cfg.model_config(), tch::Device::Cpu).unwrap(),
            Scoring::default(),
            "bench",
        );
        det.save(&p, None).unwrap();
    })
    .unwrap();
    path
}

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `VmHWM:`), in MiB.
pub fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The `p` quantile of sorted samples (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
