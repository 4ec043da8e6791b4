//! GStreamer plugin `clsflow`: visual anomaly detection on live video.
//!
//! - [`anomalydetect`]: caps -> tensor ([`frame`]) -> clsflow detector -> maps and regions ->
//!   metadata ([`meta`]) on each buffer;
//! - [`anomalyoverlay`]: metadata -> drawing (`clsflow::draw`) on the frame.

use gst::glib;

pub mod anomalydetect;
pub mod anomalyoverlay;
pub mod frame;
pub mod meta;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    anomalydetect::register(plugin)?;
    anomalyoverlay::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    clsflow,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    // no public repository yet: GStreamer's own wording for an unknown origin
    "Unknown package origin",
    env!("BUILD_REL_DATE")
);
