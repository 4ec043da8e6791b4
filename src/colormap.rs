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

/// Renders a map (row-major, `width` x `height`) as a heat image, values scaled from `lo`..`hi`.
pub fn render(data: &[f32], width: usize, height: usize, lo: f32, hi: f32) -> RgbImage {
    let span = if hi > lo { hi - lo } else { 1.0 };
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        Rgb(heat((data[y as usize * width + x as usize] - lo) / span))
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
}
