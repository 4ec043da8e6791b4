//! The model the benchmarks time when none is given: the CPU default's architecture with seeded
//! random weights (speed does not depend on the weights), saved as a checkpoint.

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
