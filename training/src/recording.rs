//! Good images from a recording of the line: any file GStreamer can decode (or a folder of them)
//! is decoded by `uridecodebin`, its frames sampled evenly, near-duplicates of a still line
//! dropped, and the rest written as PNG files that training reads like any folder of good images.

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gst_video::prelude::*;
use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File extensions taken as recordings (any case).
pub const VIDEO_EXTENSIONS: [&str; 15] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "ts", "mts", "m2ts", "mpg", "mpeg", "ogv", "flv",
    "wmv", "mjpeg",
];

/// Frames taken when neither `--frames` nor `--frame-step` is given.
pub const DEFAULT_FRAMES: usize = 300;

/// A frame whose 32x32 grey thumbnail differs from the last kept frame's by less than this mean
/// absolute level (of 255) is a near-duplicate: a still line shows the same part for many frames,
/// and video compression alone moves a thumbnail by well under one level.
pub const DUPLICATE_LEVEL: f64 = 2.0;

/// Which frames are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Every Nth frame, from the first.
    Step(usize),
    /// About this many frames spread evenly over each recording (by its duration).
    Count(usize),
}

/// What the decoding did, per recording and in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameCounts {
    /// Frames decoded.
    pub read: usize,
    /// Frames taken by the sampling.
    pub sampled: usize,
    /// Frames written as good images.
    pub kept: usize,
    /// Sampled frames dropped as near-duplicates of the frame kept before them.
    pub duplicates: usize,
}

impl std::fmt::Display for FrameCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames read, {} sampled, {} kept, {} dropped as near-duplicates",
            self.read, self.sampled, self.kept, self.duplicates
        )
    }
}

/// Whether the file name has a video extension.
pub fn is_video(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The recordings `data` names: itself when it is a video file, the video files directly inside
/// when it is a folder without images or a train/ folder; empty otherwise (a folder of images).
pub fn recordings(data: &Path) -> Result<Vec<PathBuf>> {
    if data.is_file() {
        return Ok(if is_video(data) {
            vec![data.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    if !data.is_dir() || data.join("train").is_dir() {
        return Ok(Vec::new());
    }
    let mut videos = Vec::new();
    for entry in
        std::fs::read_dir(data).with_context(|| format!("cannot read {}", data.display()))?
    {
        let p = entry?.path();
        if p.is_file() && crate::data::is_image(&p) {
            return Ok(Vec::new());
        }
        if p.is_file() && is_video(&p) {
            videos.push(p);
        }
    }
    videos.sort();
    Ok(videos)
}

/// Mean absolute difference of two thumbnails, in grey levels.
fn difference(a: &GrayImage, b: &GrayImage) -> f64 {
    let sum: u64 = a
        .pixels()
        .zip(b.pixels())
        .map(|(p, q)| u64::from(p[0].abs_diff(q[0])))
        .sum();
    sum as f64 / a.len().max(1) as f64
}

/// Keeps frames that differ from the last kept one.
#[derive(Default)]
pub struct DuplicateFilter {
    last: Option<GrayImage>,
}

impl DuplicateFilter {
    /// Whether `frame` differs enough from the last kept frame (and becomes it when it does).
    pub fn keep(&mut self, frame: &RgbImage) -> bool {
        let thumb = image::imageops::grayscale(&image::imageops::thumbnail(frame, 32, 32));
        let new = self
            .last
            .as_ref()
            .is_none_or(|last| difference(last, &thumb) >= DUPLICATE_LEVEL);
        if new {
            self.last = Some(thumb);
        }
        new
    }
}

/// What the decoding thread shares with the caller.
struct Extraction {
    step: Option<usize>,
    counts: FrameCounts,
    filter: DuplicateFilter,
    error: Option<String>,
}

/// Decodes the recordings into `out` (made afresh) as `NNNNNN.png`; the counts in all.
pub fn extract(recordings: &[PathBuf], sampling: Sampling, out: &Path) -> Result<FrameCounts> {
    gst::init().context("cannot initialise GStreamer")?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot make {}", out.display()))?;
    let mut total = FrameCounts::default();
    for recording in recordings {
        let counts = extract_one(recording, sampling, out, total.kept)
            .with_context(|| format!("recording {}", recording.display()))?;
        // the caller prints the total; per file only where there are several
        if recordings.len() > 1 {
            eprintln!("recording {}: {counts}", recording.display());
        }
        total.read += counts.read;
        total.sampled += counts.sampled;
        total.kept += counts.kept;
        total.duplicates += counts.duplicates;
    }
    if total.kept == 0 {
        bail!(
            "no frame could be taken from {} recording(s)",
            recordings.len()
        );
    }
    Ok(total)
}

/// One recording's frames into `out`, numbered from `first`.
fn extract_one(
    recording: &Path,
    sampling: Sampling,
    out: &Path,
    first: usize,
) -> Result<FrameCounts> {
    let path = recording
        .canonicalize()
        .with_context(|| "cannot open the file".to_string())?;
    let uri = gst::glib::filename_to_uri(&path, None)
        .map_err(|e| anyhow::anyhow!("no URI for the path: {e}"))?;
    // frames converted to RGB as they come; other streams (audio) stay unlinked, which the
    // demuxers allow while one stream is linked
    let pipeline = gst::parse::launch(&format!(
        "uridecodebin uri=\"{uri}\" ! videoconvert \
         ! video/x-raw,format=RGB ! fakesink name=sink sync=false"
    ))
    .context("cannot build the decoding pipeline")?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("the decoding pipeline is not a pipeline"))?;
    let shared = Arc::new(Mutex::new(Extraction {
        step: match sampling {
            Sampling::Step(n) => Some(n.max(1)),
            Sampling::Count(_) => None,
        },
        counts: FrameCounts::default(),
        filter: DuplicateFilter::default(),
        error: None,
    }));
    let pad = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .context("no sink pad")?;
    let state = shared.clone();
    let out = out.to_path_buf();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut s = state.lock().unwrap();
        if s.error.is_some() {
            return gst::PadProbeReturn::Drop;
        }
        let Some(caps) = pad.current_caps() else {
            s.error = Some("frames without caps".into());
            return gst::PadProbeReturn::Drop;
        };
        let step = *s.step.get_or_insert_with(|| match sampling {
            Sampling::Count(n) => step_for(pad, &caps, n),
            Sampling::Step(n) => n,
        });
        let index = s.counts.read;
        s.counts.read += 1;
        if !index.is_multiple_of(step) {
            return gst::PadProbeReturn::Ok;
        }
        s.counts.sampled += 1;
        match frame_image(buffer, &caps) {
            Ok(img) => {
                if s.filter.keep(&img) {
                    let file = out.join(format!("{:06}.png", first + s.counts.kept));
                    match img.save(&file) {
                        Ok(()) => s.counts.kept += 1,
                        Err(e) => s.error = Some(format!("cannot write {}: {e}", file.display())),
                    }
                } else {
                    s.counts.duplicates += 1;
                }
            }
            Err(e) => s.error = Some(e),
        }
        gst::PadProbeReturn::Ok
    });
    pipeline
        .set_state(gst::State::Playing)
        .context("cannot start decoding (is it a recording GStreamer can decode?)")?;
    let bus = pipeline.bus().context("no bus")?;
    let mut failure = None;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => {
                failure = Some(format!(
                    "cannot decode it: {}{}",
                    e.error(),
                    e.debug().map(|d| format!(" ({d})")).unwrap_or_default()
                ));
                break;
            }
            _ => {}
        }
        if shared.lock().unwrap().error.is_some() {
            break;
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    let s = shared.lock().unwrap();
    if let Some(e) = failure.or_else(|| s.error.clone()) {
        bail!("{e}");
    }
    if s.counts.read == 0 {
        bail!("it holds no video frames");
    }
    Ok(s.counts.clone())
}

/// The step that spreads about `n` frames over the recording, from its duration and frame rate
/// (every frame when either is unknown).
fn step_for(pad: &gst::Pad, caps: &gst::CapsRef, n: usize) -> usize {
    let fps = caps
        .structure(0)
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map(|f| f.numer() as f64 / f.denom() as f64);
    let duration = pad.peer_query_duration::<gst::ClockTime>();
    match (fps, duration) {
        (Some(fps), Some(d)) => {
            let frames = d.seconds_f64() * fps;
            ((frames / n.max(1) as f64).floor() as usize).max(1)
        }
        _ => 1,
    }
}

/// A decoded RGB frame as an image (rows copied without their padding).
fn frame_image(buffer: &gst::BufferRef, caps: &gst::CapsRef) -> Result<RgbImage, String> {
    let info =
        gst_video::VideoInfo::from_caps(caps).map_err(|_| format!("unusable caps {caps}"))?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| "cannot map a frame".to_string())?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame
        .plane_data(0)
        .map_err(|_| "cannot read a frame".to_string())?;
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        pixels.extend_from_slice(&data[y * stride..y * stride + w * 3]);
    }
    RgbImage::from_raw(w as u32, h as u32, pixels).ok_or_else(|| "a short frame".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_are_dropped_and_changes_kept() {
        let mut f = DuplicateFilter::default();
        let plate =
            |level: u8| RgbImage::from_fn(64, 64, |x, _| image::Rgb([level + (x as u8 % 8); 3]));
        assert!(f.keep(&plate(100)));
        assert!(!f.keep(&plate(100)), "the same part again");
        assert!(!f.keep(&plate(101)), "compression noise");
        assert!(f.keep(&plate(120)), "another part");
    }

    #[test]
    fn recordings_are_video_files_or_folders_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("line.MP4");
        std::fs::write(&video, b"x").unwrap();
        assert_eq!(recordings(&video).unwrap(), vec![video.clone()]);
        assert_eq!(recordings(dir.path()).unwrap(), vec![video]);
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        assert!(
            recordings(dir.path()).unwrap().is_empty(),
            "a folder of images"
        );
        let err = extract(
            &[dir.path().join("line.MP4")],
            Sampling::Step(1),
            &dir.path().join("f"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("line.MP4"), "{err:#}");
    }
}
