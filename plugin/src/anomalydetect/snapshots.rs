//! Snapshots of flagged frames: the frame as an image, the same frame with its overlay, and its
//! JSON record, written to a folder by a thread of their own so that encoding and a slow or full
//! disk never hold up the stream. The folder is kept within a number of files and bytes by
//! removing the oldest snapshots first; failures reach the bus as warnings, once until a write
//! succeeds again.

use crate::frame::{layout, yuv_colorimetry};
use crate::meta::{AnomalyInfo, RegionInfo};
use clsflow::draw::{Canvas, DEFAULT_FONT, OverlayStyle, caption, draw_caption, load_font};
use gst_video::VideoFormat;
use gst_video::prelude::*;
use image::RgbImage;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// File names start with this, so that bounding the folder touches no other file.
const PREFIX: &str = "snapshot-";

/// Snapshots that may wait for the writer; beyond it new ones are dropped (and counted), so the
/// stream never waits for the disk.
const QUEUE: usize = 8;

/// How snapshot images are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG at quality 90: small, for a folder that keeps many.
    Jpeg,
    /// PNG: lossless.
    Png,
}

impl ImageFormat {
    fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// Where and how snapshots are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotOptions {
    /// The folder (made when missing).
    pub folder: PathBuf,
    /// Image encoding.
    pub format: ImageFormat,
    /// At most this many snapshot files in the folder (0: no bound).
    pub max_files: usize,
    /// At most this many bytes of snapshot files in the folder (0: no bound).
    pub max_bytes: u64,
    /// The element's name, in the file names (elements may share a folder).
    pub source: String,
}

/// One flagged frame to keep.
pub struct Snapshot {
    /// The frame (a copy: the stream goes on with its own buffer).
    pub buffer: gst::Buffer,
    /// Its caps.
    pub info: gst_video::VideoInfo,
    /// What the detector found.
    pub anomaly: AnomalyInfo,
    /// Its regions.
    pub regions: Vec<RegionInfo>,
    /// Its JSON record (the `results-location` schema).
    pub record: serde_json::Value,
    /// Its index in the stream.
    pub frame: u64,
}

/// The sending side; the writer thread ends when it is dropped, after the queued snapshots.
pub struct SnapshotWriter {
    sender: Option<SyncSender<Snapshot>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: u64,
}

impl SnapshotWriter {
    /// Starts the writer thread; `warn` is called (from that thread) with a message for the bus
    /// when writing fails, once until a snapshot is written again.
    pub fn start(
        options: SnapshotOptions,
        warn: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("clsflow-snapshots-{}", options.source))
            .spawn(move || write_all(receiver, &options, warn))?;
        Ok(SnapshotWriter {
            sender: Some(sender),
            thread: Some(thread),
            dropped: 0,
        })
    }

    /// Queues a snapshot without waiting; false (and counted) when the queue is full.
    pub fn send(&mut self, snapshot: Snapshot) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        match sender.try_send(snapshot) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// Snapshots dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: each snapshot written, then the folder bounded.
fn write_all(receiver: Receiver<Snapshot>, options: &SnapshotOptions, warn: impl Fn(String)) {
    let font = load_font(DEFAULT_FONT).ok();
    let mut failing = false;
    for snapshot in receiver {
        let written = std::fs::create_dir_all(&options.folder)
            .map_err(|e| format!("cannot make the folder: {e}"))
            .and_then(|()| write_one(&snapshot, options, font.as_ref()))
            .and_then(|()| {
                bound_folder(&options.folder, options.max_files, options.max_bytes)
                    .map_err(|e| format!("cannot bound the folder: {e}"))
            });
        match written {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn(format!(
                    "snapshot-location {}: {e}; the stream goes on, snapshots are retried on the next flagged frame",
                    options.folder.display()
                ));
            }
            Err(_) => {}
        }
    }
}

/// The three files of one snapshot, each written to a temporary name and renamed.
fn write_one(
    s: &Snapshot,
    options: &SnapshotOptions,
    font: Option<&ab_glyph::FontArc>,
) -> Result<(), String> {
    let image = to_rgb(&s.buffer, &s.info)?;
    let mut overlay = image.clone();
    draw_overlay(&mut overlay, &s.anomaly, &s.regions, font);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // time first: names sort by age, and elements sharing the folder never collide
    let stem = format!(
        "{PREFIX}{millis:013}-{}-{:08}",
        sanitized(&options.source),
        s.frame
    );
    let ext = options.format.extension();
    let folder = &options.folder;
    save_image(
        &image,
        &folder.join(format!("{stem}.{ext}")),
        options.format,
    )?;
    save_image(
        &overlay,
        &folder.join(format!("{stem}.overlay.{ext}")),
        options.format,
    )?;
    let mut json = s.record.to_string();
    json.push('\n');
    write_atomically(&folder.join(format!("{stem}.json")), json.as_bytes())
}

/// A name made safe for a file name.
fn sanitized(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn save_image(img: &RgbImage, path: &Path, format: ImageFormat) -> Result<(), String> {
    let mut bytes = Vec::new();
    let encoded = match format {
        ImageFormat::Jpeg => img.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90),
        ),
        ImageFormat::Png => img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut bytes)),
    };
    encoded.map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path` and renames it: a reader never sees half a
/// file, and a full disk leaves no partial snapshot behind.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Removes the oldest snapshots (all files of each) until the folder's snapshot files are within
/// `max_files` and `max_bytes` (0: no bound).
pub fn bound_folder(folder: &Path, max_files: usize, max_bytes: u64) -> std::io::Result<()> {
    if max_files == 0 && max_bytes == 0 {
        return Ok(());
    }
    let mut files: Vec<(String, u64)> = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && !name.ends_with(".tmp") {
            files.push((name, entry.metadata()?.len()));
        }
    }
    // names start with the time: sorted by name is oldest first, a snapshot's files together
    files.sort();
    let mut count = files.len();
    let mut bytes: u64 = files.iter().map(|f| f.1).sum();
    let over = |count: usize, bytes: u64| {
        (max_files > 0 && count > max_files) || (max_bytes > 0 && bytes > max_bytes)
    };
    let mut i = 0;
    while over(count, bytes) && i < files.len() {
        let stem = files[i].0.split('.').next().unwrap_or_default().to_string();
        while i < files.len() && files[i].0.split('.').next() == Some(stem.as_str()) {
            std::fs::remove_file(folder.join(&files[i].0))?;
            count -= 1;
            bytes -= files[i].1;
            i += 1;
        }
    }
    Ok(())
}

/// The frame as RGB at its own size, whatever its format among those `anomalydetect` takes.
fn to_rgb(buffer: &gst::Buffer, info: &gst_video::VideoInfo) -> Result<RgbImage, String> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
        .map_err(|_| "cannot map the frame".to_string())?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let strides: Vec<usize> = frame.plane_stride().iter().map(|&s| s as usize).collect();
    let plane = |i: u32| {
        frame
            .plane_data(i)
            .map_err(|_| format!("cannot read plane {i}"))
    };
    let mut img = RgbImage::new(w as u32, h as u32);
    match info.format() {
        VideoFormat::Nv12 | VideoFormat::I420 => {
            let c = yuv_colorimetry(info);
            let nv12 = info.format() == VideoFormat::Nv12;
            let (y, u) = (plane(0)?, plane(1)?);
            let v = if nv12 { u } else { plane(2)? };
            for (x, yy, p) in img.enumerate_pixels_mut() {
                let (x, yy) = (x as usize, yy as usize);
                let luma = y[yy * strides[0] + x];
                let row = yy / 2 * strides[1];
                let (cu, cv) = if nv12 {
                    (u[row + x / 2 * 2], v[row + x / 2 * 2 + 1])
                } else {
                    (u[row + x / 2], v[yy / 2 * strides[2] + x / 2])
                };
                p.0 = c.rgb(luma, cu, cv);
            }
        }
        VideoFormat::Gray8 => {
            let data = plane(0)?;
            for (x, y, p) in img.enumerate_pixels_mut() {
                p.0 = [data[y as usize * strides[0] + x as usize]; 3];
            }
        }
        other => {
            let (bpp, [r, g, b]) =
                layout(other).ok_or_else(|| format!("cannot keep {other:?} frames"))?;
            let data = plane(0)?;
            for (x, y, p) in img.enumerate_pixels_mut() {
                let o = y as usize * strides[0] + x as usize * bpp;
                p.0 = [data[o + r], data[o + g], data[o + b]];
            }
        }
    }
    Ok(img)
}

/// The overlay `anomalyoverlay` draws by default: heatmap, region boxes, the verdict caption.
fn draw_overlay(
    img: &mut RgbImage,
    info: &AnomalyInfo,
    regions: &[RegionInfo],
    font: Option<&ab_glyph::FontArc>,
) {
    let size = (img.width() as usize, img.height() as usize);
    let style = OverlayStyle::default();
    let mut canvas = Canvas::of_rgb(img);
    crate::anomalyoverlay::paint_result(&mut canvas, size, info, regions, &style);
    if let Some(font) = font {
        let text = caption(info.anomalous, info.score, info.threshold, regions.len());
        draw_caption(&mut canvas, font, &text, style.line_colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_snapshots_go_first_whole() {
        let dir = tempfile::tempdir().unwrap();
        for t in 0..5 {
            for ext in ["jpg", "overlay.jpg", "json"] {
                let name = format!("{PREFIX}{t:013}-d-00000000.{ext}");
                std::fs::write(dir.path().join(name), [0u8; 10]).unwrap();
            }
        }
        std::fs::write(dir.path().join("notes.txt"), [0u8; 1000]).unwrap();
        bound_folder(dir.path(), 7, 0).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // two whole snapshots (6 files) and the file that is not a snapshot
        assert_eq!(left.len(), 7, "{left:?}");
        assert!(left[0].starts_with("notes"));
        assert!(left[1].starts_with(&format!("{PREFIX}{:013}", 3)));
        bound_folder(dir.path(), 0, 35).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            4,
            "one snapshot of 30 bytes"
        );
    }
}
