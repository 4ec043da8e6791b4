//! GStreamer-path benchmark: `videotestsrc` at 1280x720 through `anomalydetect` (and
//! `anomalyoverlay`) to `fakesink`, against the bare detector on frames of the same size (fed
//! as a libtorch tensor, and as a packed frame the way the element feeds it), in one run;
//! the overlay's drawing alone on packed RGBx and on NV12 frames; then a long soak run that
//! samples resident memory.
//!
//! cargo run --release -p gst-plugin-clsflow --example bench_pipeline -- [--model M] [--frames N] [--rounds R] [--soak-frames N] [--overlay-only]
use clsflow::regions::DEFAULT_MIN_REGION_AREA;
use clsflow::resample::{PackedFrame, input_tensor, packed_to_input};
use clsflow::{Detector, DetectorOptions, torch_thread};
use gst::prelude::*;

#[path = "common/bench.rs"]
mod bench;
use bench::{arg, percentile, status_mib};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Median of sorted samples (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0
}

/// Frames left out of latency and throughput figures (libtorch warms up on the first calls).
const WARMUP: usize = 5;

/// Runs `desc` to EOS; returns (ms per frame after warm-up, per-frame latencies in ms through
/// the element named `detect` (and `overlay` if present) after warm-up, frames, the element's
/// own `inference-ms` (frame conversion + detector job) after warm-up, sorted).
fn run_pipeline(
    desc: &str,
    on_frame: Option<Box<dyn Fn(u64) + Send + Sync>>,
) -> (f64, Vec<f64>, u64, Vec<f64>) {
    let pipeline = gst::parse::launch(desc).expect("pipeline");
    let bin = pipeline.clone().downcast::<gst::Bin>().unwrap();
    let enter: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let frames = Arc::new(Mutex::new(0u64));
    let inference: Arc<Mutex<Vec<f64>>> = Arc::default();
    let outs: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let first = bin.by_name("detect").unwrap();
    let last = bin.by_name("overlay").unwrap_or_else(|| first.clone());
    let e = enter.clone();
    first
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                e.lock().unwrap().insert(pts.nseconds(), Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
    let (e, l, f, o) = (enter.clone(), lat.clone(), frames.clone(), outs.clone());
    let inf = inference.clone();
    last.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts())
                && let Some(t) = e.lock().unwrap().remove(&pts.nseconds())
            {
                l.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
            }
            o.lock().unwrap().push(Instant::now());
            if let Some(m) = info
                .buffer()
                .and_then(|b| gstclsflow::meta::AnomalyInfo::from_buffer(b))
            {
                inf.lock().unwrap().push(m.inference_ms);
            }
            let mut n = f.lock().unwrap();
            *n += 1;
            if let Some(cb) = &on_frame {
                cb(*n);
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::NONE,
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    if let gst::MessageView::Error(err) = msg.view() {
        panic!("pipeline error: {} {:?}", err.error(), err.debug());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let n = *frames.lock().unwrap();
    let outs = outs.lock().unwrap();
    let per_frame = if outs.len() > WARMUP + 1 {
        (outs[outs.len() - 1] - outs[WARMUP]).as_secs_f64() * 1e3 / (outs.len() - 1 - WARMUP) as f64
    } else {
        f64::NAN
    };
    let mut v: Vec<f64> = lat.lock().unwrap().iter().skip(WARMUP).copied().collect();
    v.sort_by(f64::total_cmp);
    let mut inf: Vec<f64> = inference
        .lock()
        .unwrap()
        .iter()
        .skip(WARMUP)
        .copied()
        .collect();
    inf.sort_by(f64::total_cmp);
    (per_frame, v, n, inf)
}

/// How the bare detector gets its input.
#[derive(Clone, Copy)]
enum Prep {
    /// A (1, 3, H, W) uint8 tensor, resized and normalised in libtorch (`detect_batch`).
    Libtorch,
    /// The element's way: a packed RGBx frame resized and normalised in Rust, then
    /// `detect_input`.
    Rust,
}

/// The bare detector on a `w` x `h` frame (input in, maps and regions out), on the libtorch
/// thread that the element uses too: ms per frame after warm-up.
fn bare_detector(model: &Path, w: i64, h: i64, frames: usize, prep: Prep) -> Vec<f64> {
    let path = model.to_path_buf();
    torch_thread::run(move || {
        let det = Detector::load(
            &path,
            &DetectorOptions {
                device: clsflow::DeviceSpec::Cpu,
                half: false,
            },
        )
        .unwrap();
        let frame = (tch::Tensor::rand([1, 3, h, w], (tch::Kind::Float, tch::Device::Cpu)) * 255.0)
            .to_kind(tch::Kind::Uint8);
        let packed = Vec::<u8>::try_from(
            tch::Tensor::cat(&[&frame, &frame.narrow(1, 0, 1)], 1)
                .permute([0, 2, 3, 1])
                .flatten(0, -1),
        )
        .unwrap();
        let size = det.model().config().input_size as usize;
        let norm = det.manifest().normalization;
        let mut v = Vec::new();
        for i in 0..frames + WARMUP {
            let t0 = Instant::now();
            let maps = match prep {
                Prep::Libtorch => det.detect_batch(&frame).unwrap(),
                Prep::Rust => {
                    let f = PackedFrame {
                        data: &packed,
                        width: w as usize,
                        height: h as usize,
                        stride: 4 * w as usize,
                        bytes_per_pixel: 4,
                        rgb_offsets: [0, 1, 2],
                    };
                    let input = packed_to_input(&f, size, &norm).unwrap();
                    det.detect_input(&input_tensor(&input, size)).unwrap()
                }
            };
            // the element's post-processing: maps to Rust, regions in frame pixels
            let d = det
                .split(&maps, &[(w as u32, h as u32)], DEFAULT_MIN_REGION_AREA)
                .unwrap()
                .remove(0);
            std::hint::black_box(d);
            if i >= WARMUP {
                v.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        v
    })
    .unwrap()
}

/// One row of the GStreamer table: mean ms per frame, frames/s and, where there are latencies
/// (sorted), their p50 and p99.
fn table_row(name: &str, ms: f64, latencies: &[f64]) {
    let lat = if latencies.is_empty() {
        " | |".to_string()
    } else {
        let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
        format!(" {p50:.1} | {p99:.1} |")
    };
    println!("| {name} | {ms:.1} | {:.1} |{lat}", 1e3 / ms);
}

/// Mean and sorted samples.
fn summary(mut v: Vec<f64>) -> (f64, Vec<f64>) {
    v.sort_by(f64::total_cmp);
    (v.iter().sum::<f64>() / v.len() as f64, v)
}

/// The overlay's work on one 1280x720 frame without GStreamer, as `anomalyoverlay` does it: a
/// 64x64 map resized to the frame, heatmap and boxes painted, the caption drawn; RGBx against
/// NV12, in alternating rounds. Prints one row per format.
fn overlay_rows(w: usize, h: usize, frames: usize, rounds: usize) {
    use clsflow::detector::AnomalyMap;
    use clsflow::draw::{
        Canvas, Chroma, DEFAULT_FONT, OverlayStyle, draw_caption, load_font, paint,
    };
    use clsflow::resample::YuvColorimetry;
    let font = load_font(DEFAULT_FONT).ok();
    let map = AnomalyMap {
        width: 64,
        height: 64,
        data: (0..64 * 64)
            .map(|i| ((i % 64) * (i / 64)) as f32 / 4096.0)
            .collect(),
    };
    let boxes = [(200, 150, 300, 200), (800, 400, 120, 90)];
    let style = OverlayStyle::default();
    let (mut rgbx, mut nv12) = (vec![90u8; w * h * 4], vec![90u8; w * h * 3 / 2]);
    let mut times = [Vec::new(), Vec::new()];
    let per_round = frames.div_ceil(rounds);
    for _ in 0..rounds {
        for (k, times) in times.iter_mut().enumerate() {
            for _ in 0..per_round {
                let t = Instant::now();
                let big = map.resized(w, h);
                let mut canvas = if k == 0 {
                    Canvas::packed(&mut rgbx, (w, h), 4 * w, 4, [0, 1, 2]).unwrap()
                } else {
                    let (y, uv) = nv12.split_at_mut(w * h);
                    let chroma = Chroma::Interleaved { uv, stride: w };
                    Canvas::yuv420(y, w, chroma, (w, h), YuvColorimetry::BT709).unwrap()
                };
                paint(&mut canvas, &big, 0.5, &boxes, &style);
                if let Some(f) = &font {
                    draw_caption(
                        &mut canvas,
                        f,
                        "ANOMALY  score 1.234 / 0.500  regions 2",
                        [255, 48, 48],
                    );
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!(
        "\n| overlay drawing alone ({w}x{h}, map resize + heatmap + boxes + caption) | ms/frame p50 | p99 |"
    );
    println!("|---|---|---|");
    for (name, mut t) in ["packed RGBx", "NV12"].into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} | {:.2} |",
            percentile(&t, 0.5),
            percentile(&t, 0.99)
        );
    }
}

fn main() {
    gst::init().unwrap();
    gstclsflow::plugin_register_static().unwrap();
    let frames: usize = arg("--frames").and_then(|v| v.parse().ok()).unwrap_or(60);
    let soak: usize = arg("--soak-frames")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rounds: usize = arg("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    if std::env::args().any(|a| a == "--overlay-only") {
        overlay_rows(1280, 720, frames, rounds);
        return;
    }
    let dir = std::env::temp_dir().join(format!("clsflow-bench-{}", std::process::id()));
    let model = match arg("--model") {
        Some(m) => PathBuf::from(m),
        None => bench::default_model(&dir),
    };
    let (w, h) = (1280, 720);
    let threads = torch_thread::run(tch::get_num_threads).unwrap();
    println!(
        "GStreamer path, {w}x{h} RGBx, {frames} frames per row in {rounds} rounds taken in turn, {threads} libtorch threads\n"
    );
    // The rows take turns in `rounds` rounds of frames / rounds frames each, so that the load
    // of this shared machine, which moves the same detector by 15-25 % from one minute to the
    // next, hits every row alike; the element overhead is the median of the rounds' overheads,
    // each the element against the bare detector measured right before it.
    let per_round = frames.div_ceil(rounds);
    let src = format!(
        "videotestsrc num-buffers={} pattern=ball ! video/x-raw,format=RGBx,width={w},height={h},framerate=30/1",
        per_round + WARMUP
    );
    let m = model.display();
    let (mut bare, mut bare_torch) = (Vec::new(), Vec::new());
    let (mut detect_lat, mut detect_inf, mut overlay_lat) = (Vec::new(), Vec::new(), Vec::new());
    let (mut detect_ms, mut overlay_ms, mut src_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut round_overheads = Vec::new();
    for _ in 0..rounds {
        let b = bare_detector(&model, w, h, per_round, Prep::Rust);
        bare_torch.extend(bare_detector(&model, w, h, per_round, Prep::Libtorch));
        let (ms, lat, _, inf) = run_pipeline(
            &format!("{src} ! anomalydetect name=detect model={m} ! fakesink sync=false"),
            None,
        );
        let (b50, e50) = (
            percentile(&summary(b.clone()).1, 0.5),
            percentile(&lat, 0.5),
        );
        round_overheads.push(100.0 * (e50 - b50) / b50);
        bare.extend(b);
        detect_ms.push(ms);
        detect_lat.extend(lat);
        detect_inf.extend(inf);
        let (ms, lat, _, _) = run_pipeline(
            &format!(
                "{src} ! anomalydetect name=detect model={m} ! anomalyoverlay name=overlay ! fakesink sync=false"
            ),
            None,
        );
        overlay_ms.push(ms);
        overlay_lat.extend(lat);
        let (ms, _, _, _) = run_pipeline(
            &format!("{src} ! identity name=detect ! fakesink sync=false"),
            None,
        );
        src_ms.push(ms);
    }
    let [detect_ms, overlay_ms, src_ms] = [detect_ms, overlay_ms, src_ms].map(|v| summary(v).0);
    for v in [&mut detect_lat, &mut detect_inf, &mut overlay_lat] {
        v.sort_by(f64::total_cmp);
    }
    let (bare_ms, bare) = summary(bare);
    let (torch_ms, bare_torch) = summary(bare_torch);
    println!("| row | ms/frame | frames/s | latency p50 ms | latency p99 ms |");
    println!("|---|---|---|---|---|");
    table_row(
        "bare detector, uint8 frame tensor resized in libtorch (detect_batch)",
        torch_ms,
        &bare_torch,
    );
    table_row(
        "bare detector, packed frame resized in Rust (as the element)",
        bare_ms,
        &bare,
    );
    table_row("videotestsrc ! fakesink (source alone)", src_ms, &[]);
    table_row(
        "videotestsrc ! anomalydetect ! fakesink",
        detect_ms,
        &detect_lat,
    );
    table_row(
        "... ! anomalydetect ! anomalyoverlay ! fakesink",
        overlay_ms,
        &overlay_lat,
    );
    let (elem, b) = (percentile(&detect_lat, 0.5), percentile(&bare, 0.5));
    round_overheads.sort_by(f64::total_cmp);
    println!(
        "\nelement overhead (median latency through anomalydetect vs the median bare detector doing the same work): {:+.1} % (median of {rounds} rounds: {}; pooled: {:+.1} %)",
        median(&round_overheads),
        round_overheads
            .iter()
            .map(|o| format!("{o:+.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * (elem - b) / b
    );
    if !detect_inf.is_empty() {
        let inf = percentile(&detect_inf, 0.5);
        println!(
            "of the element's median latency, {inf:.1} ms are its frame conversion + detector job (inference-ms in the metadata), {:.1} ms the rest of the element",
            elem - inf
        );
    }
    overlay_rows(w as usize, h as usize, frames, rounds);
    if soak > 0 {
        let samples: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
        let s = samples.clone();
        let every = (soak as u64 / 10).max(1);
        let (ms, _, n, _) = run_pipeline(
            &format!(
                "videotestsrc num-buffers={soak} pattern=ball ! video/x-raw,format=RGBx,width=320,height=240 ! anomalydetect name=detect model={m} ! anomalyoverlay name=overlay ! fakesink sync=false"
            ),
            Some(Box::new(move |n| {
                if n == 100 || n % every == 0 {
                    s.lock().unwrap().push((n, status_mib("VmRSS:")));
                }
            })),
        );
        let v = samples.lock().unwrap().clone();
        println!(
            "\nsoak: {n} frames at 320x240 through anomalydetect ! anomalyoverlay, {ms:.1} ms/frame"
        );
        println!(
            "resident memory (MiB) by frame: {}",
            v.iter()
                .map(|(f, r)| format!("{f}: {r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let (Some(a), Some(b)) = (v.first(), v.last()) {
            println!(
                "growth from frame {} to {}: {:+.1} MiB",
                a.0,
                b.0,
                b.1 - a.1
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
