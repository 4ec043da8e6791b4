//! Implementation of `anomalyoverlay`: metadata -> drawing on the frame.

use super::OverlayMode;
use crate::frame::{OVERLAY_FORMATS, layout, yuv_colorimetry};
use crate::meta::{AnomalyInfo, RegionInfo};
use ab_glyph::FontArc;
use clsflow::draw::{
    Canvas, Chroma, DEFAULT_FONT, OverlayStyle, argb_to_rgb, caption, draw_caption, load_font,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "anomalyoverlay",
        gst::DebugColorFlags::empty(),
        Some("clsflow anomaly overlay"),
    )
});

#[derive(Debug, Clone)]
struct Settings {
    mode: OverlayMode,
    alpha: f64,
    box_color: u32,
    text_color: u32,
    text: bool,
    only_anomalous: bool,
    line_width: u32,
    font: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: OverlayMode::default(),
            alpha: 0.45,
            box_color: 0xffff_3030,
            text_color: 0xffff_ffff,
            text: true,
            only_anomalous: false,
            line_width: 2,
            font: DEFAULT_FONT.into(),
        }
    }
}

/// The element's private state.
#[derive(Default)]
pub struct AnomalyOverlay {
    settings: Mutex<Settings>,
    font: Mutex<Option<FontArc>>,
}

#[glib::object_subclass]
impl ObjectSubclass for AnomalyOverlay {
    const NAME: &'static str = "GstAnomalyOverlay";
    type Type = super::AnomalyOverlay;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for AnomalyOverlay {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = Settings::default();
            vec![
                glib::ParamSpecEnum::builder_with_default("mode", d.mode)
                    .nick("Mode")
                    .blurb("What to draw: heatmap, region boxes, region outlines, or the heatmap with either")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("alpha")
                    .nick("Alpha")
                    .blurb("Opacity of the heatmap (0 = invisible, 1 = opaque)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.alpha)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("box-color")
                    .nick("Box colour")
                    .blurb("Colour of region boxes and outlines, as 0xAARRGGBB")
                    .default_value(d.box_color)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("text-color")
                    .nick("Text colour")
                    .blurb("Colour of the score text, as 0xAARRGGBB")
                    .default_value(d.text_color)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("text")
                    .nick("Text")
                    .blurb("Draw the score, threshold and verdict in the top-left corner")
                    .default_value(d.text)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("only-anomalous")
                    .nick("Only anomalous")
                    .blurb("Draw nothing on frames that are not anomalous")
                    .default_value(d.only_anomalous)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("line-width")
                    .nick("Line width")
                    .blurb("Thickness of boxes and outlines in pixels")
                    .minimum(1)
                    .maximum(64)
                    .default_value(d.line_width)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("font")
                    .nick("Font")
                    .blurb("TrueType font file for the text (Debian: fonts-dejavu-core)")
                    .default_value(Some(DEFAULT_FONT))
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode = value.get().expect("type checked"),
            "alpha" => s.alpha = value.get().expect("type checked"),
            "box-color" => s.box_color = value.get().expect("type checked"),
            "text-color" => s.text_color = value.get().expect("type checked"),
            "text" => s.text = value.get().expect("type checked"),
            "only-anomalous" => s.only_anomalous = value.get().expect("type checked"),
            "line-width" => s.line_width = value.get().expect("type checked"),
            "font" => {
                s.font = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_else(|| DEFAULT_FONT.into())
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "alpha" => s.alpha.to_value(),
            "box-color" => s.box_color.to_value(),
            "text-color" => s.text_color.to_value(),
            "text" => s.text.to_value(),
            "only-anomalous" => s.only_anomalous.to_value(),
            "line-width" => s.line_width.to_value(),
            "font" => s.font.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for AnomalyOverlay {}

impl ElementImpl for AnomalyOverlay {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Anomaly overlay",
                "Filter/Effect/Video",
                "Draws the anomaly heatmap, defect regions and score attached by anomalydetect",
                "clsflow developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(OVERLAY_FORMATS)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for AnomalyOverlay {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        let font = if s.text {
            match load_font(&s.font) {
                Ok(f) => Some(f),
                Err(e) => {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NotFound,
                        ["Font unusable ({}); drawing without text", e]
                    );
                    None
                }
            }
        } else {
            None
        };
        *self.font.lock().unwrap() = font;
        Ok(())
    }
}

impl VideoFilterImpl for AnomalyOverlay {
    fn transform_frame_ip(
        &self,
        frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(info) = AnomalyInfo::from_buffer(frame.buffer()) else {
            gst::trace!(CAT, imp = self, "no anomaly metadata on this buffer");
            return Ok(gst::FlowSuccess::Ok);
        };
        let regions = RegionInfo::all_from_buffer(frame.buffer());
        let s = self.settings.lock().unwrap().clone();
        if s.only_anomalous && !info.anomalous {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let mut canvas = match canvas_of(frame) {
            Ok(c) => c,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                return Err(gst::FlowError::Error);
            }
        };
        let box_colour = argb_to_rgb(s.box_color);
        let style = OverlayStyle {
            heatmap: matches!(
                s.mode,
                OverlayMode::Heatmap | OverlayMode::HeatmapBoxes | OverlayMode::HeatmapOutlines
            ),
            outlines: matches!(s.mode, OverlayMode::Outlines | OverlayMode::HeatmapOutlines),
            boxes: matches!(s.mode, OverlayMode::Boxes | OverlayMode::HeatmapBoxes),
            alpha: s.alpha as f32,
            line_colour: box_colour,
            line_width: s.line_width,
        };
        super::paint_result(&mut canvas, (w, h), &info, &regions, &style);
        if s.text
            && let Some(font) = self.font.lock().unwrap().as_ref()
        {
            let text = caption(
                info.anomalous,
                info.score,
                info.threshold,
                info.regions as usize,
            );
            let colour = if info.anomalous {
                box_colour
            } else {
                argb_to_rgb(s.text_color)
            };
            draw_caption(&mut canvas, font, &text, colour);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

/// The mapped frame as a canvas: packed formats by their byte layout, NV12 and I420 by their
/// planes and the caps' colorimetry.
fn canvas_of<'a>(
    frame: &'a mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<Canvas<'a>, String> {
    let dims = (frame.width() as usize, frame.height() as usize);
    let format = frame.format();
    // copied out (no allocation on this per-frame path): the planes borrow the frame below
    let mut strides = [0usize; 4];
    for (d, &s) in strides.iter_mut().zip(frame.plane_stride()) {
        *d = s as usize;
    }
    let colorimetry = yuv_colorimetry(frame.info());
    let [p0, p1, p2, _] = frame.planes_data_mut();
    match format {
        gst_video::VideoFormat::Nv12 => {
            let chroma = Chroma::Interleaved {
                uv: p1,
                stride: strides[1],
            };
            Canvas::yuv420(p0, strides[0], chroma, dims, colorimetry)
        }
        gst_video::VideoFormat::I420 => {
            let chroma = Chroma::Planar {
                u: p1,
                u_stride: strides[1],
                v: p2,
                v_stride: strides[2],
            };
            Canvas::yuv420(p0, strides[0], chroma, dims, colorimetry)
        }
        other => {
            let (bpp, rgb) = layout(other).ok_or_else(|| format!("cannot draw on {other:?}"))?;
            Canvas::packed(p0, dims, strides[0], bpp, rgb)
        }
    }
}
