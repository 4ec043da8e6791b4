//! Implementation of `anomalyoverlay`: metadata -> drawing on the frame.

use super::OverlayMode;
use crate::draw::{Canvas, argb_to_rgb};
use crate::frame::{DETECT_FORMATS, layout};
use crate::meta::{AnomalyInfo, RegionInfo};
use ab_glyph::FontArc;
use clsflow::colormap::heat;
use clsflow::detector::AnomalyMap;
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

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

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
            let formats = DETECT_FORMATS
                .iter()
                .copied()
                .filter(|f| *f != gst_video::VideoFormat::Gray8);
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(formats)
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
            match std::fs::read(&s.font)
                .map_err(|e| e.to_string())
                .and_then(|b| FontArc::try_from_vec(b).map_err(|e| e.to_string()))
            {
                Ok(f) => Some(f),
                Err(e) => {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NotFound,
                        ["Font {} unusable ({}); drawing without text", s.font, e]
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
        let Some((bpp, rgb)) = layout(frame.format()) else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).map_err(|_| gst::FlowError::Error)?;
        let mut canvas = Canvas {
            data,
            width: w,
            height: h,
            stride,
            bpp,
            rgb,
        };
        let box_colour = argb_to_rgb(s.box_color);
        let map_ok =
            info.map.len() == (info.map_width * info.map_height) as usize && info.map_width > 0;
        let heatmap = matches!(
            s.mode,
            OverlayMode::Heatmap | OverlayMode::HeatmapBoxes | OverlayMode::HeatmapOutlines
        );
        let outlines = matches!(s.mode, OverlayMode::Outlines | OverlayMode::HeatmapOutlines);
        if map_ok && (heatmap || outlines) {
            let map = AnomalyMap {
                width: info.map_width as usize,
                height: info.map_height as usize,
                data: info.map.clone(),
            }
            .resized(w, h);
            let thr = info.region_threshold as f32;
            if heatmap {
                // the region threshold sits at the middle of the colormap
                let lo = map
                    .data
                    .iter()
                    .copied()
                    .fold(f32::INFINITY, f32::min)
                    .min(thr - 1e-6);
                let scale = 0.5 / (thr - lo);
                let alpha = s.alpha as f32;
                let lut: Vec<[u8; 3]> = (0..256).map(|i| heat(i as f32 / 255.0)).collect();
                canvas.blend_all(alpha, |x, y| {
                    let t = ((map.data[y * w + x] - lo) * scale).clamp(0.0, 1.0);
                    lut[(t * 255.0) as usize]
                });
            }
            if outlines {
                let above = |x: usize, y: usize| map.data[y * w + x] > thr;
                for y in 0..h {
                    for x in 0..w {
                        if above(x, y)
                            && (x == 0
                                || y == 0
                                || x + 1 == w
                                || y + 1 == h
                                || !above(x - 1, y)
                                || !above(x + 1, y)
                                || !above(x, y - 1)
                                || !above(x, y + 1))
                        {
                            for t in 0..s.line_width as usize {
                                canvas.blend(x + t, y, box_colour, 1.0);
                            }
                        }
                    }
                }
            }
        }
        if matches!(s.mode, OverlayMode::Boxes | OverlayMode::HeatmapBoxes) {
            for r in &regions {
                canvas.rect(r.rect, box_colour, s.line_width);
            }
        }
        if s.text
            && let Some(font) = self.font.lock().unwrap().as_ref()
        {
            let verdict = if info.anomalous { "ANOMALY" } else { "ok" };
            let text = format!(
                "{verdict}  score {:.3} / {:.3}  regions {}",
                info.score, info.threshold, info.regions
            );
            let size = (h as f32 / 28.0).clamp(12.0, 48.0);
            let colour = if info.anomalous {
                box_colour
            } else {
                argb_to_rgb(s.text_color)
            };
            canvas.text(font, size, 6, 6, &text, colour);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
