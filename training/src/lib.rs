//! clsflow-train: turns a folder of good images into a calibrated clsflow detector and measures it.
//!
//! The flow of training, by module: [`data`] (folders -> images; [`recording`]: recordings ->
//! frames -> images) -> [`tiles`] (images -> input-sized
//! tiles, with `resize = "tile"`) -> [`synth`] (samples with
//! synthetic defects) -> [`stage1`] (classifier fine-tunes the shared extractor) -> [`stage2`]
//! (flows on the frozen extractor) -> [`calibrate`] (flow references, fusion weight, threshold,
//! no test labels) -> checkpoint, all driven by [`train`]; then [`evaluate`] and [`report`] on the
//! test split. [`demo_data`] makes the embedded demo category.

pub mod calibrate;
pub mod config;
pub mod data;
pub mod demo_data;
pub mod epoch_loss;
pub mod evaluate;
pub mod export;
pub mod predict;
pub mod recording;
pub mod report;
pub mod schedule;
pub mod stage1;
pub mod stage2;
pub mod synth;
pub mod tiles;
pub mod timing;
pub mod train;
