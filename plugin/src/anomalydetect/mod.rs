//! `anomalydetect`: runs a clsflow detector on raw video and attaches anomaly maps, scores and
//! defect regions as metadata (see [`crate::meta`]).
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! \
//!     anomalydetect model=model.clsflow ! anomalyoverlay ! videoconvert ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

pub mod drift;
mod imp;
mod mqtt;
mod results;
pub mod shared;
pub mod snapshots;

/// How `anomalydetect` encodes the snapshots of flagged frames.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstAnomalyDetectSnapshotFormat")]
pub enum SnapshotFormat {
    /// JPEG, quality 90.
    #[default]
    #[enum_value(name = "JPEG", nick = "jpeg")]
    Jpeg = 0,
    /// PNG (lossless).
    #[enum_value(name = "PNG", nick = "png")]
    Png = 1,
}

glib::wrapper! {
    /// The `anomalydetect` element.
    pub struct AnomalyDetect(ObjectSubclass<imp::AnomalyDetect>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Registers the element with a plugin.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    SnapshotFormat::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "anomalydetect",
        gst::Rank::NONE,
        AnomalyDetect::static_type(),
    )
}
