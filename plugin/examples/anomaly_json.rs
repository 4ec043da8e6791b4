//! Runs a pipeline that contains `anomalydetect` and prints one JSON line per frame with what it
//! found, read from the buffer metadata with a pad probe (the way an application would).
//!
//! cargo run --release -p gst-plugin-clsflow --example anomaly_json -- \
//!   'videotestsrc num-buffers=10 ! anomalydetect model=model.clsflow ! fakesink'
use gst::prelude::*;
use gstclsflow::meta::{AnomalyInfo, RegionInfo, frame_json};
use std::io::Write;

fn main() {
    if let Err(e) = run() {
        eprintln!("anomaly_json: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let desc = std::env::args()
        .nth(1)
        .ok_or("usage: anomaly_json 'PIPELINE WITH anomalydetect'")?;
    gst::init().map_err(|e| e.to_string())?;
    // static registration: no GST_PLUGIN_PATH needed for this program
    gstclsflow::plugin_register_static().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(&desc).map_err(|e| format!("invalid pipeline: {e}"))?;
    let bin = pipeline
        .clone()
        .downcast::<gst::Bin>()
        .map_err(|_| "not a bin")?;
    let detect = bin
        .iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "anomalydetect"))
        .ok_or("the pipeline has no anomalydetect element")?;
    let frame = std::sync::atomic::AtomicU64::new(0);
    let name = detect.name().to_string();
    detect
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                let n = frame.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(a) = AnomalyInfo::from_buffer(buffer) {
                    let regions = RegionInfo::all_from_buffer(buffer);
                    let line = frame_json(n, buffer.pts(), &name, &a, &regions);
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        format!(
            "the pipeline cannot start: {}",
            first_error(&pipeline).unwrap_or_default()
        )
    })?;
    let bus = pipeline.bus().unwrap();
    let result = loop {
        let msg = bus.timed_pop(gst::ClockTime::NONE).ok_or("bus closed")?;
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(format!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn first_error(pipeline: &gst::Element) -> Option<String> {
    let bus = pipeline.bus()?;
    bus.pop_filtered(&[gst::MessageType::Error])
        .and_then(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
}
