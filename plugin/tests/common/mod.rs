//! Shared helpers: GStreamer init with the static plugin, tiny real models trained once per test
//! binary, and frames packed in every format the elements take.
#![allow(dead_code)]

use clsflow_train::config::TrainConfig;
use clsflow_train::train::{MODEL, Start, train};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().unwrap();
        gstclsflow::plugin_register_static().expect("plugin registers");
    });
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[path = "../../../tests/common/shared_data.rs"]
mod shared_data;

/// A tiny model (configs/test-tiny.toml) trained once per test binary on the generated demo
/// category, the same with or without the real data beside the checkout.
pub fn model() -> PathBuf {
    static MODEL_PATH: OnceLock<PathBuf> = OnceLock::new();
    MODEL_PATH
        .get_or_init(|| {
            let dir = test_dir("demo");
            let _ = std::fs::remove_dir_all(&dir);
            let data = dir.join("data");
            clsflow_train::demo_data::generate(&data, Default::default(), 1).unwrap();
            train_tiny(data, dir.join("run"))
        })
        .clone()
}

/// The generated demo category that [`model`] was trained on.
pub fn demo_data() -> PathBuf {
    model();
    test_dir("demo").join("data")
}

/// A tiny model trained once per test binary on the real Magnetic-Tile category, with the
/// category's folder; `None` (the test says it skips) when the data is absent.
pub fn magnetic_tile_model() -> Option<(PathBuf, PathBuf)> {
    static MODEL_PATH: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    MODEL_PATH
        .get_or_init(|| {
            let data = shared_data::category("magnetic_tile")?;
            let dir = test_dir("magnetic_tile");
            let _ = std::fs::remove_dir_all(&dir);
            let model = train_tiny(data.clone(), dir.join("run"));
            Some((model, data))
        })
        .clone()
}

/// This test binary's folder for `what` under target/ (cargo's folder for integration-test
/// files): a re-run replaces it instead of leaving folders in /tmp.
fn test_dir(what: &str) -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "plugin-tests".into());
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(binary)
        .join(what)
}

/// Trains configs/test-tiny.toml on `data` into `out`; the model's path.
fn train_tiny(data: PathBuf, out: PathBuf) -> PathBuf {
    let mut cfg = TrainConfig::load(&repo().join("configs/test-tiny.toml")).unwrap();
    cfg.model.weights = Some(repo().join("models/efficientnet_lite0.safetensors"));
    let model = out.join(MODEL);
    // on the libtorch thread that the elements use (see clsflow::torch_thread)
    clsflow::torch_thread::run(move || {
        train(
            cfg,
            &data,
            &out,
            Start::Fresh,
            Arc::new(AtomicBool::new(false)),
        )
        .expect("tiny training")
    })
    .expect("training job");
    model
}

/// An RGB test image of `w` x `h` with structure (not flat).
pub fn rgb_frame(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&[
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 64 * 4) as u8,
            ]);
        }
    }
    v
}

/// Packs RGB pixels into a buffer of `format` with GStreamer's default strides (NV12 and I420:
/// converted with the colour matrix and range that GStreamer gives such caps by default, chroma
/// averaged over each 2x2 block, as a colour converter does).
pub fn pack(rgb: &[u8], w: u32, h: u32, format: gst_video::VideoFormat) -> gst::Buffer {
    let info = gst_video::VideoInfo::builder(format, w, h).build().unwrap();
    if matches!(
        format,
        gst_video::VideoFormat::Nv12 | gst_video::VideoFormat::I420
    ) {
        return pack_yuv420(rgb, &info);
    }
    let (bpp, offs) = gstclsflow::frame::layout(format).unwrap();
    let stride = info.stride()[0] as usize;
    let mut data = vec![0u8; info.size()];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let src = &rgb[(y * w as usize + x) * 3..][..3];
            let dst = y * stride + x * bpp;
            if bpp == 1 {
                data[dst] = ((src[0] as u32 + src[1] as u32 + src[2] as u32) / 3) as u8;
            } else {
                for c in 0..3 {
                    data[dst + offs[c]] = src[c];
                }
            }
        }
    }
    gst::Buffer::from_mut_slice(data)
}

fn pack_yuv420(rgb: &[u8], info: &gst_video::VideoInfo) -> gst::Buffer {
    let (w, h) = (info.width() as usize, info.height() as usize);
    let c = info.colorimetry();
    let (kr, kb) = match c.matrix() {
        gst_video::VideoColorMatrix::Bt601 => (0.299f32, 0.114f32),
        _ => (0.2126, 0.0722),
    };
    let full = c.range() == gst_video::VideoColorRange::Range0_255;
    let px = |x: usize, y: usize| {
        let p = &rgb[(y.min(h - 1) * w + x.min(w - 1)) * 3..][..3];
        [p[0], p[1], p[2]].map(f32::from)
    };
    let yuv = |[r, g, b]: [f32; 3]| {
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        let (cb, cr) = ((b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr)));
        if full {
            [y, cb + 128.0, cr + 128.0]
        } else {
            [
                16.0 + y * 219.0 / 255.0,
                128.0 + cb * 224.0 / 255.0,
                128.0 + cr * 224.0 / 255.0,
            ]
        }
    };
    let strides = info.stride();
    let offsets = info.offset();
    let mut data = vec![0u8; info.size()];
    for y in 0..h {
        for x in 0..w {
            data[offsets[0] + y * strides[0] as usize + x] = yuv(px(x, y))[0].round() as u8;
        }
    }
    let nv12 = info.format() == gst_video::VideoFormat::Nv12;
    for cy in 0..h.div_ceil(2) {
        for cx in 0..w.div_ceil(2) {
            let mut sum = [0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let v = yuv(px(2 * cx + dx, 2 * cy + dy));
                sum.iter_mut().zip(v).for_each(|(s, v)| *s += v / 4.0);
            }
            let [_, u, v] = sum.map(|v| v.round().clamp(0.0, 255.0) as u8);
            if nv12 {
                let i = offsets[1] + cy * strides[1] as usize + 2 * cx;
                data[i] = u;
                data[i + 1] = v;
            } else {
                data[offsets[1] + cy * strides[1] as usize + cx] = u;
                data[offsets[2] + cy * strides[2] as usize + cx] = v;
            }
        }
    }
    gst::Buffer::from_mut_slice(data)
}

pub fn caps(format: gst_video::VideoFormat, w: u32, h: u32) -> gst::Caps {
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
        .to_caps()
        .unwrap()
}
