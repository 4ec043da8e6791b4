//! Diagnostic: where one stage-2 training step of each tap's flow goes (the default config,
//! random rows: the time does not depend on the values): the fiber-batch gather, the forward
//! log p, the backward pass and Adam's update, median of 40 steps, for the given fiber batches.
//! cargo run --release -p clsflow-train --example flow_step_times -- [FIBER_BATCH...]
use clsflow::ClsFlowModel;
use clsflow::flow::flow_loss;
use clsflow_train::config::TrainConfig;
use clsflow_train::stage2;
use clsflow_train::timing::median;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    clsflow::alloc::keep_tensor_memory();
    let batches: Vec<i64> = std::env::args()
        .skip(1)
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let batches = if batches.is_empty() {
        vec![256]
    } else {
        batches
    };
    let config = std::env::var("CONFIG").unwrap_or("configs/cpu-fast.toml".into());
    tch::manual_seed(0);
    let cfg = TrainConfig::load(Path::new(&config))?;
    let model = ClsFlowModel::new(cfg.model_config(), Device::Cpu)?;
    println!("{config}: one stage-2 step, ms (median of 40)\n");
    println!("| tap | fiber batch | gather | forward | backward | Adam | step | us/vector |");
    println!("|---|---|---|---|---|---|---|---|");
    for tap in 0..3 {
        let flow = &model.flows()[tap];
        let cond_rows = model.condition_rows(tap);
        let hw = cond_rows.size()[0];
        let rows = Tensor::randn([200 * hw, flow.channels()], (Kind::Float, Device::Cpu));
        for &fb in &batches {
            let mut opt = stage2::optimizer(&model, tap, &cfg.stage2)?;
            let mut t = vec![Vec::new(); 5];
            for i in 0..50 {
                let t0 = Instant::now();
                let idx = Tensor::randint(rows.size()[0], [fb], (Kind::Int64, Device::Cpu));
                let x = rows.index_select(0, &idx);
                let c = cond_rows.index_select(0, &idx.remainder(hw));
                let t1 = Instant::now();
                let loss = flow_loss(&flow.log_prob(&x, &c), flow.channels());
                let _ = loss.double_value(&[]);
                let t2 = Instant::now();
                opt.zero_grad();
                loss.backward();
                let t3 = Instant::now();
                opt.step();
                let t4 = Instant::now();
                if i >= 10 {
                    for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)]
                        .into_iter()
                        .enumerate()
                    {
                        t[k].push((b - a).as_secs_f64() * 1e3);
                    }
                }
            }
            let m: Vec<f64> = t.into_iter().map(median).collect();
            println!(
                "| {tap} | {fb} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[4] * 1e3 / fb as f64
            );
        }
    }
    Ok(())
}
