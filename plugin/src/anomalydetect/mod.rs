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

glib::wrapper! {
    /// The `anomalydetect` element.
    pub struct AnomalyDetect(ObjectSubclass<imp::AnomalyDetect>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Registers the element with a plugin.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "anomalydetect",
        gst::Rank::NONE,
        AnomalyDetect::static_type(),
    )
}
