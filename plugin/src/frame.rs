//! Raw video frames to network input, for every format `anomalydetect` accepts: packed RGB-like
//! and grey frames, and the 4:2:0 YUV frames that decoders and cameras give (NV12, I420).

use clsflow::Normalization;
use clsflow::resample::{
    PackedFrame, Yuv420Frame, YuvColorimetry, packed_to_input_dims, yuv420_to_input_dims,
};
use gst_video::prelude::*;
use gst_video::{VideoColorMatrix, VideoColorRange, VideoFormat};

/// Formats `anomalydetect` accepts.
pub const DETECT_FORMATS: [VideoFormat; 13] = [
    VideoFormat::Nv12,
    VideoFormat::I420,
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

/// Formats `anomalyoverlay` draws on: the packed RGB-like ones and the 4:2:0 YUV ones that
/// decoders give (grey frames need a `videoconvert` before it).
pub const OVERLAY_FORMATS: [VideoFormat; 12] = [
    VideoFormat::Nv12,
    VideoFormat::I420,
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
];

/// How a YUV frame's values map to RGB, from its caps' colour matrix and range.
pub fn yuv_colorimetry(info: &gst_video::VideoInfo) -> YuvColorimetry {
    let c = info.colorimetry();
    YuvColorimetry {
        full_range: c.range() == VideoColorRange::Range0_255,
        ..match c.matrix() {
            VideoColorMatrix::Bt601 | VideoColorMatrix::Smpte240m => YuvColorimetry::BT601,
            VideoColorMatrix::Bt2020 => YuvColorimetry {
                kr: 0.2627,
                kb: 0.0593,
                full_range: false,
            },
            // BT.709 and unknown: GStreamer's default for HD, and its matrix for SD differs
            // by little
            _ => YuvColorimetry::BT709,
        }
    }
}

/// Bytes per pixel and the offsets of R, G, B of a packed format.
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

/// A mapped frame of one of [`DETECT_FORMATS`] as the model's normalised input (3, height,
/// width) of `dims` = (width, height): packed formats through [`model_input`], NV12 and I420
/// converted to RGB by the caps' colour matrix and range as their rows are read.
pub fn frame_input(
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    dims: (usize, usize),
    norm: &Normalization,
) -> Result<Vec<f32>, String> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let format = frame.format();
    let strides = frame.plane_stride();
    let plane = |i: u32| {
        frame
            .plane_data(i)
            .map_err(|_| format!("cannot read plane {i}"))
    };
    match format {
        VideoFormat::Nv12 | VideoFormat::I420 => {
            let colorimetry = yuv_colorimetry(frame.info());
            let y = plane(0)?;
            let nv12 = format == VideoFormat::Nv12;
            let (u, v) = if nv12 {
                let uv = plane(1)?;
                (uv, uv.get(1..).unwrap_or_default())
            } else {
                (plane(1)?, plane(2)?)
            };
            let f = Yuv420Frame {
                y,
                y_stride: strides[0] as usize,
                u,
                v,
                uv_stride: strides[1] as usize,
                uv_step: if nv12 { 2 } else { 1 },
                width: w,
                height: h,
                colorimetry,
            };
            yuv420_to_input_dims(&f, dims.0, dims.1, norm).map_err(|e| e.to_string())
        }
        _ => model_input(plane(0)?, w, h, strides[0] as usize, format, dims, norm),
    }
}

/// A raw frame of one of the packed [`DETECT_FORMATS`] as the model's normalised input (3, height, width)
/// of `dims` = (width, height), planar floats, resized and converted in one pass in plain Rust
/// ([`clsflow::resample`]).
///
/// No libtorch here: this runs on the streaming thread, and even a tensor copy of this size
/// starts an OpenMP team on the calling thread, which halves libtorch's speed on its own thread
/// (see `clsflow::torch_thread`); `clsflow::resample::input_tensor` makes the tensor inside the
/// libtorch job.
pub fn model_input(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    format: VideoFormat,
    dims: (usize, usize),
    norm: &Normalization,
) -> Result<Vec<f32>, String> {
    let (bytes_per_pixel, rgb_offsets) =
        layout(format).ok_or_else(|| format!("unsupported format {format:?}"))?;
    let frame = PackedFrame {
        data,
        width,
        height,
        stride,
        bytes_per_pixel,
        rgb_offsets,
    };
    packed_to_input_dims(&frame, dims.0, dims.1, norm).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clsflow::resample::input_tensor;

    /// No normalisation: the input is the bytes / 255.
    const RAW: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// At the frame's own size the resize is the identity: with mean 0 and std 1 the input is
    /// the R, G and B bytes / 255.
    fn rgb(data: &[u8], w: usize, h: usize, stride: usize, f: VideoFormat) -> Vec<u8> {
        assert_eq!(w, h, "square frames only");
        let t = input_tensor(
            &model_input(data, w, h, stride, f, (w, w), &RAW).unwrap(),
            w,
        );
        assert_eq!(t.size(), vec![1, 3, w as i64, w as i64]);
        Vec::<f32>::try_from(t.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect()
    }

    #[test]
    fn channel_orders() {
        // one BGRx pixel (10, 20, 30, 0) and one padded row
        let data = [10u8, 20, 30, 0, 99, 99, 99, 99];
        assert_eq!(rgb(&data, 1, 1, 8, VideoFormat::Bgrx), vec![30, 20, 10]);
        assert_eq!(
            rgb(&[7u8, 1, 2, 3], 1, 1, 4, VideoFormat::Argb),
            vec![1, 2, 3]
        );
        // 2x2 grey with a padded stride
        let grey = [5u8, 6, 0, 7, 8, 0];
        assert_eq!(
            rgb(&grey, 2, 2, 3, VideoFormat::Gray8),
            vec![5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8]
        );
        let err = model_input(&[0u8; 3], 2, 1, 3, VideoFormat::Rgb, (4, 4), &RAW).unwrap_err();
        assert!(err.contains("do not hold"), "{err}");
        assert!(model_input(&[0u8; 16], 2, 2, 6, VideoFormat::I420, (4, 4), &RAW).is_err());
    }
}
