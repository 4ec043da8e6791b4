//! Diagnostic: could the two heads (decoder and three flows) run faster at batch 1 side by side,
//! on two OS threads with one libtorch thread each, than one after the other with two libtorch
//! threads? Default config, untrained weights (the time does not depend on them); medians of 35
//! rounds, each round timing every variant in turn after a backbone forward (BENCHMARKS.md,
//! "What remains"). Try it with `GOMP_SPINCOUNT` set, too: libgomp's spinning workers matter.
//! cargo run --release -p clsflow-train --example heads_threads -- [BATCH]
use clsflow::ClsFlowModel;
use clsflow::flow::FoldedFlow;
use clsflow_train::config::TrainConfig;
use clsflow_train::timing::median;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Shares read-only model tensors with a scoped helper thread. `tch::Tensor` is not `Sync`
/// because a handle can mutate its tensor; here both threads only read the weights and the taps
/// while they run, which libtorch allows from several threads at once.
struct ReadOnly<T>(T);
unsafe impl<T> Sync for ReadOnly<T> {}
unsafe impl<T> Send for ReadOnly<T> {}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    clsflow::alloc::keep_tensor_memory();
    let batch: i64 = std::env::args().nth(1).map_or(Ok(1), |b| b.parse())?;
    tch::manual_seed(0);
    let cfg = TrainConfig::load(Path::new("configs/cpu-fast.toml"))?;
    let mut model = ClsFlowModel::new(cfg.model_config(), Device::Cpu)?;
    model.fold_for_inference();
    let flows: Vec<FoldedFlow> = (0..3)
        .map(|t| model.flows()[t].fold(model.condition_rows(t)))
        .collect();
    let x = Tensor::randn([batch, 3, 256, 256], (Kind::Float, Device::Cpu));
    let threads = tch::get_num_threads();
    let shared = ReadOnly((&model, &flows));
    // rows: in turn with `threads` libtorch threads; side by side with the helper taking the
    // flows of taps {0, 2} or {0, 1}; then each head alone on one libtorch thread
    let mut times = vec![Vec::new(); 7];
    tch::no_grad(|| {
        for round in 0..40 {
            let mut t = vec![];
            let taps = model.features(&x);
            let t0 = Instant::now();
            let _ = model.cls_logits(&taps, false).sigmoid();
            let _: Vec<Tensor> = (0..3).map(|i| flows[i].log_prob_map(&taps[i])).collect();
            t.push(ms(t0));
            for helper_taps in [[0usize, 2], [0, 1]] {
                let taps = ReadOnly(model.features(&x));
                let t0 = Instant::now();
                let (shared, taps) = (&shared, &taps);
                std::thread::scope(|scope| {
                    let helper = scope.spawn(move || {
                        tch::set_num_threads(1);
                        let maps = helper_taps.map(|i| shared.0.1[i].log_prob_map(&taps.0[i]));
                        ReadOnly(maps)
                    });
                    tch::set_num_threads(1);
                    let _ = model.cls_logits(&taps.0, false).sigmoid();
                    let own = (0..3).find(|i| !helper_taps.contains(i)).expect("a tap");
                    let _ = flows[own].log_prob_map(&taps.0[own]);
                    let _ = helper.join().expect("helper thread");
                    tch::set_num_threads(threads);
                });
                t.push(ms(t0));
            }
            tch::set_num_threads(1);
            let taps = model.features(&x);
            let t0 = Instant::now();
            let _ = model.cls_logits(&taps, false).sigmoid();
            t.push(ms(t0));
            for (i, f) in flows.iter().enumerate() {
                let t0 = Instant::now();
                let _ = f.log_prob_map(&taps[i]);
                t.push(ms(t0));
            }
            tch::set_num_threads(threads);
            if round >= 5 {
                for (row, v) in times.iter_mut().zip(t) {
                    row.push(v);
                }
            }
        }
    });
    let m: Vec<f64> = times.into_iter().map(median).collect();
    println!("heads at batch {batch}, ms per call (median of 35)");
    println!("  in turn, {threads} libtorch threads: {:.2}", m[0]);
    println!("  side by side, helper thread runs taps 0+2: {:.2}", m[1]);
    println!("  side by side, helper thread runs taps 0+1: {:.2}", m[2]);
    println!(
        "  one libtorch thread: decoder {:.2}, flows {:.2} / {:.2} / {:.2}; sum {:.2}",
        m[3],
        m[4],
        m[5],
        m[6],
        m[3..].iter().sum::<f64>()
    );
    Ok(())
}
