//! Raw video frames to RGB tensors, for every packed format the elements accept.

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

/// A (1, 3, H, W) uint8 RGB tensor from one plane of packed pixels with row `stride`.
pub fn rgb_tensor(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    format: VideoFormat,
) -> Option<Tensor> {
    let (bpp, [r, g, b]) = layout(format)?;
    if stride < width * bpp || data.len() < stride * (height - 1) + width * bpp {
        return None;
    }
    // one copy of the visible rows; channel selection and layout change happen in libtorch
    let t = if stride == width * bpp {
        Tensor::from_slice(&data[..width * height * bpp])
    } else {
        let mut packed = Vec::with_capacity(width * height * bpp);
        for row in data.chunks(stride).take(height) {
            packed.extend_from_slice(&row[..width * bpp]);
        }
        Tensor::from_slice(&packed)
    };
    let t = t.view([height as i64, width as i64, bpp as i64]);
    let rgb = if bpp == 1 {
        t.expand([height as i64, width as i64, 3], false)
    } else {
        t.index_select(2, &Tensor::from_slice(&[r as i64, g as i64, b as i64]))
    };
    // contiguous NCHW: the detector's float conversion and antialiased resize are several
    // times slower on a channels-last view
    Some(rgb.permute([2, 0, 1]).contiguous().unsqueeze(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_orders() {
        // one BGRx pixel (10, 20, 30, 0) and one padded row
        let data = [10u8, 20, 30, 0, 99, 99, 99, 99];
        let t = rgb_tensor(&data, 1, 1, 8, VideoFormat::Bgrx).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![30, 20, 10]
        );
        let t = rgb_tensor(&[7u8, 1, 2, 3], 1, 1, 4, VideoFormat::Argb).unwrap();
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![1, 2, 3]
        );
        let t = rgb_tensor(&[5u8, 6, 0, 0], 2, 1, 4, VideoFormat::Gray8).unwrap();
        assert_eq!(t.size(), vec![1, 3, 1, 2]);
        assert_eq!(
            Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(),
            vec![5, 6, 5, 6, 5, 6]
        );
        assert!(
            rgb_tensor(&[0u8; 3], 2, 1, 3, VideoFormat::Rgb).is_none(),
            "short buffer"
        );
    }
}
