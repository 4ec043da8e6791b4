//! Why `clsflow::torch_thread` exists: the same detector, timed when one thread does all the
//! libtorch work and when a second thread joins in after the first has used libtorch (as a
//! GStreamer streaming thread would after a model loaded on the application's thread).
//!
//! cargo run --release -p clsflow-tools --bin openmp_threads
//!
//! The CPU libtorch runs its parallel loops on GNU OpenMP, which gives every calling thread its
//! own team of workers; with more OpenMP-managed threads than CPUs, libgomp makes all of them
//! stop spinning almost at once between parallel regions, and the many small regions of a
//! forward pass slow down. The figures printed below show the effect on this machine.
use clsflow::{BackboneKind, ClsFlowModel, Detector, ModelConfig, Scoring};
use std::time::Instant;

fn detector() -> Detector {
    tch::manual_seed(0);
    let model = ClsFlowModel::new(
        ModelConfig::new(BackboneKind::EfficientnetLite0),
        tch::Device::Cpu,
    )
    .expect("model");
    Detector::from_model(model, Scoring::default(), "probe")
}

/// Median ms per 720p frame over 20 frames after 5 warm-up frames.
fn median_ms(det: &Detector) -> f64 {
    let frame = (tch::Tensor::rand([1, 3, 720, 1280], (tch::Kind::Float, tch::Device::Cpu))
        * 255.0)
        .to_kind(tch::Kind::Uint8);
    let mut v = Vec::new();
    for i in 0..25 {
        let t0 = Instant::now();
        let maps = det.detect_batch(&frame).expect("detect");
        let _ = det.split(&maps, &[(1280, 720)], 4).expect("split");
        if i >= 5 {
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // 1. a single thread (not the main one) does everything
    let alone = std::thread::spawn(|| median_ms(&detector()))
        .join()
        .unwrap();
    // 2. the main thread loads and runs, then a second thread takes over
    let det = detector();
    let main = median_ms(&det);
    let second = std::thread::spawn(move || median_ms(&det)).join().unwrap();
    println!("libtorch threads: {}", tch::get_num_threads());
    println!("one thread does all libtorch work:          {alone:.1} ms/frame");
    println!("main thread, after the first thread exited: {main:.1} ms/frame");
    println!(
        "a second thread while main's team exists:   {second:.1} ms/frame ({:.2}x)",
        second / main
    );
}
