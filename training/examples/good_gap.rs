//! Diagnostic: do the branches score the good images they were trained on lower than held-out
//! good images of the same category (overfitting)? Training images only; no test image is read.
//! cargo run --release -p clsflow-train --example good_gap -- RUN_DIR
//! (the images are those the run's state.json names)
use clsflow::checkpoint;
use clsflow_train::calibrate::branch_maps;
use clsflow_train::stage2;
use clsflow_train::train::TrainState;
use indicatif::ProgressBar;
use std::path::Path;
use tch::Device;

fn stats(name: &str, v: &mut [f32]) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    println!(
        "{name:28} n {:4}  mean {mean:8.3}  p50 {:8.3}  p90 {:8.3}  p99 {:8.3}  max {:8.3}",
        v.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let run = Path::new(&a[1]);
    let (model, manifest) = checkpoint::load(&run.join("model.clsflow"), Device::Cpu)?;
    let (train, held) = TrainState::load(run)?.good_images()?;
    let pb = ProgressBar::hidden();
    let ft = stage2::extract_features(&model, &train, &manifest.normalization, &pb);
    let fh = stage2::extract_features(&model, &held, &manifest.normalization, &pb);
    for tap in 0..3 {
        let nll = |f| stage2::mean_nll_per_channel(&model, tap, &stage2::to_rows(f));
        println!(
            "tap {tap}: -log p / C  training {:.4}  held-out {:.4}",
            nll(&ft[tap]),
            nll(&fh[tap])
        );
    }
    let sc = &manifest.scoring;
    for (name, imgs) in [
        ("stage-1/2 training good", &train),
        ("held-out good", &held),
    ] {
        let maps = tch::no_grad(|| {
            branch_maps(&model, imgs, sc.tap_log_prob_max, &manifest.normalization)
        });
        let max = |m: &Vec<Vec<f32>>| -> Vec<f32> {
            m.iter()
                .map(|r| r.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                .collect()
        };
        stats(&format!("{name}: flow max"), &mut max(&maps.flow));
        stats(&format!("{name}: cls max"), &mut max(&maps.cls));
    }
    Ok(())
}
