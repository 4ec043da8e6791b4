//! Implementation of `anomalydetect`: caps -> tensor -> detector -> maps -> metadata.

use crate::frame::{DETECT_FORMATS, model_input};
use crate::meta::{AnomalyInfo, MESSAGE, RegionInfo};
use clsflow::detector::AnomalyMap;
use clsflow::resample::input_tensor_dims;
use clsflow::{
    Detection, Detector, DetectorOptions, DeviceSpec, Normalization, Scoring, torch_thread,
};
use clsflow::{InputResize, TileLayout};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

/// The value of the threshold and weight properties that means "the checkpoint's value".
const UNSET: f64 = -1.0;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "anomalydetect",
        gst::DebugColorFlags::empty(),
        Some("clsflow anomaly detector"),
    )
});

const DEFAULT_DEVICE: &str = "auto";
const DEFAULT_INTERVAL: u32 = 1;
const DEFAULT_MIN_REGION_AREA: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    model: Option<String>,
    device: String,
    threshold: f64,
    score_weight: f64,
    fusion_weight: f64,
    region_threshold: f64,
    map_size: u32,
    interval: u32,
    post_messages: bool,
    min_region_area: u32,
    half: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: None,
            device: DEFAULT_DEVICE.into(),
            threshold: -1.0,
            score_weight: -1.0,
            fusion_weight: -1.0,
            region_threshold: -1.0,
            map_size: 0,
            interval: DEFAULT_INTERVAL,
            post_messages: false,
            min_region_area: DEFAULT_MIN_REGION_AREA,
            half: false,
        }
    }
}

/// The last result, repeated on skipped frames.
#[derive(Debug, Clone)]
struct Found {
    info: AnomalyInfo,
    regions: Vec<RegionInfo>,
}

/// A detector that jobs on the libtorch thread use, one at a time.
type SharedDetector = Arc<Mutex<Detector>>;
/// What a detector was loaded for: (model path, device, half precision).
type LoadKey = (String, String, bool);

/// A loaded detector with what the streaming thread needs to prepare its input.
struct Loaded {
    detector: SharedDetector,
    key: LoadKey,
    /// The model's input size, resize and normalisation: frames become input on the streaming
    /// thread.
    input_size: usize,
    resize: InputResize,
    norm: Normalization,
}

#[derive(Default)]
struct State {
    /// Loaded detector with the (model, device, half) it was loaded for: kept across state
    /// changes so that cycling the pipeline does not reload the model. Only jobs on
    /// `clsflow::torch_thread` touch it.
    detector: Option<Loaded>,
    info: Option<gst_video::VideoInfo>,
    frame: u64,
    last: Option<Found>,
}

/// The element's private state.
#[derive(Default)]
pub struct AnomalyDetect {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for AnomalyDetect {
    const NAME: &'static str = "GstAnomalyDetect";
    type Type = super::AnomalyDetect;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for AnomalyDetect {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Path of the clsflow checkpoint (.clsflow) to run; loaded once when the element starts")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("Where the model runs: auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N")
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Threshold")
                    .blurb("Image score (raw units, as the metadata's score) above which a frame is anomalous; exactly -1 (the default) = the checkpoint's calibrated value, any other value is used as given. The normalised score is 0.5 at this threshold")
                    .minimum(-f64::MAX)
                    .maximum(f64::MAX)
                    .default_value(-1.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("score-weight")
                    .nick("Score weight")
                    .blurb("Weight of the classifier map in the image score (max of flow + weight x classifier); any negative value (default -1) = the checkpoint's value")
                    .minimum(-1.0)
                    .maximum(1000.0)
                    .default_value(-1.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("fusion-weight")
                    .nick("Fusion weight")
                    .blurb("Weight of the classifier map in the fused map (the attached map and the regions); any negative value (default -1) = the checkpoint's value")
                    .minimum(-1.0)
                    .maximum(1000.0)
                    .default_value(-1.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("region-threshold")
                    .nick("Region threshold")
                    .blurb("Fused-map value above which pixels form defect regions; exactly -1 (the default) = the checkpoint's calibrated value, any other value is used as given")
                    .minimum(-f64::MAX)
                    .maximum(f64::MAX)
                    .default_value(-1.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("map-size")
                    .nick("Map size")
                    .blurb("Side of the square anomaly map attached as metadata; 0 = the model's resolution (with a tiling model, the frame's shape at a short side of the model input)")
                    .maximum(4096)
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb("Run the detector on every Nth frame and repeat the last result in between")
                    .minimum(1)
                    .maximum(10_000)
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a 'clsflow-anomaly' element message on the bus for every anomalous frame")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-region-area")
                    .nick("Minimum region area")
                    .blurb("Smallest defect region reported, in map pixels")
                    .maximum(1 << 20)
                    .default_value(DEFAULT_MIN_REGION_AREA)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("half")
                    .nick("Half precision")
                    .blurb("Reduced precision: the model in float16 on CUDA; on the CPU the flows' matrix products in bfloat16 (CPUs with AVX512-BF16 or AMX-BF16 only)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "model" => s.model = value.get().expect("type checked upstream"),
            "device" => {
                s.device = value
                    .get::<Option<String>>()
                    .expect("type checked")
                    .unwrap_or_else(|| DEFAULT_DEVICE.into())
            }
            "threshold" => s.threshold = value.get().expect("type checked"),
            "score-weight" => s.score_weight = value.get().expect("type checked"),
            "fusion-weight" => s.fusion_weight = value.get().expect("type checked"),
            "region-threshold" => s.region_threshold = value.get().expect("type checked"),
            "map-size" => s.map_size = value.get().expect("type checked"),
            "interval" => s.interval = value.get().expect("type checked"),
            "post-messages" => s.post_messages = value.get().expect("type checked"),
            "min-region-area" => s.min_region_area = value.get().expect("type checked"),
            "half" => s.half = value.get().expect("type checked"),
            other => unreachable!("unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "set {} to {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "model" => s.model.to_value(),
            "device" => s.device.to_value(),
            "threshold" => s.threshold.to_value(),
            "score-weight" => s.score_weight.to_value(),
            "fusion-weight" => s.fusion_weight.to_value(),
            "region-threshold" => s.region_threshold.to_value(),
            "map-size" => s.map_size.to_value(),
            "interval" => s.interval.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "min-region-area" => s.min_region_area.to_value(),
            "half" => s.half.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for AnomalyDetect {}

impl ElementImpl for AnomalyDetect {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Anomaly detector",
                "Filter/Analyzer/Video",
                "Finds visual anomalies with a clsflow model (shared extractor, pixelwise classifier, normalizing flows) and attaches maps, scores and regions as metadata",
                "clsflow developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(DETECT_FORMATS)
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

impl AnomalyDetect {
    fn load(&self, settings: &Settings) -> Result<(), gst::ErrorMessage> {
        let Some(path) = settings.model.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ["No model set: give the 'model' property a clsflow checkpoint path"]
            ));
        };
        let key = (path.clone(), settings.device.clone(), settings.half);
        let mut state = self.state.lock().unwrap();
        if state.detector.as_ref().is_some_and(|l| l.key == key) {
            return Ok(());
        }
        let t0 = Instant::now();
        let device: DeviceSpec = settings.device.parse().map_err(|e| {
            gst::error_msg!(gst::ResourceError::Settings, ["Property 'device': {}", e])
        })?;
        let options = DetectorOptions {
            device,
            half: settings.half,
        };
        // loading runs libtorch (weights, flow folding): on the one libtorch thread as well
        let file = path.clone();
        let detector = torch_thread::try_run(move || Detector::load(&file, &options)).map_err(
            |e| match e {
                clsflow::Error::Device { .. } => {
                    gst::error_msg!(gst::ResourceError::Settings, ["{}", e])
                }
                clsflow::Error::Io { .. } => {
                    gst::error_msg!(gst::ResourceError::NotFound, ["Cannot open model: {}", e])
                }
                _ => gst::error_msg!(gst::ResourceError::Read, ["Invalid model: {}", e]),
            },
        )?;
        gst::info!(
            CAT,
            imp = self,
            "loaded {} ({}) on {} in {:.0} ms",
            path,
            detector.manifest().name,
            clsflow::device::device_name(detector.device()),
            t0.elapsed().as_secs_f64() * 1e3
        );
        state.detector = Some(Loaded {
            input_size: detector.model().config().input_size as usize,
            resize: detector.resize(),
            norm: detector.manifest().normalization,
            detector: Arc::new(Mutex::new(detector)),
            key,
        });
        Ok(())
    }

    fn detect(
        &self,
        buf: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        settings: &Settings,
        state: &mut State,
    ) -> Result<Found, String> {
        let loaded = state.detector.as_ref().ok_or("detector not loaded")?;
        let (detector, norm) = (loaded.detector.clone(), loaded.norm);
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info)
            .map_err(|_| "cannot map the frame for reading")?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        // the square input, or with tiling the frame at a short side of it
        let layout = TileLayout::new(loaded.resize, w as i64, h as i64, loaded.input_size as i64)
            .map_err(|e| format!("caps {info:?}: {e}"))?;
        let dims = (layout.width as usize, layout.height as usize);
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|_| "cannot read plane 0")?;
        let t0 = Instant::now();
        let input = model_input(data, w, h, stride, info.format(), dims, &norm)
            .map_err(|e| format!("frame does not match caps {info:?}: {e}"))?;
        drop(frame);
        let overrides = [
            settings.threshold,
            settings.score_weight,
            settings.fusion_weight,
            settings.region_threshold,
        ];
        let min_region_area = settings.min_region_area;
        let (d, scoring, model): (Detection, Scoring, String) =
            torch_thread::try_run(move || -> clsflow::Result<_> {
                let mut detector = detector.lock().unwrap_or_else(|e| e.into_inner());
                // the checkpoint's value, also after an override was set and cleared: exactly -1
                // for thresholds (raw scores can be negative), any negative value for weights
                let c = detector.manifest().scoring.clone();
                let threshold_or = |v: f64, default: f64| if v == UNSET { default } else { v };
                let weight_or = |v: f64, default: f64| if v < 0.0 { default } else { v };
                let [threshold, score_weight, fusion_weight, region_threshold] = overrides;
                detector.set_scoring(Scoring {
                    threshold: threshold_or(threshold, c.threshold),
                    score_weight: weight_or(score_weight, c.score_weight),
                    fusion_weight: weight_or(fusion_weight, c.fusion_weight),
                    region_threshold: threshold_or(region_threshold, c.region_threshold),
                    ..c
                });
                let maps = detector.detect_input(&input_tensor_dims(&input, dims.0, dims.1))?;
                let frame = [(w as u32, h as u32)];
                let d = detector.split(&maps, &frame, min_region_area)?.remove(0);
                Ok((
                    d,
                    detector.scoring().clone(),
                    detector.manifest().name.clone(),
                ))
            })
            .map_err(|e| e.to_string())?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let regions: Vec<RegionInfo> = d
            .regions
            .iter()
            .map(|r| RegionInfo {
                rect: r.rect(),
                max_score: r.max_score.into(),
                mean_score: r.mean_score.into(),
                area: r.area,
                confidence: scoring.normalized_region_score(r.max_score.into()),
            })
            .collect();
        let map: AnomalyMap = match settings.map_size {
            0 => d.fused,
            n => d.fused.resized(n as usize, n as usize),
        };
        let info = AnomalyInfo {
            score: d.score.into(),
            normalized_score: scoring.normalized_score(d.score.into()),
            anomalous: d.anomalous,
            threshold: scoring.threshold,
            score_weight: scoring.score_weight,
            fusion_weight: scoring.fusion_weight,
            region_threshold: scoring.region_threshold,
            map_width: map.width as u32,
            map_height: map.height as u32,
            map: map.data,
            model,
            inference_ms: ms,
            fresh: true,
            regions: regions.len() as u32,
        };
        Ok(Found { info, regions })
    }
}

impl BaseTransformImpl for AnomalyDetect {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        self.load(&settings)?;
        let mut state = self.state.lock().unwrap();
        state.frame = 0;
        state.last = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // keep the detector: restarting the pipeline must not reload the model
        let mut state = self.state.lock().unwrap();
        state.info = None;
        state.last = None;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            // after a seek or flush the last result belongs to another part of the stream
            let mut state = self.state.lock().unwrap();
            state.last = None;
            state.frame = 0;
        }
        self.parent_sink_event(event)
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {}", incaps))?;
        gst::debug!(
            CAT,
            imp = self,
            "caps {}x{} {:?}",
            info.width(),
            info.height(),
            info.format()
        );
        let mut state = self.state.lock().unwrap();
        state.info = Some(info);
        // maps and regions are in frame coordinates: never repeat a result across a size change
        state.last = None;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let mut state = self.state.lock().unwrap();
        let Some(info) = state.info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["No caps set before the first buffer"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let run = state.last.is_none() || state.frame.is_multiple_of(settings.interval as u64);
        state.frame += 1;
        let result = if run {
            match self.detect(buf, &info, &settings, &mut state) {
                Ok(r) => {
                    state.last = Some(r.clone());
                    r
                }
                Err(e) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ["Detection failed: {}", e]
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        } else {
            let mut r = state.last.clone().expect("a result to repeat");
            r.info.fresh = false;
            r.info.inference_ms = 0.0;
            r
        };
        drop(state);
        if let Err(e) = result.info.attach(buf) {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ["Cannot attach metadata: {}", e]
            );
            return Err(gst::FlowError::Error);
        }
        let frame = (info.width(), info.height());
        for (id, r) in result.regions.iter().enumerate() {
            r.attach(buf, id as i32, frame);
        }
        if settings.post_messages && result.info.anomalous && result.info.fresh {
            let s = gst::Structure::builder(MESSAGE)
                .field("score", result.info.score)
                .field("normalized-score", result.info.normalized_score)
                .field("threshold", result.info.threshold)
                .field("regions", result.info.regions)
                .field(
                    "timestamp",
                    buf.pts().map(|t| t.nseconds()).unwrap_or(u64::MAX),
                )
                .build();
            let _ = self
                .obj()
                .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
        }
        gst::trace!(
            CAT,
            imp = self,
            "score {:.4} anomalous {}",
            result.info.score,
            result.info.anomalous
        );
        Ok(gst::FlowSuccess::Ok)
    }
}
