//! Diagnostic: trains fresh flows of one tap on a trained run's (frozen) extractor at several
//! learning rates and reports the mean -log p / C of the run's held-out good images: the flows'
//! schedule is chosen on training images only (docs/experiments.md).
//! cargo run --release -p clsflow-train --example flow_lr_probe -- RUN_DIR TAP EPOCHS LR...
//! (the images are those the run's state.json names)
use clsflow::ClsFlowModel;
use clsflow::checkpoint;
use clsflow_train::config::Stage2Config;
use clsflow_train::stage2;
use clsflow_train::train::TrainState;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tch::Device;

fn env_f64(name: &str) -> f64 {
    std::env::var(name).map_or(0.0, |v| v.parse().expect(name))
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let run = Path::new(&a[1]);
    let tap: usize = a[2].parse()?;
    let epochs: usize = a[3].parse()?;
    let lrs: Vec<f64> = a[4..].iter().map(|v| v.parse()).collect::<Result<_, _>>()?;
    let (trained, manifest) = checkpoint::load(&run.join("model.clsflow"), Device::Cpu)?;
    let state = TrainState::load(run)?;
    let (train_imgs, hold_imgs) = state.good_images()?;
    let norm = manifest.normalization;
    let pb = ProgressBar::hidden();
    let feats = stage2::extract_features(&trained, &train_imgs, &norm, &pb);
    let hfeats = stage2::extract_features(&trained, &hold_imgs, &norm, &pb);
    let rows = stage2::to_rows(&feats[tap]);
    let hrows = stage2::to_rows(&hfeats[tap]);
    println!(
        "tap {tap}: {} training rows, {} held-out rows ({} images)",
        rows.size()[0],
        hrows.size()[0],
        hold_imgs.len()
    );
    let held_out_nll = |model: &ClsFlowModel| stage2::mean_nll_per_channel(model, tap, &hrows);
    println!("trained run's flow: hold {:.4}", held_out_nll(&trained));
    for lr in lrs {
        tch::manual_seed(0);
        let model = ClsFlowModel::new(trained.config().clone(), Device::Cpu)?;
        let cfg = Stage2Config {
            epochs,
            warmup_epochs: 1.min(epochs - 1),
            lr,
            fiber_batch: 256,
            vectors_per_epoch: None,
            // regularisers under probe: CLSFLOW_PROBE_WD, CLSFLOW_PROBE_NOISE
            weight_decay: env_f64("CLSFLOW_PROBE_WD"),
            feature_noise: [env_f64("CLSFLOW_PROBE_NOISE"); 3],
            parallel_flows: false,
        };
        let mut job = stage2::FlowJob::new(&model, tap, rows.shallow_clone(), cfg)?;
        let t0 = std::time::Instant::now();
        let mut line = format!("lr {lr:e}:");
        for epoch in 0..epochs {
            let mut rng = ChaCha8Rng::seed_from_u64(epoch as u64);
            let loss = job
                .train_epoch(epoch, &mut rng, &AtomicBool::new(false), &pb)?
                .unwrap();
            // held-out NLL per channel
            let nll = held_out_nll(&model);
            line += &format!(" e{} loss {loss:.4} hold {nll:.4};", epoch + 1);
        }
        println!("{line} {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
