//! Stage 2's flows trained side by side (the largest on a helper thread, one libtorch thread
//! each) learn what they learn one after the other, and leave libtorch's thread count as it was.

use clsflow::ClsFlowModel;
use clsflow_train::config::TrainConfig;
use clsflow_train::stage2::{FlowJob, helper_job, train_round};
use indicatif::{MultiProgress, ProgressDrawTarget};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

/// The tests of this file draw from libtorch's one global generator; each holds this while it
/// does, so that a seed gives the same model and rows.
static GENERATOR: Mutex<()> = Mutex::new(());

mod common;

fn tiny() -> TrainConfig {
    TrainConfig::load(&common::repo().join("configs/test-tiny.toml")).unwrap()
}

/// Two rounds of the three flows of a fresh seeded model on seeded random rows; the losses and
/// every flow variable after them.
fn train_two_rounds(parallel: bool, noise: [f64; 3]) -> (Vec<f64>, Vec<Tensor>) {
    let cfg = tiny();
    tch::manual_seed(3);
    let model = ClsFlowModel::new(cfg.model_config(), Device::Cpu).unwrap();
    let mut jobs: Vec<FlowJob> = (0..3)
        .map(|tap| {
            let hw = model.condition_rows(tap).size()[0];
            let c = model.flows()[tap].channels();
            let rows = Tensor::randn([6 * hw, c], (Kind::Float, Device::Cpu));
            let mut s2 = cfg.stage2.clone();
            s2.parallel_flows = parallel;
            s2.feature_noise = noise;
            s2.vectors_per_epoch = Some(1024);
            FlowJob::new(&model, tap, rows, s2).unwrap()
        })
        .collect();
    let mut round: Vec<&mut FlowJob> = jobs.iter_mut().collect();
    let expected = parallel.then_some(0);
    assert_eq!(
        helper_job(&round),
        expected,
        "the stride-8 flow has most steps"
    );
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
    let stop = AtomicBool::new(false);
    let mut losses = Vec::new();
    for epoch in 0..2 {
        let threads = tch::get_num_threads();
        let rng = |tap: usize| ChaCha8Rng::seed_from_u64(10 * epoch as u64 + tap as u64);
        for result in train_round(&mut round, epoch, rng, &stop, &bars) {
            let (loss, seconds) = result.unwrap();
            losses.push(loss.expect("not stopped"));
            assert!(seconds > 0.0);
        }
        assert_eq!(tch::get_num_threads(), threads, "thread count restored");
    }
    let vars = (0..3)
        .flat_map(|tap| {
            let mut named = model
                .flow_vars(tap)
                .variables()
                .into_iter()
                .collect::<Vec<_>>();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, v)| v.detach().copy())
        })
        .collect();
    (losses, vars)
}

#[test]
fn flows_side_by_side_learn_what_they_learn_one_after_the_other() {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    // the helper thread is used from two libtorch threads on
    tch::set_num_threads(2);
    // noise on the stride-32 flow, as the default: it stays on this thread, so its draws keep
    // their order
    let (seq_losses, seq_vars) = train_two_rounds(false, [0.0, 0.0, 0.1]);
    let (par_losses, par_vars) = train_two_rounds(true, [0.0, 0.0, 0.1]);
    assert_eq!(seq_losses.len(), 6);
    for (a, b) in seq_losses.iter().zip(&par_losses) {
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "{a} vs {b}"
        );
    }
    assert_eq!(seq_vars.len(), par_vars.len());
    for (a, b) in seq_vars.iter().zip(&par_vars) {
        let d = (a - b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]).max(1e-3);
        assert!(d <= 1e-4 * scale, "a flow variable differs by {d:e}");
    }
}

#[test]
fn flows_that_draw_noise_stay_on_one_thread() {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(2);
    let cfg = tiny();
    tch::manual_seed(4);
    let model = ClsFlowModel::new(cfg.model_config(), Device::Cpu).unwrap();
    let job = |tap: usize, noise: [f64; 3], parallel: bool| {
        let hw = model.condition_rows(tap).size()[0];
        let c = model.flows()[tap].channels();
        let mut s2 = cfg.stage2.clone();
        s2.feature_noise = noise;
        s2.parallel_flows = parallel;
        // 8 images: 8, 2 and 1 steps of 256 vectors at the three taps
        let rows = Tensor::randn([8 * hw, c], (Kind::Float, Device::Cpu));
        FlowJob::new(&model, tap, rows, s2).unwrap()
    };
    // noise on the stride-8 flow: the flow with most steps among the others takes the helper
    let mut jobs: Vec<FlowJob> = (0..3).map(|t| job(t, [0.1, 0.0, 0.0], true)).collect();
    assert_eq!(helper_job(&jobs.iter_mut().collect::<Vec<_>>()), Some(1));
    // noise on every flow, a single flow, or the option off: one after the other
    let mut jobs: Vec<FlowJob> = (0..3).map(|t| job(t, [0.1; 3], true)).collect();
    assert_eq!(helper_job(&jobs.iter_mut().collect::<Vec<_>>()), None);
    let mut jobs: Vec<FlowJob> = vec![job(0, [0.0; 3], true)];
    assert_eq!(helper_job(&jobs.iter_mut().collect::<Vec<_>>()), None);
    let mut jobs: Vec<FlowJob> = (0..3).map(|t| job(t, [0.0; 3], false)).collect();
    assert_eq!(helper_job(&jobs.iter_mut().collect::<Vec<_>>()), None);
}
