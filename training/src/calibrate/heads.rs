//! What the two heads give for a set of images, and the branch maps made from it on the host.

use crate::stage2::image_batches;
use clsflow::scoring::{Scoring, flow_map, image_score};
use clsflow::{ClsFlowModel, Normalization};
use image::RgbImage;
use tch::{Device, Kind, Tensor};

/// What the two heads give for a set of images, before the taps are combined: per tap log p / C
/// maps (N, h, w) and classifier probability maps (N, 1, S, S), on the CPU.
pub struct HeadOutputs {
    /// Per tap log p / C.
    pub log_prob: [Tensor; 3],
    /// Classifier map (sigmoid of the logits).
    pub cls: Tensor,
}

fn to_rows(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float);
    (0..t.size()[0])
        .map(|i| Vec::<f32>::try_from(t.get(i).flatten(0, -1)).expect("map"))
        .collect()
}

/// Runs the extractor and both heads on images (batches of 16).
pub fn head_outputs(
    model: &ClsFlowModel,
    images: &[RgbImage],
    norm: &Normalization,
) -> HeadOutputs {
    let (mut logp, mut cls): ([Vec<Tensor>; 3], Vec<Tensor>) = Default::default();
    tch::no_grad(|| {
        for x in image_batches(images, 16, norm) {
            let taps = model.features(&x.to_device(model.device()));
            cls.push(
                model
                    .cls_logits(&taps, false)
                    .to_kind(Kind::Float)
                    .sigmoid()
                    .to_device(Device::Cpu),
            );
            for (p, t) in logp.iter_mut().zip(model.flow_log_prob_maps(&taps)) {
                p.push(t.to_kind(Kind::Float).to_device(Device::Cpu));
            }
        }
    });
    HeadOutputs {
        log_prob: logp.map(|p| Tensor::cat(&p, 0)),
        cls: Tensor::cat(&cls, 0),
    }
}

impl HeadOutputs {
    /// Both branch maps under a scoring's reference (its weights are not used).
    pub fn maps(&self, scoring: &Scoring, size: i64) -> MapRows {
        let flow = tch::no_grad(|| flow_map(&self.log_prob, scoring, size));
        MapRows {
            flow: to_rows(&flow),
            cls: to_rows(&self.cls),
        }
    }
}

/// The flow and classifier maps of a set of images on the host, one row-major map per image:
/// what the validation metrics read (the host form of `clsflow::scoring::BranchMaps`).
pub struct MapRows {
    /// Flow maps.
    pub flow: Vec<Vec<f32>>,
    /// Classifier maps.
    pub cls: Vec<Vec<f32>>,
}

/// Flow + w x classifier, map by map.
pub fn fused(maps: &MapRows, w: f64) -> Vec<Vec<f32>> {
    maps.flow
        .iter()
        .zip(&maps.cls)
        .map(|(f, c)| f.iter().zip(c).map(|(a, b)| a + w as f32 * b).collect())
        .collect()
}

/// Image scores of fused maps under weight `w`: the mean of each map's top fraction `q`.
pub(super) fn image_scores_of(maps: &MapRows, w: f64, q: f64) -> Vec<f32> {
    fused(maps, w).iter().map(|m| image_score(m, q)).collect()
}
