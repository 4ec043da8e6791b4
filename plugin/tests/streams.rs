//! Several streams, one model: sharing, batching across streams, streams that stop, state
//! cycles, decoder formats and the results file, in real pipelines.
mod common;

use gst::prelude::*;
use gstclsflow::anomalydetect::shared;
use gstclsflow::meta::AnomalyInfo;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tests of this file count loads and live instances of the process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // the previous test's model is gone before this one counts loads
    assert!(freed(), "a model of an earlier test is still alive");
    guard
}

/// Whether every shared model is gone (the libtorch thread drops its last handle on a batch job
/// just after answering the frame: allow it a moment).
fn freed() -> bool {
    let t0 = Instant::now();
    while shared::live_instances() > 0 {
        if t0.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

const PATTERNS: [&str; 4] = ["smpte", "ball", "circular", "checkers-8"];
const PATTERN_FOR_FORMATS: &str = "ball";

/// A pipeline of one `videotestsrc ! anomalydetect ! fakesink` branch per entry of `frames`
/// (buffers per stream), detectors named d0, d1, ... with `props`.
fn streams(frames: &[u32], format: &str, props: &str) -> gst::Pipeline {
    streams_of(&PATTERNS, frames, format, props)
}

/// [`streams`] with stream i drawing `patterns[i % patterns.len()]`.
fn streams_of(patterns: &[&str], frames: &[u32], format: &str, props: &str) -> gst::Pipeline {
    common::init();
    let model = common::model();
    let desc: Vec<String> = frames
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "videotestsrc pattern={} num-buffers={n} ! video/x-raw,format={format},width=96,height=64 \
                 ! anomalydetect name=d{i} model={} {props} ! fakesink sync=false",
                patterns[i % patterns.len()],
                model.display()
            )
        })
        .collect();
    gst::parse::launch(&desc.join("  "))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// Every buffer's metadata, per detector, in order.
type Collected = Vec<Arc<Mutex<Vec<AnomalyInfo>>>>;

fn collect(p: &gst::Pipeline, n: usize) -> Collected {
    (0..n)
        .map(|i| {
            let got = Arc::new(Mutex::new(Vec::new()));
            let sink = got.clone();
            p.by_name(&format!("d{i}"))
                .unwrap()
                .static_pad("src")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if let Some(a) = info.buffer().and_then(|b| AnomalyInfo::from_buffer(b)) {
                        sink.lock().unwrap().push(a);
                    }
                    gst::PadProbeReturn::Ok
                });
            got
        })
        .collect()
}

/// Plays to EOS (or fails on an error or after `limit`).
fn play(p: &gst::Pipeline, limit: Duration) -> Result<(), String> {
    let bus = p.bus().unwrap();
    if let Err(e) = p.set_state(gst::State::Playing) {
        let error = bus
            .pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
                _ => None,
            });
        p.set_state(gst::State::Null).unwrap();
        return Err(format!("cannot play: {e}: {}", error.unwrap_or_default()));
    }
    let deadline = Instant::now() + limit;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            break Err(format!("no EOS within {limit:?}"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(format!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    p.set_state(gst::State::Null).unwrap();
    result
}

#[test]
fn elements_with_one_model_share_it_and_free_it_at_null() {
    let _s = serial();
    let before = shared::loads();
    let p = streams(&[2, 2, 2], "RGB", "");
    p.set_state(gst::State::Paused).unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(30));
    assert_eq!(shared::loads() - before, 1, "three elements, one load");
    assert_eq!(shared::live_instances(), 1);
    p.set_state(gst::State::Null).unwrap();
    assert!(freed(), "freed when the last element went to NULL");

    // an id of its own keeps an element apart; the same id with another model is refused
    let before = shared::loads();
    let p = streams(&[2, 2], "RGB", "");
    p.by_name("d1")
        .unwrap()
        .set_property("model-instance-id", "apart");
    play(&p, Duration::from_secs(60)).unwrap();
    assert_eq!(shared::loads() - before, 2);
    let other = common::repo().join("no-such-model.clsflow");
    let p = streams(&[2, 2], "RGB", "model-instance-id=same");
    p.by_name("d1")
        .unwrap()
        .set_property("model", other.to_str().unwrap());
    let err = play(&p, Duration::from_secs(60)).unwrap_err();
    assert!(
        err.contains("model-instance-id") || err.contains("no-such-model"),
        "{err}"
    );
}

/// Four streams batched by four give every buffer the metadata a lone element gives the same
/// frame, in order, per element.
#[test]
fn batched_streams_match_lone_elements() {
    let _s = serial();
    let frames = [6, 6, 6, 6];
    let p = streams(&frames, "RGB", "batch-size=4 batch-timeout=200");
    let batched = collect(&p, 4);
    play(&p, Duration::from_secs(120)).unwrap();
    for (i, got) in batched.iter().enumerate() {
        let lone_p = streams(&[frames[i]], "RGB", "");
        // the lone element sees stream i's pattern
        let src = lone_p
            .iterate_sources()
            .into_iter()
            .flatten()
            .next()
            .unwrap();
        src.set_property_from_str("pattern", PATTERNS[i]);
        let lone = collect(&lone_p, 1);
        play(&lone_p, Duration::from_secs(60)).unwrap();
        let (a, b) = (got.lock().unwrap(), lone[0].lock().unwrap());
        assert_eq!(a.len(), frames[i] as usize, "stream {i}: every buffer");
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(
                (x.score - y.score).abs() < 1e-5,
                "stream {i}: {} vs {}",
                x.score,
                y.score
            );
            let worst = x
                .map
                .iter()
                .zip(&y.map)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "stream {i}: maps differ by {worst}");
        }
    }
}

/// A stream that ends early never holds the others back, even with a long batch timeout.
#[test]
fn a_stream_that_ends_does_not_stall_the_others() {
    let _s = serial();
    let p = streams(&[2, 12, 12, 12], "RGB", "batch-size=4 batch-timeout=100");
    let got = collect(&p, 4);
    let t0 = Instant::now();
    play(&p, Duration::from_secs(120)).unwrap();
    let counts: Vec<usize> = got.iter().map(|g| g.lock().unwrap().len()).collect();
    assert_eq!(counts, [2, 12, 12, 12]);
    // at worst one timeout per frame of the longest stream
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

/// 200 cycles of the 4-stream pipeline through NULL and PLAYING: no hang, no model left behind,
/// and memory flat after the first cycles.
#[test]
fn two_hundred_state_cycles_of_four_streams() {
    let _s = serial();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    let p = streams(&[2, 2, 2, 2], "RGB", "batch-size=4 batch-timeout=20");
    let mut after_warmup = 0.0;
    for cycle in 0..200 {
        play(&p, Duration::from_secs(60)).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        assert!(freed(), "cycle {cycle}: the model was freed at NULL");
        if cycle == 19 {
            after_warmup = rss();
        }
    }
    let end = rss();
    assert!(
        end < after_warmup * 1.1 + 20.0,
        "resident memory grew from {after_warmup:.0} to {end:.0} MiB over 180 cycles"
    );
}

/// NV12 and I420, as decoders give them, link without a videoconvert and give about the scores
/// of the same pictures in RGB. videotestsrc draws each format itself, so the pictures differ
/// by the formats' chroma subsampling; a moving ball, without colour bars' sharp chroma edges,
/// keeps that small (the conversion itself is checked on identical pictures in
/// tests/anomalydetect.rs).
#[test]
fn decoder_formats_link_directly() {
    let _s = serial();
    let mut scores = Vec::new();
    for format in ["RGB", "NV12", "I420"] {
        let p = streams_of(&[PATTERN_FOR_FORMATS], &[3], format, "");
        let got = collect(&p, 1);
        play(&p, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{format}: {e}"));
        let g = got[0].lock().unwrap();
        assert_eq!(g.len(), 3, "{format}");
        scores.push(g.iter().map(|a| a.score).collect::<Vec<_>>());
    }
    for (f, s) in ["NV12", "I420"].iter().zip(&scores[1..]) {
        for (a, b) in s.iter().zip(&scores[0]) {
            let rel = (a - b).abs() / b.abs().max(1e-3);
            assert!(rel < 0.02, "{f}: {a} vs RGB {b}");
        }
    }
}

/// `results-location` writes one JSON line per frame (appending), and an unwritable path is an
/// element error when the pipeline starts.
#[test]
fn results_go_to_a_file() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.jsonl");
    std::fs::write(&file, "{\"earlier\":true}\n").unwrap();
    let props = format!("results-location={}", file.display());
    let p = streams(&[4, 3], "RGB", &props);
    play(&p, Duration::from_secs(60)).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        1 + 4 + 3,
        "the earlier line kept, one per frame"
    );
    for l in &lines[1..] {
        for key in [
            "frame",
            "source",
            "score",
            "normalized_score",
            "anomalous",
            "regions",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    let d0: Vec<u64> = lines[1..]
        .iter()
        .filter(|l| l["source"] == "d0")
        .map(|l| l["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(d0, [0, 1, 2, 3]);

    let p = streams(&[2], "RGB", "results-location=/no/such/folder/r.jsonl");
    let err = play(&p, Duration::from_secs(60)).unwrap_err();
    assert!(err.contains("/no/such/folder"), "{err}");
}
