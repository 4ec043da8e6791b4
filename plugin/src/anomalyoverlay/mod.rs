//! `anomalyoverlay`: draws what `anomalydetect` found (heatmap, region boxes or outlines, score
//! text) onto the video, in its own format: packed RGB-like, or NV12 and I420 in YUV.

use crate::meta::{AnomalyInfo, RegionInfo};
use clsflow::detector::AnomalyMap;
use clsflow::draw::{Canvas, OverlayStyle, paint};
use gst::glib;
use gst::prelude::*;

mod imp;

/// Paints what the detector found on a frame's canvas of `size` (width, height) as `style` asks:
/// the anomaly map resized to it (when the heatmap or outlines need it) and the regions' boxes.
pub fn paint_result(
    canvas: &mut Canvas,
    size: (usize, usize),
    info: &AnomalyInfo,
    regions: &[RegionInfo],
    style: &OverlayStyle,
) {
    let map_ok =
        info.map.len() == (info.map_width * info.map_height) as usize && info.map_width > 0;
    let map = if map_ok && (style.heatmap || style.outlines) {
        AnomalyMap {
            width: info.map_width as usize,
            height: info.map_height as usize,
            data: info.map.clone(),
        }
        .resized(size.0, size.1)
    } else {
        AnomalyMap {
            width: 0,
            height: 0,
            data: Vec::new(),
        }
    };
    let boxes: Vec<_> = regions.iter().map(|r| r.rect).collect();
    paint(canvas, &map, info.region_threshold as f32, &boxes, style);
}

/// What the overlay draws.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstAnomalyOverlayMode")]
pub enum OverlayMode {
    /// Heatmap only.
    #[enum_value(name = "Heatmap", nick = "heatmap")]
    Heatmap = 0,
    /// Region boxes only.
    #[enum_value(name = "Boxes", nick = "boxes")]
    Boxes = 1,
    /// Region outlines only.
    #[enum_value(name = "Outlines", nick = "outlines")]
    Outlines = 2,
    /// Heatmap and boxes.
    #[default]
    #[enum_value(name = "Heatmap and boxes", nick = "heatmap-boxes")]
    HeatmapBoxes = 3,
    /// Heatmap and outlines.
    #[enum_value(name = "Heatmap and outlines", nick = "heatmap-outlines")]
    HeatmapOutlines = 4,
}

glib::wrapper! {
    /// The `anomalyoverlay` element.
    pub struct AnomalyOverlay(ObjectSubclass<imp::AnomalyOverlay>) @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Registers the element with a plugin.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    OverlayMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "anomalyoverlay",
        gst::Rank::NONE,
        AnomalyOverlay::static_type(),
    )
}
