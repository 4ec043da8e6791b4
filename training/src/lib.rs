//! clsflow-train: turns a folder of good images into a calibrated clsflow detector and measures it.
//!
//! The flow of training, by module: [`data`] (folders -> images) -> [`synth`] (samples with
//! synthetic defects) -> [`stage1`] (classifier fine-tunes the shared extractor) -> [`stage2`]
//! (flows on the frozen extractor) -> [`calibrate`] (flow references, fusion weight, threshold,
//! no test labels) -> checkpoint; then [`evaluate`] and [`report`] on the test split.
//! [`demo_data`] makes the embedded demo category.

pub mod data;
pub mod synth;
