//! `update`: a finished run learns more good images (for example snapshots that an operator
//! confirmed as false alarms) without starting over. The flows train on from the run's flows,
//! on the run's good images and the new ones; the extractor and the classifier stay as they
//! are; the model is then calibrated anew on the run's held-out images, so that its thresholds
//! stay comparable with the run's. The run itself is left as it was.

use super::prepare::{self, same_folder};
use super::state::{TrainState, network_inputs};
use super::{MODEL, Start, TrainOutcome, assemble, finish, run_calibration, run_stage2};
use crate::data::Dataset;
use crate::synth::textures::load_textures;
use anyhow::{Context, Result, bail};
use clsflow::checkpoint;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The flows start from trained weights: a tenth of the run's start rate (where its warm-up
/// began), with no warm-up, adapts them to the new images without unlearning the old ones.
const LR_FACTOR: f64 = 0.1;

/// Share of the flows' training vectors that the added images make up by default (each added
/// image's vectors repeat to reach it): a few images among hundreds would otherwise barely move
/// the density where they lie.
pub const DEFAULT_ADDED_SHARE: f64 = 0.1;

/// The most times one added image repeats in an epoch (a single image must not become a large
/// part of the density).
const MAX_REPEAT: usize = 20;

/// How an update trains.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// Stage-2 epochs; default: a quarter of the run's, at least one.
    pub epochs: Option<usize>,
    /// Share of the flows' training vectors from the added images (0: each counts once).
    pub added_share: f64,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            epochs: None,
            added_share: DEFAULT_ADDED_SHARE,
        }
    }
}

/// What an updated model was updated from, kept in its state and summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The run this model was updated from.
    pub from: PathBuf,
    /// Every good image added by updates (this one's and those of the run it started from);
    /// `eval` leaves these out of a test split.
    pub added: Vec<PathBuf>,
    /// How many times each added image's feature vectors appear in a stage-2 epoch.
    pub repeat: usize,
    /// Seconds the run's own training took (stages 1 and 2 and calibration), to compare with.
    pub run_seconds: f64,
}

/// The state of a finished run in `run_dir`; an error when it has not finished training.
pub(super) fn finished_state(run_dir: &Path) -> Result<TrainState> {
    let state = TrainState::load(run_dir)?;
    let c = &state.config;
    if state.stage1_done < c.stage1.frozen_epochs + c.stage1.joint_epochs
        || state.stage2_done.iter().any(|&d| d < c.stage2.epochs)
        || !run_dir.join(MODEL).exists()
    {
        bail!(
            "{}: the run has not finished training: continue it with `train --resume` first",
            run_dir.display()
        );
    }
    Ok(state)
}

/// Updates the finished run in `run_dir` with the good images `good` into `out`.
pub fn update(
    run_dir: &Path,
    good: &[PathBuf],
    out: &Path,
    start: Start,
    options: &UpdateOptions,
    stop: Arc<AtomicBool>,
) -> Result<TrainOutcome> {
    if same_folder(run_dir, out) {
        bail!(
            "--out {}: the same folder as --run; the update goes into another folder, and the \
             run stays as it was",
            out.display()
        );
    }
    let base = finished_state(run_dir)?;
    let added = added_images(&base, good)?;
    let (state, model) = if start == Start::Resume {
        let state = resumed_update(out, run_dir, &added)?;
        let model = prepare::resumed_model(out)?;
        eprintln!(
            "resuming the update: {:?}/{} epochs per flow",
            state.stage2_done, state.config.stage2.epochs
        );
        (state, model)
    } else {
        let state = fresh_update(&base, run_dir, added, options)?;
        prepare::claim_output(out, start)?;
        let (model, _) =
            checkpoint::load(&run_dir.join(MODEL), tch::Device::cuda_if_available())
                .with_context(|| format!("{}: no trained model to update", run_dir.display()))?;
        (state, model)
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    prepare::remove_stale_temporaries(out);
    if state.stage2_done == [0; 3] {
        state.save(out, &model)?;
    }
    let record = state.update.clone().expect("an update's state");
    let cfg = state.config.clone();
    let ds = Dataset::open(&state.data)?;
    let textures = load_textures(&cfg.data.textures, cfg.model.input_size as u32)?;
    let mut run = assemble(cfg, ds, out, state, model, textures)?;
    // the added images are the last of the training images (after those that could not be
    // read were left out); their feature vectors repeat in each epoch
    let added: HashSet<&PathBuf> = record.added.iter().collect();
    let present = run
        .state
        .train
        .iter()
        .rev()
        .take_while(|p| added.contains(p))
        .count();
    if present == 0 {
        bail!("none of the added good images could be read (listed in training.json)");
    }
    let first = run.train.groups[run.train.groups.len() - present].start;
    run.added_tiles = Some((first, record.repeat));
    eprintln!(
        "update: {present} added good image(s), each {} time(s) per epoch, beside the run's {}; \
         {} epoch(s) per flow from the run's flows",
        record.repeat,
        run.train.groups.len() - present,
        run.cfg.stage2.epochs
    );
    // the extractor and the classifier are final: only the flows train
    run.model.set_backbone_trainable(false);
    run.model.set_extractor_folded(true);
    let features = run_stage2(&mut run, &stop)?;
    let calibration = run_calibration(&mut run, features);
    finish(run, calibration)
}

/// The images that `good` names, less those the run already has (named on stderr), as
/// absolute paths; an error when none is left.
fn added_images(base: &TrainState, good: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let known: HashSet<PathBuf> = base
        .train
        .iter()
        .chain(&base.holdout)
        .chain(base.update.iter().flat_map(|u| &u.added))
        .map(|p| canonical(p))
        .collect();
    let mut seen = HashSet::new();
    let (mut overlays, mut duplicates) = (0, 0);
    let mut added = Vec::new();
    for p in good {
        if is_snapshot_overlay(p) {
            overlays += 1;
            continue;
        }
        let c = canonical(p);
        if known.contains(&c) {
            duplicates += 1;
        } else if seen.insert(c.clone()) {
            added.push(c);
        }
    }
    if overlays > 0 {
        eprintln!("--good: {overlays} overlay image(s) of snapshots left out (the frames count)");
    }
    if duplicates > 0 {
        eprintln!("--good: {duplicates} image(s) left out: the run has them already");
    }
    if added.is_empty() {
        bail!(
            "--good: no new good images ({} given: every one is already one of the run's good \
             images or a snapshot's overlay)",
            good.len()
        );
    }
    Ok(added)
}

/// An `anomalydetect` snapshot's overlay (`<name>.overlay.<ext>`): the map painted on the frame,
/// not a frame.
fn is_snapshot_overlay(p: &Path) -> bool {
    p.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.ends_with(".overlay"))
}

/// The update's state: the run's, with the added images after its training images, and stage 2
/// to do again from the run's flows (its epochs and rate for an update).
fn fresh_update(
    base: &TrainState,
    run_dir: &Path,
    new: Vec<PathBuf>,
    options: &UpdateOptions,
) -> Result<TrainState> {
    if !(0.0..1.0).contains(&options.added_share) {
        bail!(
            "--added-share {}: give a share from 0 up to (not including) 1",
            options.added_share
        );
    }
    let mut cfg = base.config.clone();
    let epochs = options
        .epochs
        .unwrap_or_else(|| (cfg.stage2.epochs / 4).max(1));
    if epochs == 0 {
        bail!("--epochs 0: give at least 1");
    }
    cfg.stage2.epochs = epochs;
    cfg.stage2.warmup_epochs = 0;
    cfg.stage2.lr *= LR_FACTOR;
    // the new images are checked before the output folder is touched
    // the new images are read before the output folder is touched: none readable is an error
    network_inputs(&new, &cfg, "--good")?;
    let mut added: Vec<PathBuf> = base.update.iter().flat_map(|u| u.added.clone()).collect();
    added.extend(new);
    let old = base.train.len();
    let repeat = if options.added_share > 0.0 {
        let per_image = options.added_share / (1.0 - options.added_share) * old as f64;
        ((per_image / added.len() as f64).round() as usize).clamp(1, MAX_REPEAT)
    } else {
        1
    };
    let mut train = base.train.clone();
    train.retain(|p| !added.contains(p));
    train.extend(added.iter().cloned());
    Ok(TrainState {
        config: cfg,
        train,
        stage2_done: [0; 3],
        stage2_losses: [Vec::new(), Vec::new(), Vec::new()],
        seconds: [0.0; 3],
        update: Some(UpdateRecord {
            from: std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf()),
            added,
            repeat,
            run_seconds: base.seconds.iter().sum(),
        }),
        ..base.clone()
    })
}

/// The stored state of the update in `out`, after checking that it updates `run_dir` with the
/// same images.
fn resumed_update(out: &Path, run_dir: &Path, new: &[PathBuf]) -> Result<TrainState> {
    let state = TrainState::load(out).with_context(|| {
        format!(
            "--resume: no usable state.json in {} (nothing to resume)",
            out.display()
        )
    })?;
    let Some(record) = &state.update else {
        bail!(
            "--resume: {} holds a training run, not an update",
            out.display()
        );
    };
    if !same_folder(&record.from, run_dir) {
        bail!(
            "--resume: the update in {} started from {}, not from {}",
            out.display(),
            record.from.display(),
            run_dir.display()
        );
    }
    let stored: HashSet<&PathBuf> = record.added.iter().collect();
    let missing = new.iter().filter(|p| !stored.contains(p)).count();
    if missing > 0 {
        bail!(
            "--resume: {missing} of the --good images are not among the {} that the update in {} \
             started with; resume with the same --good, or start the update in another folder",
            record.added.len(),
            out.display()
        );
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_overlays_are_recognised() {
        assert!(is_snapshot_overlay(Path::new(
            "snaps/snapshot-1000-det0-12.overlay.jpg"
        )));
        assert!(!is_snapshot_overlay(Path::new(
            "snaps/snapshot-1000-det0-12.jpg"
        )));
        assert!(!is_snapshot_overlay(Path::new("overlay.png")));
    }
}
