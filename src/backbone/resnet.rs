//! ResNet-18 and Wide-ResNet-50-2 with torchvision's parameter names, so a torchvision
//! `state_dict` saved as safetensors loads unchanged. As in the method, every 3x3 convolution
//! uses reflect padding (the 7x7 stem keeps zero padding).

use crate::layers::{Conv2d, ConvBn, ConvOpts, FrozenBatchNorm, Padding};
use tch::Tensor;
use tch::nn::Path;

const BN_EPS: f64 = 1e-5;

/// The two supported depths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    /// ResNet-18: basic blocks [2, 2, 2, 2].
    R18,
    /// Wide-ResNet-50-2: bottlenecks [3, 4, 6, 3] with doubled inner width.
    WideR50x2,
}

#[derive(Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h);
            if i != last {
                h = h.relu();
            }
        }
        let identity = match &self.downsample {
            Some(conv) => conv.forward(x),
            None => x.shallow_clone(),
        };
        (h + identity).relu()
    }

    fn set_folded(&mut self, folded: bool) {
        for conv in self.convs.iter_mut().chain(&mut self.downsample) {
            conv.set_folded(folded);
        }
    }
}

fn conv_bn(p: &Path, idx: usize, c_in: i64, c_out: i64, k: i64, stride: i64) -> ConvBn {
    let padding = if k == 3 {
        Padding::Reflect(1)
    } else {
        Padding::Zeros(0)
    };
    let opts = ConvOpts {
        stride,
        padding,
        ..ConvOpts::default()
    };
    ConvBn::new(
        Conv2d::new(&(p / format!("conv{idx}")), c_in, c_out, k, opts),
        FrozenBatchNorm::new(&(p / format!("bn{idx}")), c_out, BN_EPS),
    )
}

/// A torchvision ResNet used as a three-tap feature extractor (layer2, layer3, layer4).
#[derive(Debug)]
pub struct ResNet {
    stem: ConvBn,
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    /// Creates the network under `p`. `with_fc` also creates torchvision's `fc` layer so that a
    /// full torchvision state_dict matches key for key.
    pub fn new(p: &Path, depth: ResNetDepth, with_fc: bool) -> Self {
        let (repeats, bottleneck): ([usize; 4], bool) = match depth {
            ResNetDepth::R18 => ([2, 2, 2, 2], false),
            ResNetDepth::WideR50x2 => ([3, 4, 6, 3], true),
        };
        let stem_opts = ConvOpts {
            stride: 2,
            padding: Padding::Zeros(3),
            ..ConvOpts::default()
        };
        let stem = ConvBn::new(
            Conv2d::new(&(p / "conv1"), 3, 64, 7, stem_opts),
            FrozenBatchNorm::new(&(p / "bn1"), 64, BN_EPS),
        );
        let mut c_in = 64;
        let mut layers = Vec::new();
        for (li, &n) in repeats.iter().enumerate() {
            let planes = 64 << li;
            let mut blocks = Vec::new();
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let bp = p / format!("layer{}", li + 1) / bi;
                let (convs, c_out) = if bottleneck {
                    let width = planes * 2; // wide: base width 128
                    (
                        vec![
                            conv_bn(&bp, 1, c_in, width, 1, 1),
                            conv_bn(&bp, 2, width, width, 3, stride),
                            conv_bn(&bp, 3, width, planes * 4, 1, 1),
                        ],
                        planes * 4,
                    )
                } else {
                    (
                        vec![
                            conv_bn(&bp, 1, c_in, planes, 3, stride),
                            conv_bn(&bp, 2, planes, planes, 3, 1),
                        ],
                        planes,
                    )
                };
                let downsample = (stride != 1 || c_in != c_out).then(|| {
                    let dp = &bp / "downsample";
                    let opts = ConvOpts {
                        stride,
                        ..ConvOpts::default()
                    };
                    ConvBn::new(
                        Conv2d::new(&(&dp / "0"), c_in, c_out, 1, opts),
                        FrozenBatchNorm::new(&(&dp / "1"), c_out, BN_EPS),
                    )
                });
                blocks.push(Block { convs, downsample });
                c_in = c_out;
            }
            layers.push(blocks);
        }
        if with_fc {
            let fc = p / "fc";
            let _ = fc.var("weight", &[1000, c_in], tch::nn::Init::Const(0.0));
            let _ = fc.var("bias", &[1000], tch::nn::Init::Const(0.0));
        }
        ResNet { stem, layers }
    }

    /// Folds every BatchNorm into its convolution, or unfolds them (see [`ConvBn::set_folded`]).
    pub fn set_batch_norms_folded(&mut self, folded: bool) {
        self.stem.set_folded(folded);
        for block in self.layers.iter_mut().flatten() {
            block.set_folded(folded);
        }
    }

    /// Outputs of layer2, layer3 and layer4 (strides 8, 16, 32).
    pub fn forward_taps(&self, x: &Tensor) -> [Tensor; 3] {
        let mut h = self.stem.forward(x).relu();
        h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut taps = Vec::with_capacity(3);
        for (li, layer) in self.layers.iter().enumerate() {
            for block in layer {
                h = block.forward(&h);
            }
            if li >= 1 {
                taps.push(h.shallow_clone());
            }
        }
        let [a, b, c]: [Tensor; 3] = taps.try_into().expect("three taps");
        [a, b, c]
    }
}
