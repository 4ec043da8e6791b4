//! Small layers shared by the networks: convolutions with explicit padding modes, BatchNorm
//! that always uses its running statistics, and the pair of both that folds into one
//! convolution for inference.

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
    /// This convolution followed by an eval-mode BatchNorm (per-channel `weight`, `bias`,
    /// running `mean` and `var`, `eps`) as one convolution: the normalisation is a per-channel
    /// affine map, so it folds into the kernel and bias. The result is detached (inference only).
    pub fn folded_with_norm(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        eps: f64,
    ) -> Conv2d {
        tch::no_grad(|| {
            let scale = weight * (var + eps).rsqrt();
            let kernel = &self.weight * scale.reshape([-1, 1, 1, 1]);
            let shift = bias - mean * &scale;
            let bias = match &self.bias {
                Some(b) => shift + b * &scale,
                None => shift,
            };
            Conv2d {
                weight: kernel.detach(),
                bias: Some(bias.detach()),
                stride: self.stride,
                padding: self.padding,
                groups: self.groups,
            }
        })
    }

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
                if ph == pw && ph % 2 == 0 {
                    // symmetric: the convolution pads by itself, without a padded copy
                    (x.shallow_clone(), ph / 2)
                } else {
                    let padded = x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
                    (padded, 0)
                }
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

/// A convolution followed by a [`FrozenBatchNorm`]. Training uses both; for inference
/// [`ConvBn::fold`] merges the normalisation into the convolution's weight and bias (BatchNorm
/// in eval mode is a per-channel affine map), which saves one pass over every activation. The
/// variables themselves stay as they are, so checkpoints are unaffected.
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: FrozenBatchNorm,
    folded: Option<Conv2d>,
}

impl ConvBn {
    /// Pairs a convolution with its BatchNorm.
    pub fn new(conv: Conv2d, bn: FrozenBatchNorm) -> Self {
        ConvBn {
            conv,
            bn,
            folded: None,
        }
    }

    /// Folds (`true`: [`Self::fold`]) or goes back to convolution then normalisation (`false`),
    /// which training through this pair needs: the folded form is detached.
    pub fn set_folded(&mut self, folded: bool) {
        if folded {
            self.fold();
        } else {
            self.folded = None;
        }
    }

    /// Computes the folded convolution from the current weights. Call again after the weights
    /// change (training, precision conversion); until then the folded form is used.
    pub fn fold(&mut self) {
        let bn = &self.bn;
        self.folded = Some(self.conv.folded_with_norm(
            &bn.weight,
            &bn.bias,
            &bn.running_mean,
            &bn.running_var,
            bn.eps,
        ));
    }

    /// Convolution then normalisation of a (N, C, H, W) tensor.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.folded {
            Some(conv) => conv.forward(x),
            None => self.bn.forward(&self.conv.forward(x)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    #[test]
    fn folded_conv_bn_equals_conv_then_bn() {
        tch::manual_seed(4);
        let vs = VarStore::new(Device::Cpu);
        for (i, (groups, bias, padding, stride)) in [
            (1, false, Padding::TfSame, 2),
            (6, false, Padding::TfSame, 1),
            (1, true, Padding::Reflect(1), 1),
        ]
        .into_iter()
        .enumerate()
        {
            let p = vs.root() / i;
            let opts = ConvOpts {
                stride,
                padding,
                groups,
                bias,
            };
            let mut layer = ConvBn::new(
                Conv2d::new(&(&p / "conv"), 6, 12, 3, opts),
                FrozenBatchNorm::new(&(&p / "bn"), 12, 1e-3),
            );
            tch::no_grad(|| {
                let bn = &layer.bn;
                let f = (Kind::Float, Device::Cpu);
                bn.weight.shallow_clone().copy_(&Tensor::rand([12], f));
                bn.bias.shallow_clone().copy_(&Tensor::randn([12], f));
                bn.running_mean
                    .shallow_clone()
                    .copy_(&Tensor::randn([12], f));
                bn.running_var
                    .shallow_clone()
                    .copy_(&(Tensor::rand([12], f) + 0.1));
            });
            let x = Tensor::randn([2, 6, 9, 10], (Kind::Float, Device::Cpu));
            let plain = tch::no_grad(|| layer.forward(&x));
            layer.fold();
            let folded = tch::no_grad(|| layer.forward(&x));
            assert_eq!(plain.size(), folded.size());
            let err = (&plain - &folded).abs().max().double_value(&[]);
            assert!(err < 1e-4, "case {i}: folded differs by {err}");
        }
    }

    #[test]
    fn symmetric_same_padding_equals_explicit_padding() {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        for (k, stride, size) in [(3, 1, 9), (5, 1, 8), (3, 2, 9), (5, 2, 8), (3, 2, 8)] {
            let conv = Conv2d::new(
                &(vs.root() / format!("c{k}{stride}{size}")),
                4,
                4,
                k,
                ConvOpts {
                    stride,
                    padding: Padding::TfSame,
                    groups: 4,
                    bias: false,
                },
            );
            let x = Tensor::randn([1, 4, size, size], (Kind::Float, Device::Cpu));
            let (ph, pw) = (same_pad(size, k, stride), same_pad(size, k, stride));
            let padded = x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
            let reference = padded.conv2d(
                &conv.weight,
                None::<&Tensor>,
                [stride, stride],
                [0, 0],
                [1, 1],
                4,
            );
            let ours = tch::no_grad(|| conv.forward(&x));
            assert_eq!(
                ours.size(),
                reference.size(),
                "k {k} stride {stride} size {size}"
            );
            assert!(ours.allclose(&reference, 1e-5, 1e-6, false));
        }
    }
}
