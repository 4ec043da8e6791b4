//! Snapshots' cost: the same pipeline of 320x240 frames with every frame flagged, without
//! snapshots, with snapshots at the default rate (one a second of stream time) and with a
//! snapshot of every flagged frame, each into a folder bound to 50 files; rounds taken in turn so
//! that the machine's drift hits every row alike. Prints a Markdown table.
//!
//! cargo run --release -p gst-plugin-clsflow --example bench_snapshots -- [--model M] [--frames N] [--rounds R] [--rows 2]
//!
//! `--rows 2` leaves out the last row (a snapshot of every flagged frame), the slowest.

#[path = "common/bench.rs"]
#[allow(dead_code)] // the figures of memory and latency are for the other benchmarks
mod bench;

use bench::arg;
use gst::prelude::*;
use std::path::Path;
use std::time::Instant;

/// Runs `description` to its end; seconds taken.
fn run(description: &str) -> f64 {
    let pipeline = gst::parse::launch(description).expect("pipeline parses");
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => panic!("{}: {}", e.error(), description),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    t0.elapsed().as_secs_f64()
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn main() {
    gst::init().unwrap();
    gstclsflow::plugin_register_static().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = match arg("--model") {
        Some(m) => m.into(),
        None => bench::default_model(dir.path()),
    };
    let frames: usize = arg("--frames").map_or(10_000, |v| v.parse().unwrap());
    let rounds: usize = arg("--rounds").map_or(5, |v| v.parse().unwrap());
    let per_round = frames / rounds;
    let all_rows = [
        ("no snapshots", None),
        ("snapshots, 1 a second (default)", Some(1.0)),
        ("snapshots of every flagged frame", Some(0.0)),
    ];
    let n_rows: usize = arg("--rows").map_or(all_rows.len(), |v| v.parse().unwrap());
    let rows = &all_rows[..n_rows.clamp(1, all_rows.len())];
    let mut seconds = vec![0.0; rows.len()];
    for _ in 0..rounds {
        for (i, (_, rate)) in rows.iter().enumerate() {
            let snapshots = match rate {
                Some(r) => format!(
                    "snapshot-location={} snapshot-max-rate={r} snapshot-max-files=50",
                    dir.path().join(format!("row{i}")).display()
                ),
                None => String::new(),
            };
            seconds[i] += run(&format!(
                "videotestsrc num-buffers={per_round} pattern=ball \
                 ! video/x-raw,format=RGBx,width=320,height=240,framerate=25/1 \
                 ! anomalydetect model={} threshold=-1000 drift-window=0 {snapshots} \
                 ! fakesink sync=false",
                model.display()
            ));
        }
    }
    println!(
        "{} frames of 320x240 RGBx per row, every frame flagged, in {rounds} rounds taken in turn; folder bound 50 files",
        per_round * rounds
    );
    println!();
    println!("| pipeline | frames/s | vs no snapshots | files in the folder at the end |");
    println!("|---|---|---|---|");
    for (i, (name, rate)) in rows.iter().enumerate() {
        let fps = (per_round * rounds) as f64 / seconds[i];
        let kept = rate.map_or("-".to_string(), |_| {
            files(&dir.path().join(format!("row{i}"))).to_string()
        });
        println!(
            "| {name} | {fps:.1} | {:.3} | {kept} |",
            seconds[0] / seconds[i]
        );
    }
}
