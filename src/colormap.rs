//! A perceptually ordered heat colormap (dark blue -> cyan -> yellow -> red) for anomaly maps.

use image::{Rgb, RgbImage};

/// Colour anchors at evenly spaced positions in 0..1.
const ANCHORS: [[f32; 3]; 6] = [
    [0.0, 0.0, 0.35],
    [0.0, 0.3, 1.0],
    [0.0, 0.9, 0.9],
    [0.9, 0.95, 0.1],
    [1.0, 0.45, 0.0],
    [0.6, 0.0, 0.0],
];

/// Colour of `t` in 0..1 (clamped).
pub fn heat(t: f32) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (ANCHORS.len() - 1) as f32;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    [0, 1, 2].map(|c| ((a[c] + (b[c] - a[c]) * f) * 255.0).round() as u8)
}

/// How anomaly-map values become colours: the region threshold sits in the middle of the colour
/// map and the smallest value at its bottom, so that everything red is inside a defect region
/// and the scale means the same on every frame of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeatScale {
    lo: f32,
    per_unit: f32,
}

impl HeatScale {
    /// `lo` at the bottom of the colour map, `region_threshold` in its middle.
    pub fn new(lo: f32, region_threshold: f32) -> Self {
        let lo = if lo.is_finite() { lo } else { 0.0 };
        let lo = lo.min(region_threshold - 1e-6);
        HeatScale {
            lo,
            per_unit: 0.5 / (region_threshold - lo),
        }
    }

    /// The scale for one map: its smallest value at the bottom.
    pub fn of_map(data: &[f32], region_threshold: f32) -> Self {
        HeatScale::new(
            data.iter().copied().fold(f32::INFINITY, f32::min),
            region_threshold,
        )
    }

    /// Position of `v` on the colour map, 0..1 (clamped).
    #[inline]
    pub fn position(&self, v: f32) -> f32 {
        ((v - self.lo) * self.per_unit).clamp(0.0, 1.0)
    }

    /// Colour of `v`.
    pub fn colour(&self, v: f32) -> [u8; 3] {
        heat(self.position(v))
    }
}

/// Renders a map (row-major, `width` x `height`) as a heat image on `scale`.
pub fn render(data: &[f32], width: usize, height: usize, scale: HeatScale) -> RgbImage {
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        Rgb(scale.colour(data[y as usize * width + x as usize]))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ends_and_clamping() {
        assert_eq!(super::heat(0.0), [0, 0, 89]);
        assert_eq!(super::heat(1.0), [153, 0, 0]);
        assert_eq!(super::heat(-3.0), super::heat(0.0));
        assert_eq!(super::heat(f32::NAN), super::heat(0.0));
    }

    #[test]
    fn the_region_threshold_sits_in_the_middle() {
        let s = super::HeatScale::of_map(&[1.0, 2.0, 5.0], 3.0);
        assert_eq!(s.position(1.0), 0.0);
        assert_eq!(s.position(3.0), 0.5);
        assert_eq!(s.position(5.0), 1.0);
        assert_eq!(s.position(9.0), 1.0);
        // a map entirely above the threshold still has the threshold in the middle
        let s = super::HeatScale::of_map(&[4.0, 5.0], 3.0);
        assert!((s.position(3.0) - 0.5).abs() < 1e-3);
        assert_eq!(s.position(5.0), 1.0);
    }
}
