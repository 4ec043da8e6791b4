//! # clsflow
//!
//! Visual anomaly detection after Oh & Kim (IEEE Access 2024): ONE feature extractor shared by a
//! pixelwise classifier (trained on synthetic defects, fine-tuning the extractor) and by
//! conditional normalizing flows (modelling the density of normal features). The two anomaly maps
//! are fused. Models are trained with `clsflow-train`; this crate loads and runs them.
//!
//! ```no_run
//! use clsflow::{Detector, DetectorOptions, DeviceSpec};
//!
//! let options = DetectorOptions { device: DeviceSpec::Auto, half: false };
//! let detector = Detector::load("runs/demo/model/model.clsflow", &options)?;
//! let image = image::open("part.png")?.to_rgb8();
//! let d = detector.detect_one(&image)?;
//! println!("score {:.3} (normalised {:.2}): anomalous {}", d.score, d.normalized_score, d.anomalous);
//! for r in &d.regions {
//!     println!("defect at {},{} size {}x{}", r.x, r.y, r.width, r.height);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The front door: [`Detector`] ([`Detector::detect_one`], [`Detector::detect`]) with
//! [`DetectorOptions`] and [`DeviceSpec`]; each [`Detection`] holds the score, its normalised
//! form (0.5 at the calibrated threshold), the verdict, the [`AnomalyMap`]s and the defect
//! [`FrameRegion`]s. [`colormap`] and [`draw`] render maps and overlays; [`metrics`] evaluates
//! maps against ground truth; [`checkpoint`] reads a model file's manifest.
//!
//! A program that scores many images on its main thread should call
//! [`alloc::keep_tensor_memory`] first (libtorch's large tensors otherwise re-fault their pages
//! in every pass), and one that also runs libtorch work of its own from several threads should
//! run it through [`torch_thread::run`]. The flow of a frame through the modules is described in
//! `docs/architecture.md`.
#![warn(missing_docs)]

pub mod alloc;
pub mod checkpoint;
pub mod colormap;
pub mod device;
pub mod draw;
mod error;
pub mod metrics;
pub mod paths;
pub mod regions;
pub mod torch_thread;

// The networks and the scoring internals, public for the plugin and the trainer only.
#[doc(hidden)]
pub mod backbone;
#[doc(hidden)]
pub mod decoder;
#[doc(hidden)]
pub mod detector;
#[doc(hidden)]
pub mod flow;
#[doc(hidden)]
pub mod layers;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod preprocess;
#[doc(hidden)]
pub mod reference;
#[doc(hidden)]
pub mod resample;
#[doc(hidden)]
pub mod scoring;
#[doc(hidden)]
pub mod tiling;
#[doc(hidden)]
pub mod weights;

pub use backbone::{BackboneKind, Normalization};
pub use detector::{AnomalyMap, Detection, Detector, DetectorOptions};
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use model::{ClsFlowModel, ModelConfig};
pub use regions::FrameRegion;
pub use scoring::{Scoring, TapReference, TapReferences};
pub use tch;
pub use tiling::{InputResize, TileLayout};
