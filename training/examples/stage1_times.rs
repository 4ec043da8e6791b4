//! Benchmark: where a decoder-only stage-1 step spends its time, on a finished run's images and
//! model (training images only; weights do not matter for speed). Prints milliseconds per batch
//! for: synthesising the defects and building the tensors, the frozen extractor's forward pass,
//! and the decoder's forward, loss, backward and Adam step.
//! cargo run --release -p clsflow-train --example stage1_times -- RUN_DIR [BATCHES]
use clsflow::checkpoint;
use clsflow_train::stage1;
use clsflow_train::synth::DefectSynthesizer;
use clsflow_train::synth::textures::load_textures;
use clsflow_train::train::TrainState;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Reduction, Tensor};

fn main() -> anyhow::Result<()> {
    // as clsflow-train does: libtorch's tensors stay in the heap instead of being re-faulted
    clsflow::alloc::keep_tensor_memory();
    let a: Vec<String> = std::env::args().collect();
    let run = Path::new(&a[1]);
    let batches: usize = a.get(2).map_or(Ok(20), |s| s.parse())?;
    let (mut model, manifest) = checkpoint::load(&run.join("model.clsflow"), Device::Cpu)?;
    let state = TrainState::load(run)?;
    let cfg = &state.config;
    let (images, _) = state.good_images()?;
    let size = cfg.model.input_size as u32;
    let synth = DefectSynthesizer::new(cfg.synth.clone(), load_textures(&cfg.data.textures, size)?);
    let mut opt = stage1::optimizer(&model, &cfg.stage1)?;
    model.set_backbone_trainable(false);
    // as stage 1's decoder-only epochs run it (docs/experiments.md item 42)
    model.set_extractor_folded(true);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let bs = cfg.stage1.batch_size;
    let (mut t_synth, mut t_feat, mut t_dec) = (0.0, 0.0, 0.0);
    for b in 0..batches + 2 {
        let t0 = Instant::now();
        let samples: Vec<_> = (0..bs)
            .map(|i| {
                let k = (b * bs + i) % images.len();
                synth.sample(&images[k], &images, None, false, &mut rng)
            })
            .collect();
        let (x, target) = stage1::batch_tensors(&samples, &manifest.normalization)?;
        let t1 = Instant::now();
        let taps = tch::no_grad(|| model.features(&x));
        let _ = taps[2].sum(tch::Kind::Float).double_value(&[]);
        let t2 = Instant::now();
        let logits = model.cls_logits(&taps, true);
        let loss =
            logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean);
        opt.backward_step(&loss);
        let _ = loss.double_value(&[]);
        let t3 = Instant::now();
        if b >= 2 {
            t_synth += (t1 - t0).as_secs_f64();
            t_feat += (t2 - t1).as_secs_f64();
            t_dec += (t3 - t2).as_secs_f64();
        }
    }
    let ms = |t: f64| 1e3 * t / batches as f64;
    let total = t_synth + t_feat + t_dec;
    println!(
        "batch {bs}, {batches} batches, ms per batch: synthesis + tensors {:.1} ({:.0} %), extractor {:.1} ({:.0} %), decoder step {:.1} ({:.0} %), total {:.1}",
        ms(t_synth),
        100.0 * t_synth / total,
        ms(t_feat),
        100.0 * t_feat / total,
        ms(t_dec),
        100.0 * t_dec / total,
        ms(total)
    );
    // the frozen extractor with its BatchNorms folded into the convolutions (as stage 1 runs it
    // since item 42 of docs/experiments.md) and unfolded (as it ran before)
    let x = stage1::batch_tensors(
        &images[..bs]
            .iter()
            .map(|i| synth.sample(i, &images, None, false, &mut rng))
            .collect::<Vec<_>>(),
        &manifest.normalization,
    )?
    .0;
    let time_features = |model: &clsflow::model::ClsFlowModel| {
        let t0 = Instant::now();
        for _ in 0..batches {
            let taps = tch::no_grad(|| model.features(&x));
            let _ = taps[2].sum(tch::Kind::Float).double_value(&[]);
        }
        1e3 * t0.elapsed().as_secs_f64() / batches as f64
    };
    model.set_extractor_folded(false);
    let unfolded = time_features(&model);
    model.set_extractor_folded(true);
    let folded = time_features(&model);
    println!(
        "extractor alone, ms per batch: unfolded {unfolded:.1}, BatchNorms folded (as stage 1 runs it) {folded:.1} ({:.2}x)",
        folded / unfolded
    );
    Ok(())
}
