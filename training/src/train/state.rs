//! A run's progress on disk: after every epoch the model (`last.clsflow`) and the state
//! (`state.json`) are written atomically to the output folder, so that `--resume` continues
//! after a crash, a kill or Ctrl-C from the last finished epoch.

use super::Interrupted;
use crate::config::TrainConfig;
use crate::data::SkippedFile;
use crate::tiles::TiledImages;
use anyhow::{Context, Result};
use clsflow::checkpoint::{self, write_atomic};
use clsflow::{ClsFlowModel, Scoring};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub(super) const STATE: &str = "state.json";
pub(super) const LAST: &str = "last.clsflow";

/// Progress of a run, saved after every epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// The configuration of the run.
    pub config: TrainConfig,
    /// Dataset folder.
    pub data: PathBuf,
    /// Good images the stages train on (readable ones only).
    pub train: Vec<PathBuf>,
    /// Held-out good images (calibration only).
    pub holdout: Vec<PathBuf>,
    /// Files of the dataset that could not be read, with their errors.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
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
    /// For a model made by `update`: the run it started from and the images it added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<super::UpdateRecord>,
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
    /// held-out ones.
    pub fn good_images(&self) -> Result<(Vec<RgbImage>, Vec<RgbImage>)> {
        let load = |paths: &[PathBuf], what: &str| -> Result<Vec<RgbImage>> {
            Ok(network_inputs(paths, &self.config, what)?.0.tiles)
        };
        Ok((
            load(&self.train, "training images")?,
            load(&self.holdout, "held-out images")?,
        ))
    }

    /// Saves the state and the model as they are now.
    pub(super) fn save(&self, out: &Path, model: &ClsFlowModel) -> Result<()> {
        checkpoint::save(
            &out.join(LAST),
            model,
            &Scoring::default(),
            "in-progress",
            None,
        )?;
        self.save_state(out)
    }

    /// Saves the state alone (a finished run's: a recalibrated or updated model can then be
    /// updated or recalibrated in turn).
    pub(super) fn save_state(&self, out: &Path) -> Result<()> {
        write_atomic(
            &out.join(STATE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Ends an epoch: records its loss with `record` and saves model and state; an interrupted
    /// epoch (no loss) saves the progress so far and stops with [`Interrupted`].
    pub(super) fn end_epoch(
        &mut self,
        out: &Path,
        model: &ClsFlowModel,
        loss: Option<f64>,
        what: &str,
        record: impl FnOnce(&mut TrainState, f64),
    ) -> Result<f64> {
        let Some(loss) = loss else {
            self.save(out, model)?;
            return Err(Interrupted(format!(
                "interrupted in {what}: progress saved in {}; continue with --resume",
                out.display()
            ))
            .into());
        };
        record(self, loss);
        self.save(out, model)?;
        Ok(loss)
    }
}

/// Images of `paths` as the run's networks see them: resized by its `resize` and cut into
/// tiles (one tile per image with `stretch`), with the files that could not be read; none
/// loaded, and no progress bar, for no paths.
pub(super) fn network_inputs(
    paths: &[PathBuf],
    cfg: &TrainConfig,
    what: &str,
) -> Result<(TiledImages, Vec<SkippedFile>)> {
    let size = cfg.model.input_size as u32;
    if paths.is_empty() {
        return Ok((TiledImages::new(Vec::new(), size), Vec::new()));
    }
    let loaded =
        crate::data::load_images_for(paths, size, cfg.model.resize, cfg.data.on_bad_image, what)?;
    let images = loaded.images.into_iter().map(|(_, img)| img).collect();
    Ok((TiledImages::new(images, size), loaded.skipped))
}
