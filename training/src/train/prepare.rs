//! Before any work: the inputs are checked, the output folder is claimed (a fresh run never
//! silently replaces an earlier one), and a resumed run is checked against what it stored.

use super::state::{LAST, STATE, TrainState};
use super::{MODEL, Start};
use crate::config::TrainConfig;
use crate::data::Dataset;
use anyhow::{Context, Result, bail};
use clsflow::ClsFlowModel;
use clsflow::checkpoint;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Suffix of the previous model that `--overwrite` keeps until the new one is written.
pub const BACKUP_SUFFIX: &str = ".bak";

/// The files of a run that make a folder "hold a run".
fn run_files(out: &Path) -> Vec<PathBuf> {
    [STATE, LAST, MODEL]
        .iter()
        .map(|f| out.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Refuses a fresh run into a folder that holds one; with `--overwrite`, moves the old model
/// aside (kept until the new one is written) and removes the old progress.
pub(super) fn claim_output(out: &Path, start: Start) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {}: is a file, not a folder", out.display());
    }
    let existing = run_files(out);
    match start {
        Start::Fresh if !existing.is_empty() => bail!(
            "--out {} already holds a run ({}): add --resume to continue it, or --overwrite to \
             start over (the old model is kept as {MODEL}{BACKUP_SUFFIX} until the new one is \
             written), or choose another folder",
            out.display(),
            names(&existing)
        ),
        Start::Overwrite => {
            let model = out.join(MODEL);
            if model.exists() {
                let backup = out.join(format!("{MODEL}{BACKUP_SUFFIX}"));
                std::fs::rename(&model, &backup)
                    .with_context(|| format!("cannot move {} aside", model.display()))?;
                eprintln!(
                    "--overwrite: the previous model is kept as {} until the new one is written",
                    backup.display()
                );
            }
            for f in [STATE, LAST] {
                let p = out.join(f);
                if p.exists() {
                    std::fs::remove_file(&p)
                        .with_context(|| format!("cannot remove {}", p.display()))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes temporary files that a process killed while writing left in `out` (checkpoints and
/// state are written to a temporary file and renamed, so the real files are intact).
pub(super) fn remove_stale_temporaries(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = [STATE, LAST, MODEL, "training.json"]
            .iter()
            .any(|f| name.starts_with(&format!(".{f}.")));
        if ours && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The stored state of the run in `out`, after checking that the data and config given now are
/// those it was started with (the difference is named when they are not).
pub(super) fn resumed_state(out: &Path, cfg: &TrainConfig, data: &Path) -> Result<TrainState> {
    let state = TrainState::load(out).with_context(|| {
        format!(
            "--resume: no usable {STATE} in {} (nothing to resume)",
            out.display()
        )
    })?;
    if !same_folder(&state.data, data) {
        bail!(
            "--resume: the run in {} trained on {}, not on {}; resume with --data {} or \
             start a new run in another folder",
            out.display(),
            state.data.display(),
            data.display(),
            state.data.display()
        );
    }
    let differences = config_differences(&state.config, cfg);
    if !differences.is_empty() {
        bail!(
            "--resume: the configuration differs from the stored run's in {}: {}; resume with \
             the same config and options, or start a new run in another folder",
            out.display(),
            differences.join("; ")
        );
    }
    Ok(state)
}

/// Whether the two paths name the same file or folder (compared as given when one is missing).
pub(super) fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Every setting whose value differs, as `key: stored -> given`.
pub fn config_differences(stored: &TrainConfig, given: &TrainConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(stored).unwrap_or_default(),
        serde_json::to_value(given).unwrap_or_default(),
    );
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn diff_values(key: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            let null = serde_json::Value::Null;
            for k in keys {
                let sub = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                diff_values(
                    &sub,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{key}: stored {a}, given {b}")),
        _ => {}
    }
}

/// A fresh run's model (ImageNet weights loaded) and state: the good images shuffled by the
/// seed, at most `max_train_images` of them, a seeded `holdout_fraction` held out.
pub(super) fn fresh_state(
    cfg: &TrainConfig,
    data: &Path,
    ds: &Dataset,
) -> Result<(TrainState, ClsFlowModel)> {
    let weights = cfg.weights_path()?;
    tch::manual_seed(cfg.seed as i64);
    let mut model = ClsFlowModel::new(cfg.model_config(), tch::Device::cuda_if_available())?;
    model.load_backbone_weights(&weights)?;
    let mut files = ds.train.clone();
    files.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    if let Some(n) = cfg.data.max_train_images {
        files.truncate(n.max(1));
    }
    let n_hold = ((files.len() as f64) * cfg.calibration.holdout_fraction).round() as usize;
    let n_hold = if files.len() - n_hold < 1 { 0 } else { n_hold };
    let holdout: Vec<PathBuf> = files[..n_hold].to_vec();
    let mut train: Vec<PathBuf> = files[n_hold..].to_vec();
    train.sort();
    let state = TrainState {
        config: cfg.clone(),
        data: data.to_path_buf(),
        train,
        holdout,
        skipped: Vec::new(),
        stage1_done: 0,
        stage2_done: [0; 3],
        stage1_losses: Vec::new(),
        stage2_losses: [Vec::new(), Vec::new(), Vec::new()],
        seconds: [0.0; 3],
        update: None,
    };
    Ok((state, model))
}

/// The model of a resumed run, as its last finished epoch left it.
pub(super) fn resumed_model(out: &Path) -> Result<ClsFlowModel> {
    let (model, _) = checkpoint::load(&out.join(LAST), tch::Device::cuda_if_available())
        .with_context(|| "--resume: cannot load the last epoch's checkpoint")?;
    Ok(model)
}
