//! Benchmark: one round of stage 2 (an epoch of each flow, shortened to a fraction of its
//! vectors) with the flows one after the other on libtorch's threads against the default, the
//! largest flow on a helper thread beside the others, one libtorch thread each. The default
//! config, random feature rows for as many images as magnetic_tile's training split holds (the
//! time of a step does not depend on the values), the two layouts taken in turn.
//! cargo run --release -p clsflow-tools --bin stage2_threads -- [ROUNDS] [FRACTION]
use clsflow::ClsFlowModel;
use clsflow_train::config::TrainConfig;
use clsflow_train::stage2::{FlowJob, train_round};
use clsflow_train::timing::median;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const IMAGES: i64 = 686;

fn main() -> anyhow::Result<()> {
    clsflow::alloc::keep_tensor_memory();
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let fraction: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0.05);
    let config = std::env::var("CONFIG").unwrap_or("configs/cpu-fast.toml".into());
    tch::manual_seed(0);
    let cfg = TrainConfig::load(Path::new(&config))?;
    let model = ClsFlowModel::new(cfg.model_config(), Device::Cpu)?;
    let rows: Vec<Tensor> = (0..3)
        .map(|tap| {
            let hw = model.condition_rows(tap).size()[0];
            let c = model.flows()[tap].channels();
            Tensor::randn([IMAGES * hw, c], (Kind::Float, Device::Cpu))
        })
        .collect();
    println!(
        "{config}: one stage-2 round, {:.0} % of each flow's vectors, {} libtorch threads, s\n",
        fraction * 100.0,
        tch::get_num_threads()
    );
    let mut times = [Vec::new(), Vec::new()];
    let stop = AtomicBool::new(false);
    let bars = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden());
    for _ in 0..rounds {
        for (k, parallel) in [false, true].into_iter().enumerate() {
            let mut jobs = (0..3)
                .map(|tap| {
                    let mut s2 = cfg.stage2.clone();
                    s2.parallel_flows = parallel;
                    s2.vectors_per_epoch =
                        Some((rows[tap].size()[0] as f64 * fraction).round() as usize);
                    FlowJob::new(&model, tap, rows[tap].shallow_clone(), s2)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut round: Vec<&mut FlowJob> = jobs.iter_mut().collect();
            let t = Instant::now();
            let rng = |tap: usize| ChaCha8Rng::seed_from_u64(tap as u64);
            for r in train_round(&mut round, 1, rng, &stop, &bars) {
                r?;
            }
            times[k].push(t.elapsed().as_secs_f64());
        }
    }
    let (one, two) = (median(times[0].clone()), median(times[1].clone()));
    println!("| layout | median | rounds |");
    println!("|---|---|---|");
    println!("| one after the other | {one:.2} | {:.2?} |", times[0]);
    println!(
        "| largest flow on a helper thread | {two:.2} | {:.2?} |",
        times[1]
    );
    println!("\nratio (helper / one after the other): {:.2}x", two / one);
    Ok(())
}
