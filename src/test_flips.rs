//! Test-time flips: both heads run on mirrored copies of a batch as well, and their outputs,
//! mirrored back, are averaged, which evens out the flows' and the classifier's noise at the cost
//! of one forward pass per copy (docs/experiments.md).

use crate::model::ClsFlowModel;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which mirrored copies of each image the heads also see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestFlips {
    /// The image alone (one pass per frame).
    #[default]
    None,
    /// The image and its left-right mirror (two passes).
    Horizontal,
    /// The image and its three mirrors: left-right, up-down and both (four passes).
    Both,
}

impl TestFlips {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            TestFlips::None => "none",
            TestFlips::Horizontal => "horizontal",
            TestFlips::Both => "both",
        }
    }

    /// Per copy, the axes it is mirrored along, counted from the last (0: width, 1: height);
    /// the first copy is the image itself.
    fn views(self) -> &'static [&'static [i64]] {
        match self {
            TestFlips::None => &[&[]],
            TestFlips::Horizontal => &[&[], &[0]],
            TestFlips::Both => &[&[], &[0], &[1], &[0, 1]],
        }
    }

    /// Forward passes per frame.
    pub fn passes(self) -> usize {
        self.views().len()
    }
}

/// `t` mirrored along `axes` counted from its last dimension (a mirror is its own inverse).
fn mirror(t: &Tensor, axes: &[i64]) -> Tensor {
    if axes.is_empty() {
        return t.shallow_clone();
    }
    let dims: Vec<i64> = axes.iter().map(|a| -1 - a).collect();
    t.flip(dims)
}

/// What both heads give for a normalised batch (N, 3, H, W), averaged over the copies of
/// `flips`: the classifier's defect probability (N, 1, H, W) in float32 and per tap log p / C
/// (N, h, w). All copies run as one batch.
pub fn head_maps(model: &ClsFlowModel, batch: &Tensor, flips: TestFlips) -> (Tensor, [Tensor; 3]) {
    let views = flips.views();
    let x = if views.len() == 1 {
        batch.shallow_clone()
    } else {
        let copies: Vec<Tensor> = views.iter().map(|axes| mirror(batch, axes)).collect();
        Tensor::cat(&copies, 0)
    };
    let taps = model.features(&x);
    let cls = model.cls_logits(&taps, false).to_kind(Kind::Float).sigmoid();
    let log_prob = model.flow_log_prob_maps(&taps);
    if views.len() == 1 {
        return (cls, log_prob);
    }
    let n = batch.size()[0];
    let average = |t: &Tensor| {
        let parts: Vec<Tensor> = views
            .iter()
            .enumerate()
            .map(|(i, axes)| mirror(&t.narrow(0, i as i64 * n, n), axes))
            .collect();
        Tensor::stack(&parts, 0).mean_dim([0i64].as_slice(), false, None)
    };
    (average(&cls), log_prob.each_ref().map(average))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_mirror_maps_back_onto_the_image() {
        let t = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([1, 2, 3, 4]);
        for axes in TestFlips::Both.views() {
            let back = mirror(&mirror(&t, axes), axes);
            assert!(back.equal(&t), "{axes:?}");
        }
        // left-right: the first column becomes the last
        let h = mirror(&t, &[0]);
        assert_eq!(h.double_value(&[0, 0, 0, 3]), t.double_value(&[0, 0, 0, 0]));
        let v = mirror(&t, &[1]);
        assert_eq!(v.double_value(&[0, 1, 2, 0]), t.double_value(&[0, 1, 0, 0]));
    }

    #[test]
    fn passes_per_frame() {
        assert_eq!(TestFlips::None.passes(), 1);
        assert_eq!(TestFlips::Horizontal.passes(), 2);
        assert_eq!(TestFlips::Both.passes(), 4);
    }
}
