//! The metadata `anomalydetect` attaches to every buffer it processes. Applications in C,
//! Python or Rust read it without linking this crate:
//!
//! - a `GstCustomMeta` registered as [`ANOMALY_META`] whose structure ([`ANOMALY_STRUCT`]) holds
//!   `score` (double: max of flow + score-weight x classifier, or the mean of its largest
//!   values where the checkpoint's calibration chose that), `normalized-score` (double in
//!   [0, 1], 0.5 at the threshold), `anomalous` (boolean: score above `threshold`),
//!   `threshold` (double), `score-weight` (double), `fusion-weight`
//!   (double: the classifier's weight in the map), `region-threshold` (double: map values above
//!   it form the regions), `map-width`/`map-height` (uint), `map` (GBytes: map-width x
//!   map-height little-endian float32, row-major, the fused anomaly map), `model` (string),
//!   `inference-ms` (double),
//!   `fresh` (boolean: computed on this frame rather than repeated by `interval`),
//!   `regions` (uint), `results-dropped` (uint64: results that `results-location` dropped so
//!   far), `drift` (boolean: the recent frames' scores have left the band calibration predicts);
//! - one `GstVideoRegionOfInterestMeta` of type [`REGION_TYPE`] per defect region, in frame
//!   coordinates, ids 0, 1, ... largest score first, with a parameter structure
//!   [`REGION_PARAMS`] (`max-score`, `mean-score` (double), `area` (uint, frame pixels)) and a
//!   [`DETECTION_PARAMS`] structure in DL Streamer's form (`label` "defect", `label_id` 0,
//!   `confidence`: the region's normalised score, `x_min`/`y_min`/`x_max`/`y_max`: the box as
//!   fractions of the frame), which `gvawatermark` and `gvametaconvert` read.

use gst::glib;

/// Name the custom meta is registered under.
pub const ANOMALY_META: &str = "ClsflowAnomalyMeta";
/// Name of the custom meta's structure.
pub const ANOMALY_STRUCT: &str = "clsflow-anomaly";
/// ROI type of defect regions.
pub const REGION_TYPE: &str = "clsflow-defect";
/// Name of a region's parameter structure.
pub const REGION_PARAMS: &str = "clsflow-region";
/// Name of a region's detection structure (DL Streamer's convention).
pub const DETECTION_PARAMS: &str = "detection";
/// Label of every region in its detection structure.
pub const DEFECT_LABEL: &str = "defect";
/// Name of the element message posted for anomalous frames.
pub const MESSAGE: &str = "clsflow-anomaly";
/// Name of the element message posted when the scores drift from the calibrated band and when
/// they come back.
pub const DRIFT_MESSAGE: &str = "clsflow-drift";

/// Registers the custom meta (idempotent).
pub fn register() {
    if !gst::meta::CustomMeta::is_registered(ANOMALY_META) {
        gst::meta::CustomMeta::register(ANOMALY_META, &[]);
    }
}

/// What the detector found in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyInfo {
    /// Image score (max, or mean of the checkpoint's top fraction, of flow + score weight x
    /// classifier).
    pub score: f64,
    /// Score in [0, 1], 0.5 at the threshold, increasing with the score.
    pub normalized_score: f64,
    /// Score above threshold.
    pub anomalous: bool,
    /// Image-score threshold in use.
    pub threshold: f64,
    /// Weight of the classifier in the image score.
    pub score_weight: f64,
    /// Weight of the classifier in the fused map.
    pub fusion_weight: f64,
    /// Fused-map value above which pixels form regions.
    pub region_threshold: f64,
    /// Map columns.
    pub map_width: u32,
    /// Map rows.
    pub map_height: u32,
    /// Fused map, row-major.
    pub map: Vec<f32>,
    /// Model name from the checkpoint.
    pub model: String,
    /// Detector time for this frame (0 when repeated).
    pub inference_ms: f64,
    /// Computed on this frame.
    pub fresh: bool,
    /// Number of regions attached.
    pub regions: u32,
    /// Results that `results-location` dropped so far (an MQTT broker away for long).
    pub results_dropped: u64,
    /// The recent frames' scores have left the band calibration predicts (`drift-window`).
    pub drift: bool,
}

impl AnomalyInfo {
    /// Attaches the info as a custom meta.
    pub fn attach(&self, buffer: &mut gst::BufferRef) -> Result<(), glib::BoolError> {
        let mut meta = gst::meta::CustomMeta::add(buffer, ANOMALY_META)?;
        let s = meta.mut_structure();
        s.set_name(ANOMALY_STRUCT);
        let bytes: Vec<u8> = self.map.iter().flat_map(|v| v.to_le_bytes()).collect();
        s.set("score", self.score);
        s.set("normalized-score", self.normalized_score);
        s.set("anomalous", self.anomalous);
        s.set("threshold", self.threshold);
        s.set("score-weight", self.score_weight);
        s.set("fusion-weight", self.fusion_weight);
        s.set("region-threshold", self.region_threshold);
        s.set("map-width", self.map_width);
        s.set("map-height", self.map_height);
        s.set("map", glib::Bytes::from_owned(bytes));
        s.set("model", self.model.as_str());
        s.set("inference-ms", self.inference_ms);
        s.set("fresh", self.fresh);
        s.set("regions", self.regions);
        s.set("results-dropped", self.results_dropped);
        s.set("drift", self.drift);
        Ok(())
    }

    /// Reads the info from a buffer's custom meta, if present.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<Self> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, ANOMALY_META).ok()?;
        Self::from_structure(meta.structure())
    }

    /// Parses the structure layout above.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        let bytes = s.get::<glib::Bytes>("map").ok()?;
        let map = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(AnomalyInfo {
            score: s.get("score").ok()?,
            normalized_score: s.get("normalized-score").ok()?,
            anomalous: s.get("anomalous").ok()?,
            threshold: s.get("threshold").ok()?,
            score_weight: s.get("score-weight").ok()?,
            fusion_weight: s.get("fusion-weight").ok()?,
            region_threshold: s.get("region-threshold").ok()?,
            map_width: s.get("map-width").ok()?,
            map_height: s.get("map-height").ok()?,
            map,
            model: s.get("model").ok()?,
            inference_ms: s.get("inference-ms").ok()?,
            fresh: s.get("fresh").ok()?,
            regions: s.get("regions").ok()?,
            results_dropped: s.get("results-dropped").unwrap_or(0),
            drift: s.get("drift").unwrap_or(false),
        })
    }
}

/// One processed frame as a JSON object: the schema of `results-location` and of the
/// `anomaly_json` example (documented in the README): `frame` (index in the stream), `pts_ms`,
/// `source` (element name), `score`, `normalized_score`, `anomalous`, `threshold`, `fresh`,
/// `inference_ms`, `map_size`, `model`, `drift`, and `regions` (`x`, `y`, `width`, `height` in frame
/// pixels, `area`, `max_score`, `mean_score`, `normalized_score`).
pub fn frame_json(
    frame: u64,
    pts: Option<gst::ClockTime>,
    source: &str,
    info: &AnomalyInfo,
    regions: &[RegionInfo],
) -> serde_json::Value {
    let regions: Vec<serde_json::Value> = regions
        .iter()
        .map(|r| {
            serde_json::json!({
                "x": r.rect.0, "y": r.rect.1, "width": r.rect.2, "height": r.rect.3,
                "area": r.area, "max_score": r.max_score, "mean_score": r.mean_score,
                "normalized_score": r.confidence,
            })
        })
        .collect();
    serde_json::json!({
        "frame": frame,
        "pts_ms": pts.map(|t| t.mseconds()),
        "source": source,
        "score": info.score,
        "normalized_score": info.normalized_score,
        "anomalous": info.anomalous,
        "threshold": info.threshold,
        "fresh": info.fresh,
        "inference_ms": info.inference_ms,
        "map_size": [info.map_width, info.map_height],
        "model": info.model,
        "drift": info.drift,
        "regions": regions,
    })
}

/// A defect region in frame coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionInfo {
    /// Box (x, y, width, height) in frame pixels.
    pub rect: (u32, u32, u32, u32),
    /// Largest map value inside.
    pub max_score: f64,
    /// Mean map value inside.
    pub mean_score: f64,
    /// Area in frame pixels.
    pub area: u32,
    /// The region's normalised score (0.5 at the region threshold): its confidence.
    pub confidence: f64,
}

impl RegionInfo {
    /// Attaches the region as a `GstVideoRegionOfInterestMeta` with id `id` and its parameter
    /// structures; `frame` (width, height) scales the detection structure's box.
    pub fn attach(&self, buffer: &mut gst::BufferRef, id: i32, frame: (u32, u32)) {
        let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, REGION_TYPE, self.rect);
        meta.set_id(id);
        meta.add_param(
            gst::Structure::builder(REGION_PARAMS)
                .field("max-score", self.max_score)
                .field("mean-score", self.mean_score)
                .field("area", self.area)
                .build(),
        );
        let (x, y, w, h) = self.rect;
        let (fw, fh) = (f64::from(frame.0.max(1)), f64::from(frame.1.max(1)));
        meta.add_param(
            gst::Structure::builder(DETECTION_PARAMS)
                .field("label", DEFECT_LABEL)
                .field("label_id", 0i32)
                .field("confidence", self.confidence)
                .field("x_min", f64::from(x) / fw)
                .field("y_min", f64::from(y) / fh)
                .field("x_max", f64::from(x + w) / fw)
                .field("y_max", f64::from(y + h) / fh)
                .build(),
        );
    }

    /// All clsflow regions of a buffer.
    pub fn all_from_buffer(buffer: &gst::BufferRef) -> Vec<Self> {
        buffer
            .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
            .filter(|m| m.roi_type() == REGION_TYPE)
            .map(|m| {
                let p = m.param(REGION_PARAMS);
                let d = m.param(DETECTION_PARAMS);
                RegionInfo {
                    rect: m.rect(),
                    max_score: p.and_then(|p| p.get("max-score").ok()).unwrap_or(f64::NAN),
                    mean_score: p.and_then(|p| p.get("mean-score").ok()).unwrap_or(f64::NAN),
                    area: p.and_then(|p| p.get("area").ok()).unwrap_or(0),
                    confidence: d.and_then(|d| d.get("confidence").ok()).unwrap_or(f64::NAN),
                }
            })
            .collect()
    }
}
