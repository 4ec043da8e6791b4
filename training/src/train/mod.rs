//! The training run, by its stages: [`prepare`] (inputs checked, output folder claimed, images
//! loaded, synthetic defects set up) -> stage 1 (the classifier fine-tunes the extractor) ->
//! stage 2 (flows on the frozen extractor) -> calibration (weights and thresholds, no test
//! labels) -> [`finish`] (checkpoint and summary). After every epoch the model and the state are
//! written atomically ([`state`]), so `--resume` continues after a crash, a kill or Ctrl-C.
//! [`update`] runs stage 2 and calibration again on a finished run with more good images.

mod prepare;
mod state;
mod update;

pub use prepare::{BACKUP_SUFFIX, config_differences};
pub use state::TrainState;
pub use update::{DEFAULT_ADDED_SHARE, UpdateOptions, UpdateRecord, update};

use crate::calibrate::{Calibration, CalibrationInput, calibrate};
use crate::config::TrainConfig;
use crate::data::{Dataset, SkippedFile, progress};
use crate::synth::DefectSynthesizer;
use crate::synth::foreground::{foreground_mask, rule_for_run};
use crate::synth::textures::load_textures;
use crate::tiles::TiledImages;
use crate::{stage1, stage2};
use anyhow::{Context, Result, bail};
use clsflow::checkpoint::{self, write_atomic};
use clsflow::{ClsFlowModel, Normalization, TapReferences};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// File name of the final checkpoint in the output folder.
pub const MODEL: &str = "model.clsflow";

/// How a run treats its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused when the folder already holds one.
    Fresh,
    /// Continue the run in the folder from its last finished epoch (same data and config).
    Resume,
    /// Start over in a folder that holds a run, keeping its model as `model.clsflow.bak` until
    /// the new one is written.
    Overwrite,
}

/// The run stopped at the user's request (Ctrl-C) after saving its progress.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// What a finished run wrote.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The calibrated checkpoint.
    pub model: PathBuf,
    /// The training summary (JSON).
    pub summary: PathBuf,
    /// Calibration details.
    pub calibration: Calibration,
    /// Final state.
    pub state: TrainState,
}

/// Everything the stages share: the run's state, model, images and synthesisers.
struct Run {
    cfg: TrainConfig,
    ds: Dataset,
    out: PathBuf,
    state: TrainState,
    model: ClsFlowModel,
    norm: Normalization,
    train: TiledImages,
    held: TiledImages,
    train_fgs: Vec<Option<GrayImage>>,
    held_fgs: Vec<Option<GrayImage>>,
    /// Stage 1's synthetic defects.
    synth: DefectSynthesizer,
    /// Calibration's, from the textures stage 1 never saw (when some are held out).
    val_synth: Option<DefectSynthesizer>,
    /// An update's added images: the first of their tiles in `train`, and how many times each
    /// one's feature vectors appear in a stage-2 epoch.
    added_tiles: Option<(usize, usize)>,
}

/// Runs (or resumes, or starts over) training of `data` into `out`.
pub fn train(
    cfg: TrainConfig,
    data: &Path,
    out: &Path,
    start: Start,
    stop: Arc<AtomicBool>,
) -> Result<TrainOutcome> {
    let mut run = prepare(cfg, data, out, start)?;
    run_stage1(&mut run, &stop)?;
    let features = run_stage2(&mut run, &stop)?;
    let calibration = run_calibration(&mut run, features);
    finish(run, calibration)
}

/// Checks everything a run needs before doing any work, then claims the output folder and
/// loads the images; a resumed run must match what it stored.
fn prepare(cfg: TrainConfig, data: &Path, out: &Path, start: Start) -> Result<Run> {
    let ds = Dataset::open(data)?;
    let size = cfg.model.input_size as u32;
    // textures before the output folder: a missing folder leaves nothing behind
    let textures = load_textures(&cfg.data.textures, size)?;
    prepare::claim_output(out, start)?;
    let (state, model) = if start == Start::Resume {
        let state = prepare::resumed_state(out, &cfg, data)?;
        let model = prepare::resumed_model(out)?;
        eprintln!(
            "resuming: stage 1 {}/{} epochs, stage 2 {:?}/{} epochs per flow",
            state.stage1_done,
            cfg.stage1.frozen_epochs + cfg.stage1.joint_epochs,
            state.stage2_done,
            cfg.stage2.epochs
        );
        (state, model)
    } else {
        prepare::fresh_state(&cfg, data, &ds)?
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    prepare::remove_stale_temporaries(out);
    assemble(cfg, ds, out, state, model, textures)
}

/// The run's images, foregrounds and synthesisers, from its state.
fn assemble(
    cfg: TrainConfig,
    ds: Dataset,
    out: &Path,
    mut state: TrainState,
    model: ClsFlowModel,
    textures: Vec<RgbImage>,
) -> Result<Run> {
    let (train, skipped_train) = state::network_inputs(&state.train, &cfg, "loading train")?;
    let (held, skipped_held) = state::network_inputs(&state.holdout, &cfg, "loading held-out")?;
    // unreadable files leave the run's lists, and are named in its state and summary
    let skipped: Vec<SkippedFile> = skipped_train.into_iter().chain(skipped_held).collect();
    if !skipped.is_empty() {
        let bad = |p: &PathBuf| skipped.iter().any(|s| &s.path == p);
        state.train.retain(|p| !bad(p));
        state.holdout.retain(|p| !bad(p));
        state.skipped.extend(skipped);
        eprintln!(
            "warning: {} unreadable image(s) left out (listed in training.json)",
            state.skipped.len()
        );
    }
    eprintln!(
        "{}: {} training images, {} held out for calibration",
        ds.name,
        state.train.len(),
        state.holdout.len()
    );
    if train.is_tiled() {
        eprintln!(
            "tiles: {} of the training and {} of the held-out images, {:.2} per image",
            train.tiles.len(),
            held.tiles.len(),
            1.0 / train.image_share()
        );
    }
    let rule = rule_for_run(&ds.name, cfg.data.foreground, cfg.data.fill_holes);
    let train_fgs = train
        .tiles
        .iter()
        .map(|i| foreground_mask(i, rule))
        .collect();
    let held_fgs = held
        .tiles
        .iter()
        .map(|i| foreground_mask(i, rule))
        .collect();
    let (textures, val_textures) =
        split_textures(textures, cfg.calibration.holdout_textures, cfg.seed);
    eprintln!(
        "synthetic defects: {} textures ({} more kept for calibration), {}",
        textures.len(),
        val_textures.len(),
        rule
    );
    let synth = DefectSynthesizer::new(cfg.synth.clone(), textures);
    let val_synth = (!val_textures.is_empty()).then(|| {
        let config = crate::synth::SynthConfig {
            texture_probability: 1.0,
            ..cfg.synth.clone()
        };
        DefectSynthesizer::new(config, val_textures)
    });
    if state.stage1_done == 0 && state.stage2_done == [0; 3] {
        state.save(out, &model)?;
    }
    Ok(Run {
        norm: cfg.model.backbone.normalization(),
        cfg,
        ds,
        out: out.to_path_buf(),
        state,
        model,
        train,
        held,
        train_fgs,
        held_fgs,
        synth,
        val_synth,
        added_tiles: None,
    })
}

/// Calibrates a finished run in `run_dir` anew with `calibration` settings (thresholds, weight
/// candidates, rules), writing the new model and summary into `out`; the run is left as it is.
pub fn recalibrate(
    run_dir: &Path,
    calibration: crate::config::CalibrationConfig,
    out: &Path,
) -> Result<TrainOutcome> {
    let mut state = update::finished_state(run_dir)?;
    if out.join(MODEL).exists() {
        bail!(
            "--out {} already holds a model: choose another folder",
            out.display()
        );
    }
    state.config.calibration = calibration;
    state.config.validate()?;
    let cfg = state.config.clone();
    let ds = Dataset::open(&state.data)?;
    let textures = load_textures(&cfg.data.textures, cfg.model.input_size as u32)?;
    let (model, _) = checkpoint::load(&run_dir.join(MODEL), tch::Device::cuda_if_available())
        .with_context(|| format!("{}: no trained model to recalibrate", run_dir.display()))?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let mut run = assemble(cfg, ds, out, state, model, textures)?;
    // as training leaves the model: extractor frozen and folded
    run.model.set_backbone_trainable(false);
    run.model.set_extractor_folded(true);
    let features = run_stage2(&mut run, &Arc::new(AtomicBool::new(false)))?;
    let calibration = run_calibration(&mut run, features);
    finish(run, calibration)
}

/// Stage 1: the classifier learns the synthetic defects, first on the frozen extractor, then
/// fine-tuning it in the joint epochs.
fn run_stage1(run: &mut Run, stop: &Arc<AtomicBool>) -> Result<()> {
    let Run {
        cfg,
        out,
        state,
        model,
        norm,
        train,
        train_fgs,
        synth,
        ..
    } = run;
    let (train_imgs, fgs) = (&train.tiles, &*train_fgs);
    let s1_total = cfg.stage1.frozen_epochs + cfg.stage1.joint_epochs;
    if state.stage1_done < s1_total {
        let mut opt = stage1::optimizer(&*model, &cfg.stage1)?;
        for epoch in state.stage1_done..s1_total {
            // with tiles, one of each image's per epoch (its own stream: the stage's is unchanged)
            let drawn: Option<(Vec<RgbImage>, Vec<Option<GrayImage>>)> =
                train.is_tiled().then(|| {
                    let idx = train.draw(&mut epoch_rng(cfg.seed, 10, epoch));
                    (
                        idx.iter().map(|&i| train_imgs[i].clone()).collect(),
                        idx.iter().map(|&i| fgs[i].clone()).collect(),
                    )
                });
            let (images, foregrounds) = drawn
                .as_ref()
                .map_or((train_imgs.as_slice(), fgs.as_slice()), |(i, f)| {
                    (i.as_slice(), f.as_slice())
                });
            let data = stage1::Stage1Data {
                images,
                foregrounds,
                synth: &*synth,
                norm: *norm,
            };
            let t0 = Instant::now();
            let phase = if epoch < cfg.stage1.frozen_epochs {
                "decoder only"
            } else {
                "joint"
            };
            let pb = progress(
                stage1::steps_per_epoch(&cfg.stage1, images.len()) as u64,
                &format!("stage1 {}/{}", epoch + 1, s1_total),
            );
            let mut rng = epoch_rng(cfg.seed, 1, epoch);
            // the frozen extractor runs folded (0.8x its time); a joint epoch trains it unfolded
            model.set_extractor_folded(epoch < cfg.stage1.frozen_epochs);
            let loss = stage1::train_epoch(
                &*model,
                &mut opt,
                &cfg.stage1,
                &data,
                epoch,
                &mut rng,
                stop,
                &pb,
            )?;
            pb.finish_and_clear();
            state.seconds[0] += t0.elapsed().as_secs_f64();
            let what = format!("stage 1 epoch {}", epoch + 1);
            let loss = state.end_epoch(out, model, loss, &what, |s, l| {
                s.stage1_done = epoch + 1;
                s.stage1_losses.push(l);
            })?;
            eprintln!(
                "stage 1 epoch {}/{} ({phase}): loss {loss:.4}, {:.0} s",
                epoch + 1,
                s1_total,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    model.set_backbone_trainable(false);
    // the extractor is final from here on: stage 2 and calibration run it folded, as a detector does
    model.set_extractor_folded(true);
    Ok(())
}

/// Stage 2: one flow per tap learns the density of the fine-tuned extractor's features of the
/// good images. Returns those features (calibration takes the flows' references from them).
fn run_stage2(run: &mut Run, stop: &Arc<AtomicBool>) -> Result<[tch::Tensor; 3]> {
    let Run {
        cfg,
        out,
        state,
        model,
        norm,
        train,
        added_tiles,
        ..
    } = run;
    let train_imgs = &train.tiles;
    let pb = progress(train_imgs.len() as u64, "features");
    let features = stage2::extract_features(&*model, train_imgs, &*norm, &pb);
    // with tiles, an epoch draws as many vectors as one tile per image holds
    let s2cfg = |rows: i64| {
        let mut c = cfg.stage2.clone();
        if train.is_tiled() && c.vectors_per_epoch.is_none() {
            c.vectors_per_epoch = Some((rows as f64 * train.image_share()).round() as usize);
        }
        c
    };
    pb.finish_and_clear();
    let mut jobs = features
        .iter()
        .enumerate()
        .filter(|&(tap, _)| state.stage2_done[tap] < cfg.stage2.epochs)
        .map(|(tap, f)| {
            let rows = stage2::to_rows(&with_repeats(f, *added_tiles));
            let s2 = s2cfg(rows.size()[0]);
            stage2::FlowJob::new(&*model, tap, rows, s2)
        })
        .collect::<Result<Vec<_>>>()?;
    // the flows train side by side, one epoch of each per round, and each round ends with a
    // checkpoint; flows resumed at different epochs join the rounds of their next epoch
    let first = state.stage2_done.iter().copied().min().unwrap_or(0);
    for epoch in first..cfg.stage2.epochs {
        let mut round: Vec<&mut stage2::FlowJob> = jobs
            .iter_mut()
            .filter(|j| state.stage2_done[j.tap] == epoch)
            .collect();
        let te = Instant::now();
        let bars = indicatif::MultiProgress::new();
        let rng = |tap: usize| epoch_rng(cfg.seed, 2 + tap as u64, epoch);
        let results = stage2::train_round(&mut round, epoch, rng, stop, &bars);
        state.seconds[1] += te.elapsed().as_secs_f64();
        let mut done: Vec<(usize, Option<f64>, f64)> = round
            .iter()
            .zip(results)
            .map(|(j, r)| r.map(|(loss, seconds)| (j.tap, loss, seconds)))
            .collect::<Result<_>>()?;
        // the epochs that finished are recorded before an interrupted one stops the run
        done.sort_by_key(|&(tap, loss, _)| (loss.is_none(), tap));
        for (tap, loss, seconds) in done {
            let what = format!("stage 2 (flow {tap}, epoch {})", epoch + 1);
            let loss = state.end_epoch(out, model, loss, &what, |s, l| {
                s.stage2_done[tap] = epoch + 1;
                s.stage2_losses[tap].push(l);
            })?;
            eprintln!(
                "stage 2 flow {tap} epoch {}/{}: loss {loss:.4}, {seconds:.0} s",
                epoch + 1,
                cfg.stage2.epochs
            );
        }
    }

    Ok(features)
}

/// Calibration: the flows' references from the training features, then weights and
/// thresholds from held-out good images and synthetic defects.
fn run_calibration(run: &mut Run, features: [tch::Tensor; 3]) -> Calibration {
    let tc = Instant::now();
    eprintln!(
        "calibrating on {} held-out good images and synthetic defects",
        run.held.groups.len()
    );
    let references = TapReferences::from_maps(&stage2::tap_log_prob_maps(&run.model, &features));
    drop(features);
    let (images, layouts, fgs) = if run.held.tiles.is_empty() {
        eprintln!(
            "warning: no held-out images ({} of {} training images with holdout_fraction {}): \
             calibrating on training images, thresholds will be optimistic",
            run.state.holdout.len(),
            run.state.train.len() + run.state.holdout.len(),
            run.cfg.calibration.holdout_fraction
        );
        (&run.train.tiles, &run.train.layouts, &run.train_fgs)
    } else {
        (&run.held.tiles, &run.held.layouts, &run.held_fgs)
    };
    let calibration = calibrate(&CalibrationInput {
        model: &run.model,
        references: &references,
        holdout: images,
        layouts,
        holdout_foregrounds: fgs,
        sources: &run.train.tiles,
        synth: run.val_synth.as_ref().unwrap_or(&run.synth),
        config: &run.cfg.calibration,
        norm: &run.norm,
        seed: run.cfg.seed,
    });
    run.state.seconds[2] = tc.elapsed().as_secs_f64();
    calibration
}

/// Writes the calibrated checkpoint and the training summary (and drops the model an
/// `--overwrite` kept aside, now that the new one is written).
fn finish(run: Run, calibration: Calibration) -> Result<TrainOutcome> {
    let Run {
        cfg,
        ds,
        out,
        state,
        model,
        train,
        held,
        ..
    } = run;
    let summary = serde_json::json!({
        "dataset": ds.name,
        "data": state.data.display().to_string(),
        "train_images": train.groups.len(),
        "holdout_images": held.groups.len(),
        "skipped_files": state.skipped,
        "resize": cfg.model.resize.name(),
        "train_tiles": train.tiles.len(),
        "holdout_tiles": held.tiles.len(),
        "config": cfg,
        "stage1_losses": state.stage1_losses,
        "stage2_losses": state.stage2_losses,
        "seconds": {"stage1": state.seconds[0], "stage2": state.seconds[1], "calibration": state.seconds[2]},
        "peak_rss_mib": peak_rss_mib(),
        "calibration": calibration,
        "update": state.update,
    });
    let model_path = out.join(MODEL);
    checkpoint::save(
        &model_path,
        &model,
        &calibration.scoring,
        &ds.name,
        Some(summary.clone()),
    )?;
    let summary_path = out.join("training.json");
    write_atomic(
        &summary_path,
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    state.save_state(&out)?;
    let _ = std::fs::remove_file(out.join(format!("{MODEL}{BACKUP_SUFFIX}")));
    Ok(TrainOutcome {
        model: model_path,
        summary: summary_path,
        calibration,
        state,
    })
}

/// Features (N, C, h, w) with those from `added` = (first, repeat) on repeated `repeat` times
/// in all (the added images of an update); the features themselves without.
fn with_repeats(features: &tch::Tensor, added: Option<(usize, usize)>) -> tch::Tensor {
    match added {
        Some((first, repeat)) if repeat > 1 => {
            let n = features.size()[0];
            let tail = features.narrow(0, first as i64, n - first as i64);
            let mut parts = vec![features.shallow_clone()];
            parts.extend((1..repeat).map(|_| tail.shallow_clone()));
            tch::Tensor::cat(&parts, 0)
        }
        _ => features.shallow_clone(),
    }
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn epoch_rng(seed: u64, stage: u64, epoch: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(1_000_003)
            .wrapping_add(stage * 10_000 + epoch as u64),
    )
}

/// Splits the textures into stage 1's and calibration's: a seeded `fraction` (at least one when
/// the fraction is positive and there are two or more) goes to calibration.
fn split_textures(
    mut textures: Vec<RgbImage>,
    fraction: f64,
    seed: u64,
) -> (Vec<RgbImage>, Vec<RgbImage>) {
    if fraction <= 0.0 || textures.len() < 2 {
        return (textures, Vec::new());
    }
    textures.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x07e4_70e5));
    let n = ((textures.len() as f64 * fraction).round() as usize).clamp(1, textures.len() - 1);
    let held = textures.split_off(textures.len() - n);
    (textures, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texture_split_is_seeded_and_disjoint() {
        let tex: Vec<RgbImage> = (0..8u8)
            .map(|i| RgbImage::from_pixel(1, 1, image::Rgb([i, 0, 0])))
            .collect();
        let (a, b) = split_textures(tex.clone(), 0.25, 3);
        assert_eq!((a.len(), b.len()), (6, 2));
        let ids = |v: &[RgbImage]| v.iter().map(|t| t.get_pixel(0, 0)[0]).collect::<Vec<_>>();
        let mut all = [ids(&a), ids(&b)].concat();
        all.sort();
        assert_eq!(
            all,
            (0..8).collect::<Vec<u8>>(),
            "every texture exactly once"
        );
        assert_eq!(
            ids(&split_textures(tex.clone(), 0.25, 3).1),
            ids(&b),
            "seeded"
        );
        assert_eq!(split_textures(tex.clone(), 0.0, 3).1.len(), 0);
        assert_eq!(
            split_textures(tex[..1].to_vec(), 0.5, 3).1.len(),
            0,
            "one texture stays"
        );
    }
}
