//! Stage 1: the pixelwise classifier learns to segment synthetic defects. The extractor is
//! frozen for the first epochs (decoder only), then fine-tuned jointly; BatchNorm statistics of
//! the extractor never change. Loss: per-pixel binary cross-entropy with soft labels.

use crate::config::Stage1Config;
use crate::epoch_loss::EpochLoss;
use crate::schedule::cosine;
use crate::synth::{DefectSynthesizer, Sample};
use clsflow::preprocess::images_to_batch;
use clsflow::{ClsFlowModel, Normalization};
use image::{GrayImage, RgbImage};
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::nn::{Optimizer, OptimizerConfig};
use tch::{Kind, Reduction, Tensor};

/// What stage 1 trains on.
pub struct Stage1Data<'a> {
    /// Good training images at the model's input size.
    pub images: &'a [RgbImage],
    /// Their foreground masks (`None`: defects anywhere).
    pub foregrounds: &'a [Option<GrayImage>],
    /// The defect synthesiser.
    pub synth: &'a DefectSynthesizer,
    /// Input normalisation of the backbone.
    pub norm: Normalization,
}

/// The Adam optimiser of stage 1 over extractor and decoder.
pub fn optimizer(model: &ClsFlowModel, cfg: &Stage1Config) -> anyhow::Result<Optimizer> {
    Ok(tch::nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(model.cls_vars(), cfg.lr)?)
}

/// Steps per epoch.
pub fn steps_per_epoch(cfg: &Stage1Config, images: usize) -> usize {
    (images * cfg.repeat).div_ceil(cfg.batch_size)
}

/// Turns samples into the input batch and the soft target map (N, 1, S, S).
pub fn batch_tensors(samples: &[Sample], norm: &Normalization) -> anyhow::Result<(Tensor, Tensor)> {
    let x = images_to_batch(samples.iter().map(|s| &s.image), norm)?;
    let targets: Vec<Tensor> = samples
        .iter()
        .map(|s| {
            let (w, h) = s.mask.dimensions();
            let m = Tensor::from_slice(s.mask.as_raw())
                .reshape([1, h as i64, w as i64])
                .to_kind(Kind::Float)
                / 255.0;
            m * f64::from(s.label)
        })
        .collect();
    Ok((x, Tensor::stack(&targets, 0)))
}

/// One epoch. `epoch` counts from 0 over all stage-1 epochs (frozen first). Returns the mean
/// loss, or `None` when `stop` was raised (the epoch is then incomplete).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    model: &ClsFlowModel,
    opt: &mut Optimizer,
    cfg: &Stage1Config,
    data: &Stage1Data,
    epoch: usize,
    rng: &mut ChaCha8Rng,
    stop: &AtomicBool,
    pb: &ProgressBar,
) -> anyhow::Result<Option<f64>> {
    let frozen = epoch < cfg.frozen_epochs;
    if !frozen && model.extractor_folded() {
        anyhow::bail!(
            "stage 1 epoch {}: the extractor's BatchNorms are folded (detached), so this joint \
             epoch could not train it; unfold them first",
            epoch + 1
        );
    }
    model.set_backbone_trainable(!frozen);
    let n = data.images.len();
    let mut order: Vec<usize> = (0..n * cfg.repeat).map(|i| i % n).collect();
    order.shuffle(rng);
    let steps = steps_per_epoch(cfg, n);
    let total = steps * (cfg.frozen_epochs + cfg.joint_epochs);
    let mut losses = EpochLoss::new("stage 1", "");
    for (i, chunk) in order.chunks(cfg.batch_size).enumerate() {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        opt.set_lr(cosine(epoch * steps + i, total, cfg.lr, 1e-3));
        let samples: Vec<Sample> = chunk
            .iter()
            .map(|&k| {
                data.synth.sample(
                    &data.images[k],
                    data.images,
                    data.foregrounds[k].as_ref(),
                    false,
                    rng,
                )
            })
            .collect();
        let (x, target) = batch_tensors(&samples, &data.norm)?;
        let (x, target) = (
            x.to_device(model.device()),
            target.to_device(model.device()),
        );
        let taps = if frozen {
            tch::no_grad(|| model.features(&x))
        } else {
            model.features(&x)
        };
        let logits = model.cls_logits(&taps, true);
        let loss =
            logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean);
        opt.backward_step(&loss);
        losses.add(loss.double_value(&[]), epoch, i, pb)?;
    }
    model.set_backbone_trainable(false);
    Ok(Some(losses.mean()))
}
