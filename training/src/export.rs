//! `clsflow-train export`: a trained model as a TorchScript module for a serving engine, in the
//! layout of a Triton Inference Server model repository (its PyTorch backend runs TorchScript):
//!
//! ```text
//! OUT/clsflow/config.pbtxt        tensor names, shapes, dynamic batching
//! OUT/clsflow/1/model.pt          the traced module
//! OUT/clsflow/calibration.json    thresholds, weights and how to read the output
//! ```
//!
//! The module takes a batch (N, 3, S, S) of RGB images at the model's input size, either as
//! floats already normalised or as 0..255 bytes (normalised inside), and returns one tensor
//! (N, 4, S, S): the fused, flow and classifier maps, and the image score repeated over the
//! fourth plane (a traced TorchScript method has a single output). Any batch size works.

use anyhow::{Context, Result, bail};
use clsflow::checkpoint::write_atomic;
use clsflow::{Detector, DetectorOptions, DeviceSpec, InputResize};
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// What the exported module takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportInput {
    /// float32 (N, 3, S, S), normalised with the model's mean and std.
    Float,
    /// uint8 (N, 3, S, S), 0..255 RGB; the module normalises.
    Uint8,
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    /// The TorchScript module.
    pub module: PathBuf,
    /// Triton's model configuration.
    pub config: PathBuf,
    /// Thresholds, weights and the output layout.
    pub calibration: PathBuf,
    /// Largest difference between the module's output and the detector's on the check batch.
    pub max_difference: f64,
}

/// The Triton model name and folder.
pub const MODEL_NAME: &str = "clsflow";

/// Traces the checkpoint `model` into `out` (see the module docs), checks the traced module
/// against the detector on a batch of 3 (`check`: images (N, 3, S, S) in 0..255, or random
/// ones), and refuses what a TorchScript module cannot hold.
pub fn export_torchscript(
    model: &Path,
    out: &Path,
    input: ExportInput,
    check: Option<&Tensor>,
) -> Result<Exported> {
    let options = DetectorOptions {
        device: DeviceSpec::Cpu,
        half: false,
    };
    let mut det = Detector::load(model, &options)?;
    if det.resize() == InputResize::Tile {
        bail!(
            "{}: this model tiles frames of other shapes (resize = \"tile\") in code that a \
             TorchScript module cannot hold; export a model trained with resize = \"stretch\"",
            model.display()
        );
    }
    det.freeze();
    let s = det.map_size() as i64;
    let norm = det.manifest().normalization;
    let mean = Tensor::from_slice(&norm.mean.map(|v| v as f32)).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&norm.std.map(|v| v as f32)).view([1, 3, 1, 1]);
    let to_input = |x: &Tensor| -> Tensor {
        match input {
            ExportInput::Float => x.shallow_clone(),
            ExportInput::Uint8 => (x.to_kind(Kind::Float) / 255.0 - &mean) / &std,
        }
    };
    // one output: the three maps and the score as a fourth plane
    let forward = |x: &Tensor| -> clsflow::Result<Tensor> {
        let m = det.detect_input(&to_input(x))?;
        let plane = m.scores.view([-1, 1, 1, 1]).expand([-1, 1, s, s], false);
        Ok(Tensor::cat(&[m.fused, m.flow, m.cls, plane], 1))
    };
    let example = || match input {
        ExportInput::Float => Tensor::randn([2, 3, s, s], (Kind::Float, Device::Cpu)),
        ExportInput::Uint8 => {
            (Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8)
        }
    };
    let traced = tch::no_grad(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CModule::create_by_tracing(MODEL_NAME, "forward", &[example()], &mut |xs| {
                vec![forward(&xs[0]).expect("the detector runs on its own input size")]
            })
        }))
    })
    .map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{}: the model cannot be traced into TorchScript: {}",
            model.display(),
            why.lines().next().unwrap_or("")
        )
    })?
    .with_context(|| format!("{}: tracing failed", model.display()))?;

    let dir = out.join(MODEL_NAME);
    let module_path = dir.join("1").join("model.pt");
    std::fs::create_dir_all(dir.join("1"))
        .with_context(|| format!("cannot create {}", dir.join("1").display()))?;
    let tmp = dir
        .join("1")
        .join(format!(".model.pt.{}.tmp", std::process::id()));
    traced
        .save(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &module_path)
        .with_context(|| format!("cannot write {}", module_path.display()))?;

    // the saved module, loaded back, against the detector on a batch of another size
    let loaded = CModule::load(&module_path)
        .with_context(|| format!("{}: cannot load back", module_path.display()))?;
    let batch = match check {
        Some(c) => c.shallow_clone(),
        None => (Tensor::rand([3, 3, s, s], (Kind::Float, Device::Cpu)) * 255.0).round(),
    };
    let x = match input {
        ExportInput::Float => (batch.to_kind(Kind::Float) / 255.0 - &mean) / &std,
        ExportInput::Uint8 => batch.to_kind(Kind::Uint8),
    };
    let (got, want) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
        Ok((loaded.forward_ts(&[&x])?, forward(&x)?))
    })?;
    let max_difference = (&got - &want).abs().max().double_value(&[]);
    if max_difference > 1e-4 {
        bail!(
            "{}: the traced module differs from the detector by {max_difference:.2e}; not exported",
            model.display()
        );
    }

    let (in_type, in_desc) = match input {
        ExportInput::Float => (
            "TYPE_FP32",
            "float32, normalised with the model's mean and std",
        ),
        ExportInput::Uint8 => ("TYPE_UINT8", "uint8 RGB 0..255"),
    };
    let config = format!(
        "# clsflow anomaly detector ({name}), exported by clsflow-train export\n\
         name: \"{MODEL_NAME}\"\n\
         platform: \"pytorch_libtorch\"\n\
         max_batch_size: 32\n\
         input [\n  {{\n    name: \"INPUT__0\"\n    data_type: {in_type}\n    dims: [ 3, {s}, {s} ]\n  }}\n]\n\
         output [\n  {{\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ 4, {s}, {s} ]\n  }}\n]\n\
         dynamic_batching {{\n  max_queue_delay_microseconds: 2000\n}}\n",
        name = det.manifest().name
    );
    let config_path = dir.join("config.pbtxt");
    write_atomic(&config_path, config.as_bytes())?;
    let scoring = det.scoring();
    let calibration = serde_json::json!({
        "model": det.manifest().name,
        "input": {"name": "INPUT__0", "shape": ["N", 3, s, s], "type": in_desc,
                  "mean": norm.mean, "std": norm.std,
                  "resize": "bilinear with antialiasing to the input size, RGB"},
        "output": {"name": "OUTPUT__0", "shape": ["N", 4, s, s],
                   "planes": ["fused map", "flow map", "classifier map", "image score (repeated)"]},
        "threshold": scoring.threshold,
        "region_threshold": scoring.region_threshold,
        "score_spread": scoring.score_spread,
        "region_spread": scoring.region_spread,
        "normalized_score": "1 / (1 + exp(-ln(9) (score - threshold) / score_spread)); 0.5 at the threshold",
        "fusion_weight": scoring.fusion_weight,
        "score_weight": scoring.score_weight,
    });
    let calibration_path = dir.join("calibration.json");
    write_atomic(
        &calibration_path,
        serde_json::to_string_pretty(&calibration)?.as_bytes(),
    )?;
    Ok(Exported {
        module: module_path,
        config: config_path,
        calibration: calibration_path,
        max_difference,
    })
}
