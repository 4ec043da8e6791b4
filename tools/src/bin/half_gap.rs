//! Diagnostic: how far the detector's `half` precision (CPU: bfloat16 matmuls in the flows)
//! moves a trained run's fused maps, image scores and verdicts, on its held-out good images and
//! a ninth of its training images. Training images only; no test image is read.
//! cargo run --release -p clsflow-tools --bin half_gap -- RUN_DIR
use clsflow::{Detector, DetectorOptions};
use clsflow_train::train::TrainState;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let run = Path::new(&a[1]);
    let opts = |half| DetectorOptions {
        device: clsflow::DeviceSpec::Cpu,
        half,
    };
    let model = run.join("model.clsflow");
    let full = Detector::load(&model, &opts(false))?;
    let half = Detector::load(&model, &opts(true))?;
    let (train, held) = TrainState::load(run)?.good_images()?;
    let sample: Vec<_> = train.iter().step_by(9).cloned().collect();
    for (name, imgs) in [
        ("held-out good", &held),
        ("training good, every 9th", &sample),
    ] {
        let (mut sf, mut sh, mut worst, mut sum, mut n, mut spread) =
            (vec![], vec![], 0f32, 0f64, 0usize, 0f32);
        let mut cls_worst = 0f32;
        for chunk in imgs.chunks(8) {
            for (f, h) in full.detect(chunk)?.iter().zip(half.detect(chunk)?) {
                sf.push(f.score);
                sh.push(h.score);
                let lo = f.fused.data.iter().copied().fold(f32::INFINITY, f32::min);
                spread = spread.max(f.fused.max() - lo);
                for (a, b) in f.cls.data.iter().zip(&h.cls.data) {
                    cls_worst = cls_worst.max((a - b).abs());
                }
                for (a, b) in f.fused.data.iter().zip(&h.fused.data) {
                    worst = worst.max((a - b).abs());
                    sum += (a - b).abs() as f64;
                    n += 1;
                }
            }
        }
        let mean = sf.iter().sum::<f32>() / sf.len() as f32;
        let std = (sf.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / sf.len() as f32).sqrt();
        let dscore = sf
            .iter()
            .zip(&sh)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let threshold = full.scoring().threshold as f32;
        let flipped: Vec<(f32, f32)> = sf
            .iter()
            .zip(&sh)
            .filter(|(a, b)| (**a > threshold) != (**b > threshold))
            .map(|(a, b)| (*a, *b))
            .collect();
        let flips = flipped.len();
        for (a, b) in &flipped {
            println!(
                "  verdict changed: score {a:.5} (float32) -> {b:.5} (half), threshold {threshold:.5}"
            );
        }
        println!(
            "{name}: {} images; fused map |half - full| mean {:.4} max {worst:.4} (largest map range {spread:.3}); image score max change {dscore:.4} against a score std of {std:.4}; verdicts changed {flips}; classifier map |half - full| max {cls_worst:.2e}",
            sf.len(),
            sum / n as f64
        );
    }
    Ok(())
}
