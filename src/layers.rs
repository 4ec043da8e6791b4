//! Small layers shared by the networks: convolutions with explicit padding modes and BatchNorm
//! that always uses its running statistics.

use tch::Tensor;
use tch::nn::{Init, Path};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Zero padding of `p` pixels on every side (PyTorch default).
    Zeros(i64),
    /// Reflect padding of `p` pixels on every side (the method's 3x3 convolutions).
    Reflect(i64),
    /// TensorFlow "SAME": output size ceil(in / stride), extra pixel at the bottom/right.
    TfSame,
}

/// A 2-D convolution whose weight names follow PyTorch (`weight`, optional `bias`).
#[derive(Debug)]
pub struct Conv2d {
    /// Kernel, (out, in / groups, k, k).
    pub weight: Tensor,
    /// Optional bias, (out).
    pub bias: Option<Tensor>,
    stride: i64,
    padding: Padding,
    groups: i64,
}

/// Options of [`Conv2d::new`].
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    /// Stride in both directions.
    pub stride: i64,
    /// Padding mode.
    pub padding: Padding,
    /// Channel groups (equal to the channel count for depthwise convolutions).
    pub groups: i64,
    /// Whether the convolution has a bias.
    pub bias: bool,
}

impl Default for ConvOpts {
    fn default() -> Self {
        ConvOpts {
            stride: 1,
            padding: Padding::Zeros(0),
            groups: 1,
            bias: false,
        }
    }
}

impl Conv2d {
    /// Creates the convolution's variables under `p` with Kaiming-uniform initialisation.
    pub fn new(p: &Path, c_in: i64, c_out: i64, k: i64, opts: ConvOpts) -> Self {
        let fan_in = (c_in / opts.groups) * k * k;
        let weight = p.var(
            "weight",
            &[c_out, c_in / opts.groups, k, k],
            Init::Kaiming {
                dist: tch::nn::init::NormalOrUniform::Uniform,
                fan: tch::nn::init::FanInOut::FanIn,
                non_linearity: tch::nn::init::NonLinearity::ReLU,
            },
        );
        let bias = opts.bias.then(|| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            p.var(
                "bias",
                &[c_out],
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )
        });
        Conv2d {
            weight,
            bias,
            stride: opts.stride,
            padding: opts.padding,
            groups: opts.groups,
        }
    }

    /// Applies the convolution to a (N, C, H, W) tensor.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.weight.size()[2];
        let (x, pad) = match self.padding {
            Padding::Zeros(p) => (x.shallow_clone(), p),
            Padding::Reflect(0) => (x.shallow_clone(), 0),
            Padding::Reflect(p) => (x.reflection_pad2d([p, p, p, p]), 0),
            Padding::TfSame => {
                let size = x.size();
                let (ph, pw) = (
                    same_pad(size[2], k, self.stride),
                    same_pad(size[3], k, self.stride),
                );
                let padded = if ph == 0 && pw == 0 {
                    x.shallow_clone()
                } else {
                    x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])
                };
                (padded, 0)
            }
        };
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [pad, pad],
            [1, 1],
            self.groups,
        )
    }
}

/// Total TF "SAME" padding along one axis.
fn same_pad(size: i64, k: i64, stride: i64) -> i64 {
    let out = (size + stride - 1) / stride;
    ((out - 1) * stride + k - size).max(0)
}

/// BatchNorm that always normalises with its running statistics (eval mode), also while the
/// network is fine-tuned: the method keeps ImageNet statistics and trains only the affine part.
#[derive(Debug)]
pub struct FrozenBatchNorm {
    /// Scale (trainable).
    pub weight: Tensor,
    /// Shift (trainable).
    pub bias: Tensor,
    /// Running mean (not trained).
    pub running_mean: Tensor,
    /// Running variance (not trained).
    pub running_var: Tensor,
    eps: f64,
}

impl FrozenBatchNorm {
    /// Creates the BatchNorm variables under `p` (identity at initialisation).
    pub fn new(p: &Path, channels: i64, eps: f64) -> Self {
        FrozenBatchNorm {
            weight: p.var("weight", &[channels], Init::Const(1.0)),
            bias: p.var("bias", &[channels], Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            eps,
        }
    }

    /// Normalises a (N, C, H, W) tensor.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            false,
            0.0,
            self.eps,
            true,
        )
    }
}
