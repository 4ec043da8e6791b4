//! Multi-camera benchmark: N streams of `videotestsrc` through `anomalydetect` to `fakesink` in
//! one pipeline, the elements sharing one model (batched or not) or each with its own. Prints one
//! Markdown table row: aggregate frames/s, per-stream latency p50/p99 through the element, peak
//! resident memory of the process. One configuration per process, so that peak memory is its own.
//!
//! cargo run --release -p gst-plugin-clsflow --example bench_streams -- \
//!   [--model M] --streams 8 --mode shared|separate --batch 8 [--timeout-ms 20] [--frames 40] \
//!   [--size 1280x720] [--threads N] [--device cpu|cuda:N] [--soak]
//!
//! `--soak` samples resident memory every 1,000 frames instead (frames per stream from --frames).
use gst::prelude::*;

#[path = "common/bench.rs"]
mod bench;
use bench::{arg, percentile, status_mib};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Frames per stream left out of latency figures (libtorch warms up on the first calls).
const WARMUP: u64 = 3;

fn main() {
    gst::init().unwrap();
    gstclsflow::plugin_register_static().unwrap();
    let dir = std::env::temp_dir().join(format!("clsflow-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = arg("--model").unwrap_or_else(|| bench::default_model(&dir).display().to_string());
    let streams: usize = arg("--streams").map_or(1, |v| v.parse().unwrap());
    let mode = arg("--mode").unwrap_or_else(|| "shared".into());
    let batch: u32 = arg("--batch").map_or(1, |v| v.parse().unwrap());
    let timeout: u32 = arg("--timeout-ms").map_or(20, |v| v.parse().unwrap());
    let frames: u64 = arg("--frames").map_or(40, |v| v.parse().unwrap());
    let threads: u32 = arg("--threads").map_or(0, |v| v.parse().unwrap());
    let device = arg("--device").unwrap_or_else(|| "cpu".into());
    let soak = std::env::args().any(|a| a == "--soak");
    let (w, h) = arg("--size")
        .and_then(|s| {
            let (a, b) = s.split_once('x')?;
            Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
        })
        .unwrap_or((1280, 720));
    let desc: Vec<String> = (0..streams)
        .map(|i| {
            let instance = if mode == "separate" {
                format!("model-instance-id=camera{i}")
            } else {
                String::new()
            };
            format!(
                "videotestsrc pattern=ball num-buffers={frames} ! video/x-raw,format=RGBx,width={w},height={h} \
                 ! anomalydetect name=d{i} model={model} device={device} batch-size={batch} batch-timeout={timeout} threads={threads} {instance} \
                 ! fakesink sync=false"
            )
        })
        .collect();
    let pipeline = gst::parse::launch(&desc.join("  ")).expect("pipeline");
    let bin = pipeline.clone().downcast::<gst::Bin>().unwrap();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let done = Arc::new(Mutex::new(0u64));
    let rss: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
    for i in 0..streams {
        let d = bin.by_name(&format!("d{i}")).unwrap();
        let enter: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let e = enter.clone();
        d.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                    e.lock().unwrap().insert(pts.nseconds(), Instant::now());
                }
                gst::PadProbeReturn::Ok
            });
        let (lat, done, rss) = (latencies.clone(), done.clone(), rss.clone());
        let count = Arc::new(Mutex::new(0u64));
        d.static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut n = count.lock().unwrap();
                *n += 1;
                if let Some(t) = enter.lock().unwrap().remove(&pts.nseconds())
                    && *n > WARMUP
                {
                    lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                }
                let mut total = done.lock().unwrap();
                *total += 1;
                if soak && (*total == 100 || *total % 1000 == 0) {
                    rss.lock().unwrap().push((*total, status_mib("VmRSS:")));
                }
                gst::PadProbeReturn::Ok
            });
    }
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                eprintln!("bench_streams: {} ({:?})", e.error(), e.debug());
                std::process::exit(1);
            }
            _ => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let total = *done.lock().unwrap();
    if soak {
        let samples = rss.lock().unwrap();
        let cells: Vec<String> = samples.iter().map(|(_, m)| format!("{m:.0}")).collect();
        let heads: Vec<String> = samples.iter().map(|(f, _)| f.to_string()).collect();
        println!("| frame | {} |", heads.join(" | "));
        println!("|---|{}", "---|".repeat(samples.len()));
        println!("| RSS (MiB) | {} |", cells.join(" | "));
        return;
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let what = match mode.as_str() {
        "separate" => "a model per stream".to_string(),
        _ => format!("shared model, batch-size {batch}"),
    };
    println!(
        "| {streams} | {what} | {:.1} | {:.0} | {:.0} | {:.0} |",
        total as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        status_mib("VmHWM:")
    );
}
