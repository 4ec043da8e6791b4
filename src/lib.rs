//! # clsflow
//!
//! Visual anomaly detection after Oh & Kim (IEEE Access 2024): ONE feature extractor shared by a
//! pixelwise classifier (trained on synthetic defects, fine-tuning the extractor) and by
//! conditional normalizing flows (modelling the density of normal features). The two anomaly maps
//! are fused.
//!
//! The flow of a frame through this crate:
//! [`preprocess`] (image -> normalised tensor; [`tiling`] for the aspect-keeping input) -> [`backbone`] (three taps) -> [`decoder`] and
//! [`flow`] (the two heads) -> [`scoring`] (maps, fusion, image score) -> [`regions`] (defect
//! regions). [`Detector`] wraps all of it; [`checkpoint`] stores a trained model; [`metrics`]
//! evaluates maps against ground truth.
#![warn(missing_docs)]

pub mod alloc;
pub mod backbone;
pub mod checkpoint;
pub mod colormap;
pub mod decoder;
pub mod detector;
pub mod device;
pub mod draw;
mod error;
pub mod flow;
pub mod layers;
pub mod metrics;
pub mod model;
pub mod paths;
pub mod preprocess;
pub mod reference;
pub mod regions;
pub mod resample;
pub mod scoring;
pub mod tiling;
pub mod torch_thread;
pub mod weights;

pub use backbone::{BackboneKind, Normalization};
pub use detector::{AnomalyMap, Detection, Detector, DetectorOptions};
pub use error::{Error, Result};
pub use model::{ClsFlowModel, ModelConfig};
pub use scoring::{Scoring, TapAggregation, TapReference, TapReferences, TapStats};
pub use tch;
pub use tiling::{InputResize, TileLayout};
