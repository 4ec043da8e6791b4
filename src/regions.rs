//! Defect regions: 8-connected components of an anomaly map above a threshold.

use crate::detector::AnomalyMap;
use image::{GrayImage, Luma};
use imageproc::region_labelling::{Connectivity, connected_components};

/// The smallest region reported by default, in map pixels (a few pixels of noise are not a
/// defect); `anomalydetect`'s `min-region-area` and `predict --min-region-area` change it.
pub const DEFAULT_MIN_REGION_AREA: u32 = 4;

/// One connected region of map values above the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Left column of the bounding box (map coordinates).
    pub x: u32,
    /// Top row of the bounding box.
    pub y: u32,
    /// Bounding box width.
    pub width: u32,
    /// Bounding box height.
    pub height: u32,
    /// Pixels in the region.
    pub area: u32,
    /// Largest map value inside.
    pub max_score: f32,
    /// Mean map value inside.
    pub mean_score: f32,
}

impl Region {
    /// The bounding box scaled from a map of `map_w` x `map_h` to a frame of `frame_w` x
    /// `frame_h` (outward rounding, clipped to the frame): (x, y, w, h).
    pub fn scaled_box(
        &self,
        map_w: usize,
        map_h: usize,
        frame_w: u32,
        frame_h: u32,
    ) -> (u32, u32, u32, u32) {
        let sx = frame_w as f64 / map_w as f64;
        let sy = frame_h as f64 / map_h as f64;
        let x0 = (self.x as f64 * sx).floor() as u32;
        let y0 = (self.y as f64 * sy).floor() as u32;
        let x1 = (((self.x + self.width) as f64 * sx).ceil() as u32).min(frame_w);
        let y1 = (((self.y + self.height) as f64 * sy).ceil() as u32).min(frame_h);
        (
            x0,
            y0,
            x1.saturating_sub(x0).max(1),
            y1.saturating_sub(y0).max(1),
        )
    }
}

/// A defect region in the pixels of the frame or image its map was computed for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FrameRegion {
    /// Left column of the bounding box.
    pub x: u32,
    /// Top row of the bounding box.
    pub y: u32,
    /// Bounding box width.
    pub width: u32,
    /// Bounding box height.
    pub height: u32,
    /// Area in frame pixels (the map pixels scaled to the frame).
    pub area: u32,
    /// Largest fused-map value inside.
    pub max_score: f32,
    /// Mean fused-map value inside.
    pub mean_score: f32,
}

impl FrameRegion {
    /// The bounding box as (x, y, width, height).
    pub fn rect(&self) -> (u32, u32, u32, u32) {
        (self.x, self.y, self.width, self.height)
    }
}

/// [`find_regions`] of `map`, with boxes and areas scaled to a frame of `frame_w` x `frame_h`.
pub fn frame_regions(
    map: &AnomalyMap,
    threshold: f32,
    min_area: u32,
    frame_w: u32,
    frame_h: u32,
) -> Vec<FrameRegion> {
    let scale = f64::from(frame_w) * f64::from(frame_h) / (map.width * map.height) as f64;
    find_regions(map, threshold, min_area)
        .into_iter()
        .map(|r| {
            let (x, y, width, height) = r.scaled_box(map.width, map.height, frame_w, frame_h);
            FrameRegion {
                x,
                y,
                width,
                height,
                area: (f64::from(r.area) * scale).round() as u32,
                max_score: r.max_score,
                mean_score: r.mean_score,
            }
        })
        .collect()
}

/// Binary mask (255 where `map > threshold`).
pub fn threshold_mask(map: &AnomalyMap, threshold: f32) -> GrayImage {
    GrayImage::from_fn(map.width as u32, map.height as u32, |x, y| {
        let v = map.data[y as usize * map.width + x as usize];
        Luma([if v > threshold { 255 } else { 0 }])
    })
}

/// Regions of `map` above `threshold` with at least `min_area` pixels, largest score first.
pub fn find_regions(map: &AnomalyMap, threshold: f32, min_area: u32) -> Vec<Region> {
    let mask = threshold_mask(map, threshold);
    let labels = connected_components(&mask, Connectivity::Eight, Luma([0u8]));
    let mut acc: Vec<Option<Region>> = Vec::new();
    let mut sums: Vec<f64> = Vec::new();
    for (x, y, l) in labels.enumerate_pixels() {
        let l = l[0] as usize;
        if l == 0 {
            continue;
        }
        if acc.len() < l {
            acc.resize(l, None);
            sums.resize(l, 0.0);
        }
        let v = map.data[y as usize * map.width + x as usize];
        sums[l - 1] += f64::from(v);
        let r = acc[l - 1].get_or_insert(Region {
            x,
            y,
            width: 1,
            height: 1,
            area: 0,
            max_score: v,
            mean_score: 0.0,
        });
        let (x0, y0) = (r.x.min(x), r.y.min(y));
        let x1 = (r.x + r.width).max(x + 1);
        let y1 = (r.y + r.height).max(y + 1);
        *r = Region {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
            area: r.area + 1,
            max_score: r.max_score.max(v),
            mean_score: 0.0,
        };
    }
    let mut regions: Vec<Region> = acc
        .into_iter()
        .zip(sums)
        .filter_map(|(r, s)| {
            r.map(|mut r| {
                r.mean_score = (s / r.area as f64) as f32;
                r
            })
        })
        .filter(|r| r.area >= min_area)
        .collect();
    regions.sort_by(|a, b| b.max_score.total_cmp(&a.max_score));
    regions
}
