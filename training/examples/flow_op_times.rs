//! Diagnostic: where one coupling block's inference time goes, op by op, for each tap of the
//! default config (untrained weights: the time does not depend on them). The steps mirror
//! `FoldedBlock::forward` one libtorch call at a time, each timed on its own (median of 30), with
//! the subnet's matmuls in float32 and then in bfloat16 as `half` runs them on the CPU. The
//! rotation is timed both ways: `half` runs it in bfloat16 where it gains (`LOW_ROTATION_MACS`);
//! "block total" counts the float32 one. The last two rows time the scale step as it is
//! and as it was, on the strided half of `a` (BENCHMARKS.md, "What remains").
//! cargo run --release -p clsflow-train --example flow_op_times -- [BATCH]
use clsflow::ClsFlowModel;
use clsflow::flow::CouplingBlock;
use clsflow_train::config::TrainConfig;
use clsflow_train::timing::median;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const STEPS: [&str; 15] = [
    "x1 to the matmul precision",
    "hidden = x1 W1x (matmul)",
    "hidden += condition term",
    "ReLU",
    "a = hidden W2 (matmul)",
    "a to float32",
    "a += b2",
    "s = clamp tanh(a_s), a_s copied to contiguous rows",
    "exp(s)",
    "x2 = exp(s) x2 + a_t",
    "rotation: 2 addmm (float32)",
    "log-det: sum of s",
    "rotation in bfloat16, with its conversions",
    "steps 7-10 and 12 on the strided half a_s (before)",
    "steps 7-10 and 12 with a_s copied to contiguous rows (now)",
];

fn main() -> anyhow::Result<()> {
    clsflow::alloc::keep_tensor_memory();
    let batch: i64 = std::env::args().nth(1).map_or(Ok(8), |b| b.parse())?;
    tch::manual_seed(0);
    let cfg = TrainConfig::load(Path::new("configs/cpu-fast.toml"))?;
    let model = ClsFlowModel::new(cfg.model_config(), Device::Cpu)?;
    let flow_cfg = &cfg.model_config().flow;
    let cpu = (Kind::Float, Device::Cpu);
    println!("one coupling block, batch {batch}, ms (median of 30)\n");
    for kind in [Kind::Float, Kind::BFloat16] {
        println!("| step ({kind:?} subnet) | stride 8 | stride 16 | stride 32 |");
        println!("|---|---|---|---|");
        let mut table = vec![vec![0.0; 3]; STEPS.len() + 1];
        for tap in 0..3 {
            let c = model.flows()[tap].channels();
            let cond = model.condition_rows(tap);
            let hw = cond.size()[0];
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let block =
                CouplingBlock::new(&vs.root(), c, flow_cfg.condition_channels, flow_cfg.clamp);
            let (split, n2) = ((c + 1) / 2, c / 2);
            // the folded tensors, as CouplingBlock::fold makes them
            let cond_term = block.condition_term(cond).to_kind(kind);
            let w1x = block.w1.narrow(1, 0, split).tr().contiguous().to_kind(kind);
            let w2 = (&block.w2 * 0.1).tr().contiguous().to_kind(kind);
            let b2 = &block.b2 * 0.1;
            let w_out = block.w_perm.tr().contiguous();
            let (w_out1, w_out2) = (w_out.narrow(0, 0, split), w_out.narrow(0, split, n2));
            let b_out = Tensor::zeros([c], cpu);
            let bf = |t: &Tensor| t.to_kind(Kind::BFloat16);
            let x = Tensor::randn([batch * hw, c], cpu);
            let mut times = vec![Vec::new(); STEPS.len() + 1];
            tch::no_grad(|| {
                for _ in 0..30 {
                    let all = Instant::now();
                    let mut t0 = Instant::now();
                    let mut lap = |i: usize| {
                        times[i].push(t0.elapsed().as_secs_f64() * 1e3);
                        t0 = Instant::now();
                    };
                    let (x1, x2_in) = (x.narrow(-1, 0, split), x.narrow(-1, split, n2));
                    let x1k = x1.to_kind(kind).reshape([batch, hw, split]);
                    lap(0);
                    let mut hidden = x1k.matmul(&w1x);
                    lap(1);
                    let _ = hidden.g_add_(&cond_term);
                    lap(2);
                    let _ = hidden.relu_();
                    lap(3);
                    let a = hidden.reshape([batch * hw, -1]).mm(&w2);
                    lap(4);
                    let mut a = a.to_kind(Kind::Float);
                    lap(5);
                    let _ = a.g_add_(&b2);
                    lap(6);
                    let mut s = a.narrow(-1, 0, n2).contiguous();
                    let _ = s.tanh_().g_mul_scalar_(flow_cfg.clamp);
                    lap(7);
                    let mut x2 = s.exp();
                    lap(8);
                    let _ = x2.g_mul_(&x2_in).g_add_(&a.narrow(-1, n2, n2));
                    lap(9);
                    let mut y = b_out.addmm(&x1, &w_out1);
                    let _ = y.addmm_(&x2, &w_out2);
                    lap(10);
                    let _log_det = s.sum_dim_intlist(-1, false, Kind::Float);
                    lap(11);
                    let total = all.elapsed().as_secs_f64() * 1e3;
                    let mut y = bf(&b_out).addmm(&bf(&x1), &bf(&w_out1));
                    let _ = y.addmm_(&bf(&x2), &bf(&w_out2)).to_kind(Kind::Float);
                    lap(12);
                    let a0 = a.shallow_clone();
                    let step = |contiguous: bool| {
                        let mut a = a0.copy();
                        let t0 = Instant::now();
                        let _ = a.g_add_(&b2);
                        let mut s = a.narrow(-1, 0, n2);
                        if contiguous {
                            s = s.contiguous();
                        }
                        let _ = s.tanh_().g_mul_scalar_(flow_cfg.clamp);
                        let mut x2 = s.exp();
                        let _ = x2.g_mul_(&x2_in).g_add_(&a.narrow(-1, n2, n2));
                        let _log_det = s.sum_dim_intlist(-1, false, Kind::Float);
                        t0.elapsed().as_secs_f64() * 1e3
                    };
                    times[13].push(step(false));
                    times[14].push(step(true));
                    times[15].push(total);
                }
            });
            for (row, t) in table.iter_mut().zip(times) {
                row[tap] = median(t);
            }
        }
        for (name, row) in STEPS
            .iter()
            .chain(&["**block total** (float32 rotation)"])
            .zip(&table)
        {
            println!("| {name} | {:.3} | {:.3} | {:.3} |", row[0], row[1], row[2]);
        }
        println!();
    }
    Ok(())
}
