//! The training run: folders -> samples -> stage 1 -> stage 2 -> calibration -> checkpoint.
//! After every epoch the model and a state file are written atomically to the output folder, so
//! `--resume` continues after a crash or Ctrl-C (Adam moments restart at the resumed epoch).

use crate::calibrate::{Calibration, calibrate};
use crate::config::TrainConfig;
use crate::data::{Dataset, load_images_for, progress};
use crate::synth::DefectSynthesizer;
use crate::synth::foreground::{ForegroundRule, foreground_mask, rule_for_category};
use crate::synth::textures::load_textures;
use crate::tiles::TiledImages;
use crate::{stage1, stage2};
use anyhow::{Context, Result, bail};
use clsflow::checkpoint::{self, write_atomic};
use clsflow::{ClsFlowModel, Scoring, TapReferences};
use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Progress of a run, saved after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// The configuration of the run.
    pub config: TrainConfig,
    /// Dataset folder.
    pub data: PathBuf,
    /// Good images the stages train on.
    pub train: Vec<PathBuf>,
    /// Held-out good images (calibration only).
    pub holdout: Vec<PathBuf>,
    /// Stage-1 epochs completed.
    pub stage1_done: usize,
    /// Stage-2 epochs completed per flow.
    pub stage2_done: [usize; 3],
    /// Mean loss of every completed stage-1 epoch.
    pub stage1_losses: Vec<f64>,
    /// Mean loss of every completed stage-2 epoch, per flow.
    pub stage2_losses: [Vec<f64>; 3],
    /// Seconds spent per stage so far.
    pub seconds: [f64; 3],
}

impl TrainState {
    /// Reads the state that a run saved in its output folder `out`.
    pub fn load(out: &Path) -> Result<TrainState> {
        let path = out.join(STATE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
    }

    /// The run's good images as its networks saw them (resized, and cut into tiles with
    /// `resize = "tile"`, by the run's own config): those the stages trained on, and the
    /// held-out ones (for diagnostics on training data, e.g. `training/examples/good_gap.rs`).
    pub fn good_images(&self) -> Result<(Vec<RgbImage>, Vec<RgbImage>)> {
        let load = |paths: &[PathBuf], what: &str| -> Result<Vec<RgbImage>> {
            Ok(network_inputs(paths, &self.config, what)?.tiles)
        };
        Ok((
            load(&self.train, "training images")?,
            load(&self.holdout, "held-out images")?,
        ))
    }
}

/// Images of `paths` as the run's networks see them: resized by its `resize` and cut into
/// tiles (one tile per image with `stretch`); none loaded, and no progress bar, for no paths.
fn network_inputs(paths: &[PathBuf], cfg: &TrainConfig, what: &str) -> Result<TiledImages> {
    let size = cfg.model.input_size as u32;
    let images = if paths.is_empty() {
        Vec::new()
    } else {
        load_images_for(paths, size, cfg.model.resize, cfg.data.on_bad_image, what)?
            .into_iter()
            .map(|(_, img)| img)
            .collect()
    };
    Ok(TiledImages::new(images, size))
}

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

const STATE: &str = "state.json";
const LAST: &str = "last.clsflow";
/// File name of the final checkpoint in the output folder.
pub const MODEL: &str = "model.clsflow";

fn save_state(
    out: &Path,
    state: &TrainState,
    model: &ClsFlowModel,
    scoring: &Scoring,
) -> Result<()> {
    checkpoint::save(&out.join(LAST), model, scoring, "in-progress", None)?;
    write_atomic(
        &out.join(STATE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    Ok(())
}

/// Ends an epoch: records its loss with `record` and saves model and state; an interrupted
/// epoch (no loss) saves the progress so far and stops with how to resume.
fn end_epoch(
    out: &Path,
    state: &mut TrainState,
    model: &ClsFlowModel,
    loss: Option<f64>,
    what: &str,
    record: impl FnOnce(&mut TrainState, f64),
) -> Result<f64> {
    let Some(loss) = loss else {
        save_state(out, state, model, &Scoring::default())?;
        bail!("interrupted in {what}: progress saved; continue with --resume");
    };
    record(state, loss);
    save_state(out, state, model, &Scoring::default())?;
    Ok(loss)
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

/// Runs (or resumes) training of `data` into `out`.
pub fn train(
    cfg: TrainConfig,
    data: &Path,
    out: &Path,
    resume: bool,
    stop: Arc<AtomicBool>,
) -> Result<TrainOutcome> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let ds = Dataset::open(data)?;
    let (mut state, mut model) = if resume {
        let state = TrainState::load(out).with_context(|| {
            format!(
                "--resume: no usable {} in {} (nothing to resume)",
                STATE,
                out.display()
            )
        })?;
        if state.config != cfg {
            eprintln!(
                "note: resuming with the configuration stored in {} (command-line settings ignored)",
                out.join(STATE).display()
            );
        }
        let (model, _) = checkpoint::load(&out.join(LAST), tch::Device::cuda_if_available())
            .with_context(|| "--resume: cannot load the last epoch's checkpoint")?;
        eprintln!(
            "resuming: stage 1 {}/{} epochs, stage 2 {:?}/{} epochs per flow",
            state.stage1_done,
            state.config.stage1.frozen_epochs + state.config.stage1.joint_epochs,
            state.stage2_done,
            state.config.stage2.epochs
        );
        (state, model)
    } else {
        tch::manual_seed(cfg.seed as i64);
        let mut model = ClsFlowModel::new(cfg.model_config(), tch::Device::cuda_if_available())?;
        let w = cfg.weights_path()?;
        model.load_backbone_weights(&w)?;
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
            config: cfg,
            data: data.to_path_buf(),
            train,
            holdout,
            stage1_done: 0,
            stage2_done: [0; 3],
            stage1_losses: Vec::new(),
            stage2_losses: [Vec::new(), Vec::new(), Vec::new()],
            seconds: [0.0; 3],
        };
        (state, model)
    };
    let cfg = state.config.clone();
    let size = cfg.model.input_size as u32;
    let norm = cfg.model.backbone.normalization();
    // the run's own list: `max_train_images` and the held-out split are applied there
    let train_files: Vec<PathBuf> = state.train.clone();
    eprintln!(
        "{}: {} training images, {} held out for calibration",
        ds.name,
        train_files.len(),
        state.holdout.len()
    );
    let resize = cfg.model.resize;
    let train_tiled = network_inputs(&train_files, &cfg, "loading train")?;
    let hold_tiled = network_inputs(&state.holdout, &cfg, "loading held-out")?;
    if train_tiled.is_tiled() {
        eprintln!(
            "tiles: {} of the training and {} of the held-out images, {:.2} per image",
            train_tiled.tiles.len(),
            hold_tiled.tiles.len(),
            1.0 / train_tiled.image_share()
        );
    }
    let (train_imgs, hold_imgs) = (&train_tiled.tiles, &hold_tiled.tiles);
    let mut rule = rule_for_category(&ds.name);
    if let Some(m) = cfg.data.foreground {
        rule = ForegroundRule { mode: m, ..rule };
    }
    if let Some(f) = cfg.data.fill_holes {
        rule.fill_holes = f;
    }
    let fgs: Vec<Option<GrayImage>> = train_imgs
        .iter()
        .map(|i| foreground_mask(i, rule))
        .collect();
    let hold_fgs: Vec<Option<GrayImage>> =
        hold_imgs.iter().map(|i| foreground_mask(i, rule)).collect();
    let textures = load_textures(&cfg.data.textures, size)?;
    let (textures, val_textures) =
        split_textures(textures, cfg.calibration.holdout_textures, cfg.seed);
    eprintln!(
        "synthetic defects: {} textures ({} more kept for calibration), foreground {:?}",
        textures.len(),
        val_textures.len(),
        rule
    );
    let synth = DefectSynthesizer::new(cfg.synth.clone(), textures);
    // validation defects from the held-out textures only, when there are any
    let val_synth = (!val_textures.is_empty()).then(|| {
        let config = crate::synth::SynthConfig {
            texture_probability: 1.0,
            ..cfg.synth.clone()
        };
        DefectSynthesizer::new(config, val_textures)
    });

    // Stage 1
    let s1_total = cfg.stage1.frozen_epochs + cfg.stage1.joint_epochs;
    if state.stage1_done < s1_total {
        let mut opt = stage1::optimizer(&model, &cfg.stage1)?;
        for epoch in state.stage1_done..s1_total {
            // with tiles, one of each image's per epoch (its own stream: the stage's is unchanged)
            let drawn: Option<(Vec<RgbImage>, Vec<Option<GrayImage>>)> =
                train_tiled.is_tiled().then(|| {
                    let idx = train_tiled.draw(&mut epoch_rng(cfg.seed, 10, epoch));
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
                synth: &synth,
                norm,
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
                &model,
                &mut opt,
                &cfg.stage1,
                &data,
                epoch,
                &mut rng,
                &stop,
                &pb,
            )?;
            pb.finish_and_clear();
            state.seconds[0] += t0.elapsed().as_secs_f64();
            let what = format!("stage 1 epoch {}", epoch + 1);
            let loss = end_epoch(out, &mut state, &model, loss, &what, |s, l| {
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

    // Stage 2
    let pb = progress(train_imgs.len() as u64, "features");
    let features = stage2::extract_features(&model, train_imgs, &norm, &pb);
    // with tiles, an epoch draws as many vectors as one tile per image holds
    let s2cfg = |rows: i64| {
        let mut c = cfg.stage2.clone();
        if train_tiled.is_tiled() && c.vectors_per_epoch.is_none() {
            c.vectors_per_epoch = Some((rows as f64 * train_tiled.image_share()).round() as usize);
        }
        c
    };
    pb.finish_and_clear();
    let mut jobs = features
        .iter()
        .enumerate()
        .filter(|&(tap, _)| state.stage2_done[tap] < cfg.stage2.epochs)
        .map(|(tap, f)| {
            let rows = stage2::to_rows(f);
            let s2 = s2cfg(rows.size()[0]);
            stage2::FlowJob::new(&model, tap, rows, s2)
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
        let results = stage2::train_round(&mut round, epoch, rng, &stop, &bars);
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
            let loss = end_epoch(out, &mut state, &model, loss, &what, |s, l| {
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
    // the flows' training rows are not needed past this point: free them before calibration
    drop(jobs);

    // Calibration
    let tc = Instant::now();
    eprintln!(
        "calibrating on {} held-out good images and synthetic defects",
        hold_tiled.groups.len()
    );
    let references = TapReferences::from_maps(&stage2::tap_log_prob_maps(&model, &features));
    drop(features);
    let (cal_imgs, cal_layouts, cal_fgs) = if hold_imgs.is_empty() {
        eprintln!(
            "warning: no held-out images (holdout_fraction 0): calibrating on training images, thresholds will be optimistic"
        );
        (train_imgs, &train_tiled.layouts, &fgs)
    } else {
        (hold_imgs, &hold_tiled.layouts, &hold_fgs)
    };
    let calibration = calibrate(
        &model,
        &references,
        cal_imgs,
        cal_layouts,
        cal_fgs,
        train_imgs,
        val_synth.as_ref().unwrap_or(&synth),
        &cfg.calibration,
        &norm,
        cfg.seed,
    );
    state.seconds[2] = tc.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "dataset": ds.name,
        "data": data.display().to_string(),
        "train_images": train_tiled.groups.len(),
        "holdout_images": hold_tiled.groups.len(),
        "resize": resize.name(),
        "train_tiles": train_imgs.len(),
        "holdout_tiles": hold_imgs.len(),
        "config": cfg,
        "stage1_losses": state.stage1_losses,
        "stage2_losses": state.stage2_losses,
        "seconds": {"stage1": state.seconds[0], "stage2": state.seconds[1], "calibration": state.seconds[2]},
        "peak_rss_mib": peak_rss_mib(),
        "calibration": calibration,
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
    Ok(TrainOutcome {
        model: model_path,
        summary: summary_path,
        calibration,
        state,
    })
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
