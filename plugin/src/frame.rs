//! Raw video frames to RGB planes (and tensors), for every packed format the elements accept.

use gst_video::VideoFormat;
use tch::Tensor;

/// Formats `anomalydetect` accepts.
pub const DETECT_FORMATS: [VideoFormat; 11] = [
    VideoFormat::Rgb,
    VideoFormat::Bgr,
    VideoFormat::Rgba,
    VideoFormat::Bgra,
    VideoFormat::Argb,
    VideoFormat::Abgr,
    VideoFormat::Rgbx,
    VideoFormat::Bgrx,
    VideoFormat::Xrgb,
    VideoFormat::Xbgr,
    VideoFormat::Gray8,
];

/// Bytes per pixel and the byte offsets of R, G and B within a pixel.
pub fn layout(format: VideoFormat) -> Option<(usize, [usize; 3])> {
    Some(match format {
        VideoFormat::Rgb => (3, [0, 1, 2]),
        VideoFormat::Bgr => (3, [2, 1, 0]),
        VideoFormat::Rgba | VideoFormat::Rgbx => (4, [0, 1, 2]),
        VideoFormat::Bgra | VideoFormat::Bgrx => (4, [2, 1, 0]),
        VideoFormat::Argb | VideoFormat::Xrgb => (4, [1, 2, 3]),
        VideoFormat::Abgr | VideoFormat::Xbgr => (4, [3, 2, 1]),
        VideoFormat::Gray8 => (1, [0, 0, 0]),
        _ => return None,
    })
}

/// A frame's pixels as three uint8 planes (R, G, B), ready for libtorch.
#[derive(Debug, Clone)]
pub struct RgbPlanes {
    /// R plane, then G, then B; `width * height` bytes each.
    pub data: Vec<u8>,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
}

impl RgbPlanes {
    /// Reads one plane of packed pixels with row `stride`; None when the format is not packed
    /// RGB/grey or `data` is too short for the given size.
    ///
    /// One pass in Rust writes the three planes straight from the frame: selecting channels on
    /// the last axis in libtorch (a gather) cost more than the whole detector at 720p. Plain Rust
    /// also keeps libtorch off the streaming thread (see `clsflow::torch_thread`).
    pub fn from_packed(
        data: &[u8],
        width: usize,
        height: usize,
        stride: usize,
        format: VideoFormat,
    ) -> Option<Self> {
        let (bpp, offsets) = layout(format)?;
        if width == 0
            || height == 0
            || stride < width * bpp
            || data.len() < stride * (height - 1) + width * bpp
        {
            return None;
        }
        let mut planes = vec![0u8; 3 * width * height];
        // a constant pixel size lets the compiler unroll and vectorise the inner loop
        match bpp {
            4 => split_planes::<4>(data, width, height, stride, offsets, &mut planes),
            3 => split_planes::<3>(data, width, height, stride, offsets, &mut planes),
            _ => split_planes::<1>(data, width, height, stride, offsets, &mut planes),
        }
        Some(RgbPlanes {
            data: planes,
            width,
            height,
        })
    }

    /// The (1, 3, H, W) uint8 tensor of the planes (a copy).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).view([1, 3, self.height as i64, self.width as i64])
    }
}

/// Writes the R, G and B planes of packed `BPP`-byte pixels into `planes` (3 * width * height).
fn split_planes<const BPP: usize>(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    offsets: [usize; 3],
    planes: &mut [u8],
) {
    let plane = width * height;
    let (r, rest) = planes.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (y, row) in data.chunks(stride).take(height).enumerate() {
        let out = y * width..(y + 1) * width;
        let pixels = row[..width * BPP].chunks_exact(BPP);
        for (((px, r), g), b) in pixels
            .zip(&mut r[out.clone()])
            .zip(&mut g[out.clone()])
            .zip(&mut b[out])
        {
            *r = px[offsets[0]];
            *g = px[offsets[1]];
            *b = px[offsets[2]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_orders() {
        // one BGRx pixel (10, 20, 30, 0) and one padded row
        let data = [10u8, 20, 30, 0, 99, 99, 99, 99];
        let t = RgbPlanes::from_packed(&data, 1, 1, 8, VideoFormat::Bgrx)
            .unwrap()
            .to_tensor();
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![30, 20, 10]
        );
        let t = RgbPlanes::from_packed(&[7u8, 1, 2, 3], 1, 1, 4, VideoFormat::Argb)
            .unwrap()
            .to_tensor();
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![1, 2, 3]
        );
        let t = RgbPlanes::from_packed(&[5u8, 6, 0, 0], 2, 1, 4, VideoFormat::Gray8)
            .unwrap()
            .to_tensor();
        assert_eq!(t.size(), vec![1, 3, 1, 2]);
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![5, 6, 5, 6, 5, 6]
        );
        assert!(
            RgbPlanes::from_packed(&[0u8; 3], 2, 1, 3, VideoFormat::Rgb).is_none(),
            "short buffer"
        );
    }
}
