//! Implementation of `anomalydetect`: caps -> tensor -> detector -> maps -> metadata.

use super::SnapshotFormat;
use super::drift::{DriftBand, DriftMonitor, DriftStatus};
use super::mqtt::{TlsFiles, redacted};
use super::results::{ResultsSink, SinkOptions};
use super::shared::{self, Overrides, SharedModel};
use super::snapshots::{ImageFormat, Snapshot, SnapshotOptions, SnapshotWriter};
use crate::frame::{DETECT_FORMATS, frame_input};
use crate::meta::{AnomalyInfo, DRIFT_MESSAGE, MESSAGE, RegionInfo, frame_json};
use clsflow::detector::AnomalyMap;
use clsflow::{DeviceSpec, TileLayout, torch_thread};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

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
const DEFAULT_DRIFT_WINDOW: u32 = 1000;
const DEFAULT_DRIFT_TOLERANCE: f64 = 0.5;
const DEFAULT_DRIFT_MAX_FLAGGED: f64 = 0.2;
const DEFAULT_SNAPSHOT_MAX_RATE: f64 = 1.0;
const DEFAULT_SNAPSHOT_MAX_FILES: u32 = 1000;

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
    model_instance_id: Option<String>,
    batch_size: u32,
    batch_timeout: u32,
    results_location: Option<String>,
    results_append: bool,
    results_queue_size: u32,
    results_tls: TlsFiles,
    threads: u32,
    drift_window: u32,
    drift_tolerance: f64,
    drift_max_flagged: f64,
    snapshot_location: Option<std::path::PathBuf>,
    snapshot_format: SnapshotFormat,
    snapshot_max_rate: f64,
    snapshot_max_files: u32,
    snapshot_max_bytes: u64,
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
            model_instance_id: None,
            batch_size: 1,
            batch_timeout: 0,
            results_location: None,
            results_append: true,
            results_queue_size: 1000,
            results_tls: TlsFiles::default(),
            threads: 0,
            drift_window: DEFAULT_DRIFT_WINDOW,
            drift_tolerance: DEFAULT_DRIFT_TOLERANCE,
            drift_max_flagged: DEFAULT_DRIFT_MAX_FLAGGED,
            snapshot_location: None,
            snapshot_format: SnapshotFormat::default(),
            snapshot_max_rate: DEFAULT_SNAPSHOT_MAX_RATE,
            snapshot_max_files: DEFAULT_SNAPSHOT_MAX_FILES,
            snapshot_max_bytes: 0,
        }
    }
}

/// A path property's value: unset or empty is none.
fn path_value(value: &glib::Value) -> Option<std::path::PathBuf> {
    value
        .get::<Option<String>>()
        .expect("type checked")
        .filter(|p| !p.is_empty())
        .map(Into::into)
}

/// A path as a string property's value.
fn path_string(path: &Option<std::path::PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.display().to_string())
}

/// The last result, repeated on skipped frames.
#[derive(Debug, Clone)]
struct Found {
    info: AnomalyInfo,
    regions: Vec<RegionInfo>,
}

#[derive(Default)]
struct State {
    /// The shared model, held from start until the element goes to NULL (so that cycling the
    /// pipeline through READY does not reload it).
    model: Option<Arc<SharedModel>>,
    results: Option<ResultsSink>,
    /// Results the sink dropped (an MQTT broker away for long).
    results_dropped: u64,
    info: Option<gst_video::VideoInfo>,
    frame: u64,
    last: Option<Found>,
    /// The fresh frames' scores against the band calibration predicts (None: off).
    drift: Option<DriftMonitor>,
    snapshots: Option<SnapshotWriter>,
    /// When the last snapshot was taken: its timestamp, or the wall clock for frames without one.
    last_snapshot: Option<SnapshotTime>,
}

/// When a snapshot was taken, for `snapshot-max-rate`.
#[derive(Debug, Clone, Copy)]
enum SnapshotTime {
    Stream(gst::ClockTime),
    Wall(Instant),
}

impl SnapshotTime {
    fn now(pts: Option<gst::ClockTime>) -> Self {
        pts.map_or_else(|| SnapshotTime::Wall(Instant::now()), SnapshotTime::Stream)
    }

    /// Seconds from `self` to `later`; infinite when the kinds differ or the timestamps went
    /// back (a seek or a new segment starts afresh).
    fn seconds_to(self, later: SnapshotTime) -> f64 {
        match (self, later) {
            (SnapshotTime::Stream(a), SnapshotTime::Stream(b)) => b
                .nseconds()
                .checked_sub(a.nseconds())
                .map_or(f64::INFINITY, |d| d as f64 * 1e-9),
            (SnapshotTime::Wall(a), SnapshotTime::Wall(b)) => (b - a).as_secs_f64(),
            _ => f64::INFINITY,
        }
    }
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
                glib::ParamSpecString::builder("model-instance-id")
                    .nick("Model instance id")
                    .blurb("Elements with the same id, device and precision share one loaded model and batch their frames together; default (unset): the model path, so elements with the same model share it. Give an element its own id to keep it apart")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Frames of the elements sharing a model run as one batch of up to this many (the largest of theirs); 1 = one frame per call")
                    .minimum(1)
                    .maximum(256)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout")
                    .nick("Batch timeout")
                    .blurb("Milliseconds a batch may wait for more frames before it runs (the largest of the sharing elements'); 0 = run what is queued")
                    .maximum(10_000)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("results-location")
                    .nick("Results location")
                    .blurb("Where one JSON record per processed frame goes (the README's schema): a file (appended, flushed per line) or mqtt://[user[:password]@]host:port/topic (QoS 1, client id clsflow-ELEMENT-PID, reconnecting while the broker is away; with user@ alone the password is read from CLSFLOW_MQTT_PASSWORD), mqtts://... over TLS (port 8883 by default); unset: none")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("results-queue-size")
                    .nick("Results queue size")
                    .blurb("MQTT messages held while the broker is unreachable; beyond it the oldest are dropped, counted in the metadata's results-dropped and logged")
                    .minimum(1)
                    .maximum(10_000_000)
                    .default_value(1000)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("results-ca-file")
                    .nick("Results CA file")
                    .blurb("PEM certificates of the authorities that may sign an mqtts:// broker's certificate, trusted besides the system's (for a broker with its own authority)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("results-cert-file")
                    .nick("Results certificate file")
                    .blurb("PEM client certificate for an mqtts:// broker that asks for one (with results-key-file)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("results-key-file")
                    .nick("Results key file")
                    .blurb("The client certificate's private key: PEM, unencrypted PKCS#8 (BEGIN PRIVATE KEY)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("results-append")
                    .nick("Append results")
                    .blurb("Append to an existing results file; false empties it when the element starts")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("libtorch threads of the process's inference thread (shared by every anomalydetect of the process); 0 = libtorch's default, one per core. Lower it when other libtorch processes share the cores")
                    .maximum(1024)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("snapshot-location")
                    .nick("Snapshot location")
                    .blurb("Folder where each flagged frame is kept as an image, the same image with its overlay and its JSON record (snapshot-<time>-<element>-<frame>.*), written off the streaming thread; unset: none. A folder that cannot be written gives a bus warning and the stream goes on")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("snapshot-format", SnapshotFormat::default())
                    .nick("Snapshot format")
                    .blurb("Encoding of the snapshot images")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("snapshot-max-rate")
                    .nick("Snapshot rate")
                    .blurb("At most this many snapshots per second of stream time (wall-clock time for frames without timestamps); 0 = every flagged frame")
                    .minimum(0.0)
                    .maximum(1000.0)
                    .default_value(DEFAULT_SNAPSHOT_MAX_RATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("snapshot-max-files")
                    .nick("Snapshot files")
                    .blurb("At most this many snapshot files in the folder (three per snapshot); the oldest snapshots go first. 0 = no bound")
                    .default_value(DEFAULT_SNAPSHOT_MAX_FILES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("snapshot-max-bytes")
                    .nick("Snapshot bytes")
                    .blurb("At most this many bytes of snapshot files in the folder; the oldest snapshots go first. 0 = no bound")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("drift-window")
                    .nick("Drift window")
                    .blurb("Fresh frames in the rolling window of image scores that is compared with what calibration predicts for normal frames; a 'clsflow-drift' element message is posted when the window leaves that band and when it comes back. 0 = no drift detection")
                    .maximum(1_000_000)
                    .default_value(DEFAULT_DRIFT_WINDOW)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("drift-tolerance")
                    .nick("Drift tolerance")
                    .blurb("How far the window's median score may move from the held-out good images' median, in score spreads (the distance from that median to the calibrated threshold; 0.5 moves a normalised score of 0.1 to 0.25)")
                    .minimum(0.0)
                    .maximum(100.0)
                    .default_value(DEFAULT_DRIFT_TOLERANCE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("drift-max-flagged")
                    .nick("Drift: most flagged")
                    .blurb("Largest share of the window's frames above the threshold before it counts as drift (calibration flags no held-out good image)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_DRIFT_MAX_FLAGGED)
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
            "model-instance-id" => s.model_instance_id = value.get().expect("type checked"),
            "batch-size" => s.batch_size = value.get().expect("type checked"),
            "batch-timeout" => s.batch_timeout = value.get().expect("type checked"),
            "results-location" => s.results_location = value.get().expect("type checked"),
            "results-append" => s.results_append = value.get().expect("type checked"),
            "results-queue-size" => s.results_queue_size = value.get().expect("type checked"),
            "results-ca-file" => s.results_tls.ca_file = path_value(value),
            "results-cert-file" => s.results_tls.cert_file = path_value(value),
            "results-key-file" => s.results_tls.key_file = path_value(value),
            "threads" => s.threads = value.get().expect("type checked"),
            "drift-window" => s.drift_window = value.get().expect("type checked"),
            "drift-tolerance" => s.drift_tolerance = value.get().expect("type checked"),
            "drift-max-flagged" => s.drift_max_flagged = value.get().expect("type checked"),
            "snapshot-location" => s.snapshot_location = path_value(value),
            "snapshot-format" => s.snapshot_format = value.get().expect("type checked"),
            "snapshot-max-rate" => s.snapshot_max_rate = value.get().expect("type checked"),
            "snapshot-max-files" => s.snapshot_max_files = value.get().expect("type checked"),
            "snapshot-max-bytes" => s.snapshot_max_bytes = value.get().expect("type checked"),
            other => unreachable!("unknown property {other}"),
        }
        match (pspec.name(), &s.results_location) {
            // a broker URL may hold a password: logged without it
            ("results-location", Some(l)) => {
                gst::debug!(CAT, imp = self, "set results-location to {}", redacted(l))
            }
            _ => gst::debug!(CAT, imp = self, "set {} to {:?}", pspec.name(), value),
        }
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
            "model-instance-id" => s.model_instance_id.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "batch-timeout" => s.batch_timeout.to_value(),
            "results-location" => s.results_location.to_value(),
            "results-append" => s.results_append.to_value(),
            "results-queue-size" => s.results_queue_size.to_value(),
            "results-ca-file" => path_string(&s.results_tls.ca_file).to_value(),
            "results-cert-file" => path_string(&s.results_tls.cert_file).to_value(),
            "results-key-file" => path_string(&s.results_tls.key_file).to_value(),
            "threads" => s.threads.to_value(),
            "drift-window" => s.drift_window.to_value(),
            "drift-tolerance" => s.drift_tolerance.to_value(),
            "drift-max-flagged" => s.drift_max_flagged.to_value(),
            "snapshot-location" => path_string(&s.snapshot_location).to_value(),
            "snapshot-format" => s.snapshot_format.to_value(),
            "snapshot-max-rate" => s.snapshot_max_rate.to_value(),
            "snapshot-max-files" => s.snapshot_max_files.to_value(),
            "snapshot-max-bytes" => s.snapshot_max_bytes.to_value(),
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

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let result = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToNull {
            // the last element of a shared model to reach NULL frees it
            self.state.lock().unwrap().model = None;
        }
        Ok(result)
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
    /// The shared model for the settings: the one this element holds if it still matches,
    /// else the process's instance (loaded now if no element holds it).
    fn load(&self, settings: &Settings) -> Result<Arc<SharedModel>, gst::ErrorMessage> {
        let Some(path) = settings.model.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ["No model set: give the 'model' property a clsflow checkpoint path"]
            ));
        };
        let device: DeviceSpec = settings.device.parse().map_err(|e| {
            gst::error_msg!(gst::ResourceError::Settings, ["Property 'device': {}", e])
        })?;
        let instance = settings.model_instance_id.clone().unwrap_or(path.clone());
        let key = (instance.clone(), device.to_string(), settings.half);
        if let Some(m) = self.state.lock().unwrap().model.clone()
            && *m.key() == key
            && m.path == path
        {
            return Ok(m);
        }
        let t0 = Instant::now();
        let loads = shared::loads();
        let model =
            shared::acquire(&instance, &path, device, settings.half).map_err(|e| match e {
                clsflow::Error::Device { .. } | clsflow::Error::Config(_) => {
                    gst::error_msg!(gst::ResourceError::Settings, ["{}", e])
                }
                clsflow::Error::Io { .. } => {
                    gst::error_msg!(gst::ResourceError::NotFound, ["Cannot open model: {}", e])
                }
                _ => gst::error_msg!(gst::ResourceError::Read, ["Invalid model: {}", e]),
            })?;
        if shared::loads() > loads {
            gst::info!(
                CAT,
                imp = self,
                "loaded {} ({}) on {} in {:.0} ms as instance {instance:?}",
                path,
                model.name,
                model.device_name,
                t0.elapsed().as_secs_f64() * 1e3
            );
        } else {
            gst::info!(
                CAT,
                imp = self,
                "sharing the loaded instance {instance:?} of {path}"
            );
        }
        Ok(model)
    }

    /// The drift monitor for the settings, on the checkpoint's calibrated band; none when drift
    /// detection is off, or when a score-weight override makes scores that calibration did not
    /// predict.
    fn drift_monitor(&self, settings: &Settings, model: &SharedModel) -> Option<DriftMonitor> {
        if settings.drift_window == 0 {
            return None;
        }
        if settings.score_weight >= 0.0 {
            gst::info!(
                CAT,
                imp = self,
                "no drift detection: score-weight is overridden, and calibration predicted the scores of the checkpoint's weight only"
            );
            return None;
        }
        let band = DriftBand::from_scoring(
            &model.scoring,
            settings.drift_tolerance,
            settings.drift_max_flagged,
        );
        gst::debug!(
            CAT,
            imp = self,
            "drift band: median score {:.4} +- {:.4}, at most {:.0} % flagged, over {} frames",
            band.expected_median,
            band.tolerance,
            100.0 * band.max_flagged,
            settings.drift_window
        );
        Some(DriftMonitor::new(band, settings.drift_window as usize))
    }

    /// The snapshot writer for the settings; none without a snapshot-location.
    fn snapshot_writer(
        &self,
        settings: &Settings,
    ) -> Result<Option<SnapshotWriter>, gst::ErrorMessage> {
        let Some(folder) = settings.snapshot_location.clone() else {
            return Ok(None);
        };
        let options = SnapshotOptions {
            folder,
            format: match settings.snapshot_format {
                SnapshotFormat::Jpeg => ImageFormat::Jpeg,
                SnapshotFormat::Png => ImageFormat::Png,
            },
            max_files: settings.snapshot_max_files as usize,
            max_bytes: settings.snapshot_max_bytes,
            source: self.obj().name().to_string(),
        };
        let element = self.obj().downgrade();
        let warn = move |message: String| {
            if let Some(e) = element.upgrade() {
                gst::element_warning!(e, gst::ResourceError::Write, ("{}", message));
            }
        };
        SnapshotWriter::start(options, warn).map(Some).map_err(|e| {
            gst::error_msg!(
                gst::CoreError::Failed,
                ["Cannot start the snapshot writer: {}", e]
            )
        })
    }

    /// Queues a snapshot of a flagged fresh frame when `snapshot-max-rate` allows one now.
    fn snapshot(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        found: &Found,
        frame: u64,
    ) {
        let now = SnapshotTime::now(buf.pts());
        if let Some(last) = state.last_snapshot
            && settings.snapshot_max_rate > 0.0
            && last.seconds_to(now) < 1.0 / settings.snapshot_max_rate
        {
            return;
        }
        let Some(writer) = state.snapshots.as_mut() else {
            return;
        };
        let Ok(buffer) = buf.copy_deep() else {
            gst::warning!(
                CAT,
                imp = self,
                "cannot copy frame {frame} for its snapshot"
            );
            return;
        };
        state.last_snapshot = Some(now);
        let record = frame_json(
            frame,
            buf.pts(),
            &self.obj().name(),
            &found.info,
            &found.regions,
        );
        let queued = writer.send(Snapshot {
            buffer,
            info: info.clone(),
            anomaly: found.info.clone(),
            regions: found.regions.clone(),
            record,
            frame,
        });
        if !queued {
            gst::warning!(
                CAT,
                imp = self,
                "snapshot of frame {frame} dropped: the writer is behind ({} dropped so far)",
                writer.dropped()
            );
        }
    }

    /// Posts a change of the drift state as a `clsflow-drift` element message and logs it.
    fn post_drift(&self, status: &DriftStatus, band: &DriftBand, pts: Option<gst::ClockTime>) {
        if status.drifting {
            gst::warning!(
                CAT,
                imp = self,
                "drift over the last {} frames: {}",
                status.window,
                status.reason
            );
        } else {
            gst::info!(
                CAT,
                imp = self,
                "drift cleared: median score {:.4}, {:.0} % flagged over the last {} frames",
                status.median,
                100.0 * status.flagged_fraction,
                status.window
            );
        }
        let s = gst::Structure::builder(DRIFT_MESSAGE)
            .field("drifting", status.drifting)
            .field("median-score", status.median)
            .field("expected-median-score", band.expected_median)
            .field("tolerance", band.tolerance)
            .field("flagged-fraction", status.flagged_fraction)
            .field("max-flagged", band.max_flagged)
            .field("window", status.window as u32)
            .field("reason", status.reason.as_str())
            .field("timestamp", pts.map(|t| t.nseconds()).unwrap_or(u64::MAX))
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }

    fn detect(
        &self,
        buf: &gst::BufferRef,
        info: &gst_video::VideoInfo,
        settings: &Settings,
        state: &mut State,
    ) -> Result<Found, String> {
        let model = state.model.clone().ok_or("no model loaded")?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, info)
            .map_err(|_| "cannot map the frame for reading")?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        // the square input, or with tiling the frame at a short side of it
        let layout = TileLayout::new(model.resize, w as i64, h as i64, model.input_size as i64)
            .map_err(|e| format!("caps {info:?}: {e}"))?;
        let dims = (layout.width as usize, layout.height as usize);
        let t0 = Instant::now();
        let input = frame_input(&frame, dims, &model.norm)
            .map_err(|e| format!("frame does not match caps {info:?}: {e}"))?;
        drop(frame);
        let overrides = Overrides {
            threshold: settings.threshold,
            score_weight: settings.score_weight,
            fusion_weight: settings.fusion_weight,
            region_threshold: settings.region_threshold,
        };
        let (d, scoring) = model.detect(
            input,
            dims,
            (w as u32, h as u32),
            overrides,
            settings.min_region_area,
        )?;
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
            model: model.name.clone(),
            inference_ms: ms,
            fresh: true,
            regions: regions.len() as u32,
            results_dropped: 0,
            drift: false,
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
        let model = self.load(&settings)?;
        model.allow_batching(
            settings.batch_size as usize,
            Duration::from_millis(settings.batch_timeout.into()),
        );
        if settings.threads > 0 {
            let n = settings.threads as i32;
            torch_thread::run(move || tch::set_num_threads(n)).map_err(|e| {
                gst::error_msg!(gst::CoreError::Failed, ["Cannot set threads: {}", e])
            })?;
        }
        let results = match &settings.results_location {
            Some(location) => {
                let name = self.obj().name().to_string();
                let options = SinkOptions {
                    append: settings.results_append,
                    client_id: &format!("clsflow-{name}-{}", std::process::id()),
                    queue_size: settings.results_queue_size as usize,
                    tls: &settings.results_tls,
                };
                let element = self.obj().downgrade();
                // broker outages and refused logins, once each, as bus warnings: the stream
                // goes on, and the person watching the pipeline learns why nothing arrives
                let warn = move |message: String| {
                    if let Some(e) = element.upgrade() {
                        gst::element_warning!(e, gst::ResourceError::Write, ("{}", message));
                    }
                };
                Some(
                    ResultsSink::open(location, &options, warn)
                        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", e]))?,
                )
            }
            None => None,
        };
        let drift = self.drift_monitor(&settings, &model);
        let snapshots = self.snapshot_writer(&settings)?;
        let mut state = self.state.lock().unwrap();
        state.model = Some(model);
        state.drift = drift;
        state.snapshots = snapshots;
        state.last_snapshot = None;
        state.results = results;
        state.results_dropped = 0;
        state.frame = 0;
        state.last = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // keep the model until NULL: restarting the pipeline must not reload it
        let mut state = self.state.lock().unwrap();
        state.info = None;
        state.last = None;
        state.results = None;
        // the writer finishes the snapshots already queued
        state.snapshots = None;
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
        let mut result = if run {
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
        let index = state.frame - 1;
        let mut drift_change = None;
        if let Some(monitor) = state.drift.as_mut() {
            if result.info.fresh {
                drift_change = monitor
                    .push(result.info.score, result.info.anomalous)
                    .map(|status| (status, monitor.band()));
            }
            result.info.drift = monitor.drifting();
        }
        if let Some(results) = state.results.as_mut() {
            let line = frame_json(
                index,
                buf.pts(),
                &self.obj().name(),
                &result.info,
                &result.regions,
            );
            match results.send(&line) {
                Ok(dropped) if dropped > state.results_dropped => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "{} result(s) dropped so far: the broker has been away longer than results-queue-size frames",
                        dropped
                    );
                    state.results_dropped = dropped;
                }
                Ok(_) => {}
                Err(e) => {
                    gst::element_imp_warning!(self, gst::ResourceError::Write, ["{}", e]);
                    // one warning, not one per frame: stop writing
                    state.results = None;
                }
            }
        }
        result.info.results_dropped = state.results_dropped;
        if state.snapshots.is_some() && result.info.anomalous && result.info.fresh {
            self.snapshot(&mut state, &settings, buf, &info, &result, index);
        }
        drop(state);
        if let Some((status, band)) = drift_change {
            self.post_drift(&status, &band, buf.pts());
        }
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
