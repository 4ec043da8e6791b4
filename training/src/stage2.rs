//! Stage 2: one conditional flow per tap learns the density of the (now frozen, fine-tuned)
//! extractor's features of good images. Features are extracted once; each step draws a fiber
//! batch of feature vectors with their positional conditions.

use crate::config::Stage2Config;
use crate::epoch_loss::EpochLoss;
use crate::schedule::warmup_cosine;
use clsflow::flow::{ConditionalFlow, flow_loss};
use clsflow::preprocess::images_to_batch;
use clsflow::{ClsFlowModel, Normalization};
use image::RgbImage;
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::nn::{Optimizer, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Normalised input batches of images, `batch` at a time.
pub fn image_batches<'a>(
    images: &'a [RgbImage],
    batch: usize,
    norm: &'a Normalization,
) -> impl Iterator<Item = Tensor> + 'a {
    images
        .chunks(batch)
        .map(move |chunk| images_to_batch(chunk, norm).expect("non-empty RGB batch"))
}

/// What the flows model of every image: its taps (N, C, h, w), on the CPU.
pub fn extract_features(
    model: &ClsFlowModel,
    images: &[RgbImage],
    norm: &Normalization,
    pb: &ProgressBar,
) -> [Tensor; 3] {
    let mut parts: [Vec<Tensor>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    tch::no_grad(|| {
        for x in image_batches(images, 16, norm) {
            let n = x.size()[0] as u64;
            let taps = model.features(&x.to_device(model.device()));
            for (p, t) in parts.iter_mut().zip(taps) {
                p.push(t.to_device(tch::Device::Cpu));
            }
            pb.inc(n);
        }
    });
    parts.map(|p| Tensor::cat(&p, 0))
}

/// Feature maps (N, C, h, w) as rows (N * h * w, C), position-major within each image.
pub fn to_rows(features: &Tensor) -> Tensor {
    let (n, c, h, w) = features.size4().expect("feature map");
    features
        .permute([0, 2, 3, 1])
        .reshape([n * h * w, c])
        .contiguous()
}

/// Adam for the flow of one tap.
pub fn optimizer(
    model: &ClsFlowModel,
    tap: usize,
    cfg: &Stage2Config,
) -> anyhow::Result<Optimizer> {
    Ok(tch::nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(model.flow_vars(tap), cfg.lr)?)
}

/// Steps per epoch for `rows` vectors.
pub fn steps_per_epoch(cfg: &Stage2Config, rows: usize) -> usize {
    cfg.vectors_per_epoch
        .unwrap_or(rows)
        .min(rows)
        .div_ceil(cfg.fiber_batch)
}

/// The training vectors of one flow, (N * HW, C), with the per-channel scale of its
/// regularising noise (`feature_noise` x each channel's std; none when that is 0), computed once
/// for all epochs.
pub struct FlowRows {
    /// The vectors, on the CPU.
    pub rows: Tensor,
    noise_std: Option<Tensor>,
}

impl FlowRows {
    /// Wraps the vectors of `tap` for training on `device`.
    pub fn new(rows: Tensor, cfg: &Stage2Config, tap: usize, device: tch::Device) -> Self {
        let noise = cfg.feature_noise[tap];
        let noise_std = (noise > 0.0)
            .then(|| tch::no_grad(|| rows.std_dim(0, true, true).to_device(device) * noise));
        FlowRows { rows, noise_std }
    }
}

/// Everything one flow's training needs, owned, so that a job can move to a helper thread
/// (tensors are `Send` but not `Sync`). The flow is a second handle on the model's variables
/// ([`ConditionalFlow::shallow_clone`]): what the job trains, the model holds.
pub struct FlowJob {
    /// The tap whose flow this is.
    pub tap: usize,
    flow: ConditionalFlow,
    /// The tap's condition rows (HW, P), on the CPU.
    cond_rows: Tensor,
    data: FlowRows,
    opt: Optimizer,
    cfg: Stage2Config,
    device: Device,
}

impl FlowJob {
    /// A job training the flow of `tap` on `rows` (N * HW, C) with Adam from [`optimizer`].
    pub fn new(
        model: &ClsFlowModel,
        tap: usize,
        rows: Tensor,
        cfg: Stage2Config,
    ) -> anyhow::Result<Self> {
        Ok(FlowJob {
            tap,
            flow: model.flows()[tap].shallow_clone(),
            cond_rows: model.condition_rows(tap).to_device(Device::Cpu),
            data: FlowRows::new(rows, &cfg, tap, model.device()),
            opt: optimizer(model, tap, &cfg)?,
            cfg,
            device: model.device(),
        })
    }

    /// Steps of one epoch.
    pub fn steps_per_epoch(&self) -> usize {
        steps_per_epoch(&self.cfg, self.data.rows.size()[0] as usize)
    }

    /// Whether its steps draw from libtorch's (global) random generator.
    fn draws_noise(&self) -> bool {
        self.data.noise_std.is_some()
    }

    /// One epoch, positions cycling over the tap's condition rows. Returns the mean loss, or
    /// `None` when stopped.
    pub fn train_epoch(
        &mut self,
        epoch: usize,
        rng: &mut ChaCha8Rng,
        stop: &AtomicBool,
        pb: &ProgressBar,
    ) -> anyhow::Result<Option<f64>> {
        let (tap, cfg) = (self.tap, &self.cfg);
        let hw = self.cond_rows.size()[0];
        let rows = &self.data.rows;
        let n = rows.size()[0] as usize;
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(rng);
        let steps = steps_per_epoch(cfg, n);
        order.truncate(steps * cfg.fiber_batch);
        let total = steps * cfg.epochs;
        let warmup = steps * cfg.warmup_epochs;
        let mut losses = EpochLoss::new(format!("flow {tap}"), format!("flow {tap} "));
        for (i, chunk) in order.chunks(cfg.fiber_batch).enumerate() {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            self.opt
                .set_lr(warmup_cosine(epoch * steps + i, warmup, total, cfg.lr));
            let idx = Tensor::from_slice(chunk);
            let mut x = rows.index_select(0, &idx).to_device(self.device);
            if let Some(std) = &self.data.noise_std {
                x = &x + x.randn_like() * std;
            }
            let c = self
                .cond_rows
                .index_select(0, &idx.remainder(hw))
                .to_device(self.device);
            let loss = flow_loss(&self.flow.log_prob(&x, &c), self.flow.channels());
            self.opt.backward_step(&loss);
            losses.add(loss.double_value(&[]), epoch, i, pb)?;
        }
        Ok(Some(losses.mean()))
    }
}

/// What one job's epoch gave: its mean loss (`None` when stopped) and its own seconds.
pub type EpochResult = anyhow::Result<(Option<f64>, f64)>;

/// Which job, if any, trains on a helper thread ([`train_round`]): with `parallel_flows` on a
/// CPU with two or more libtorch threads, the one with the most steps among those that draw no noise from
/// libtorch's one global generator (so that the draws keep their order whatever the threads
/// do, and a seed gives the same model), the first of equals. `None` when fewer than two jobs
/// are left.
pub fn helper_job(jobs: &[&mut FlowJob]) -> Option<usize> {
    let first = jobs.first()?;
    let cpu = first.device == Device::Cpu;
    if jobs.len() < 2 || !cpu || !first.cfg.parallel_flows || tch::get_num_threads() < 2 {
        return None;
    }
    (0..jobs.len())
        .filter(|&j| !jobs[j].draws_noise())
        .max_by_key(|&j| (jobs[j].steps_per_epoch(), std::cmp::Reverse(j)))
}

/// One epoch of each job, `epoch` of its schedule, with `rng(tap)` its shuffling generator.
///
/// On two or more CPU cores a flow's step is too small for libtorch's intra-op threads to
/// share well (BENCHMARKS.md, "Stage 2 on two threads"): the stride-8 flow's step is no
/// faster on two threads than on one. So the [`helper_job`] runs on a helper thread and the
/// others one after the other on this one, each thread with one libtorch thread, and the
/// previous thread count is restored afterwards. Each flow's arithmetic is then that of one
/// thread, whatever the other does. Results come in the jobs' order.
pub fn train_round(
    jobs: &mut [&mut FlowJob],
    epoch: usize,
    rng: impl Fn(usize) -> ChaCha8Rng,
    stop: &AtomicBool,
    bars: &indicatif::MultiProgress,
) -> Vec<EpochResult> {
    let bar = |job: &FlowJob| {
        bars.add(crate::data::progress(
            job.steps_per_epoch() as u64,
            &format!("flow{} {}/{}", job.tap, epoch + 1, job.cfg.epochs),
        ))
    };
    let run = |job: &mut FlowJob, mut rng: ChaCha8Rng, pb: ProgressBar| {
        let t = std::time::Instant::now();
        let loss = job.train_epoch(epoch, &mut rng, stop, &pb);
        pb.finish_and_clear();
        loss.map(|l| (l, t.elapsed().as_secs_f64()))
    };
    let here = |job: &mut &mut FlowJob| {
        let (r, pb) = (rng(job.tap), bar(job));
        run(job, r, pb)
    };
    let Some(h) = helper_job(jobs) else {
        return jobs.iter_mut().map(here).collect();
    };
    let threads = tch::get_num_threads();
    let (before, rest) = jobs.split_at_mut(h);
    let (helper, after) = rest.split_first_mut().expect("helper job");
    let (helper_rng, helper_pb) = (rng(helper.tap), bar(helper));
    let (mut out, theirs) = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            // a thread takes libtorch's process-wide count at its first call: take it, then
            // narrow this thread's own (OpenMP and MKL counts are per thread)
            let _ = tch::get_num_threads();
            tch::set_num_threads(1);
            run(helper, helper_rng, helper_pb)
        });
        tch::set_num_threads(1);
        let mine: Vec<EpochResult> = before
            .iter_mut()
            .chain(after.iter_mut())
            .map(here)
            .collect();
        let theirs = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the stage-2 helper thread panicked")));
        (mine, theirs)
    });
    tch::set_num_threads(threads);
    out.insert(h, theirs);
    out
}

/// Per tap, the log p / C maps (N, h, w, on the CPU) of the given features (N, C, h, w): the
/// flow maps' references come from these (docs/method.md section 4, taken on training data, not
/// test data; [`clsflow::TapReferences`]).
pub fn tap_log_prob_maps(model: &ClsFlowModel, features: &[Tensor; 3]) -> [Tensor; 3] {
    tch::no_grad(|| {
        std::array::from_fn(|tap| {
            let f = &features[tap];
            let cond = model.condition_rows(tap);
            let n = f.size()[0];
            let parts: Vec<Tensor> = (0..n)
                .step_by(32)
                .map(|start| {
                    let part = f
                        .narrow(0, start, (n - start).min(32))
                        .to_device(model.device());
                    model.flows()[tap]
                        .log_prob_map(&part, cond)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu)
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    })
}
