//! The pixelwise classification network: a U-Net-like decoder on the shared extractor's three
//! taps (docs/method.md section 2). It predicts, per pixel, whether the pixel belongs to a (synthetic)
//! defect; its gradients fine-tune the shared extractor in stage 1.

use crate::backbone::BackboneKind;
use crate::layers::{Conv2d, ConvOpts, Padding};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT, Path};

/// How the decoder doubles its resolution between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    /// Bicubic (the paper's WRN50-2 decoder).
    Bicubic,
    /// Bilinear (the authors' ResNet-18 variant; cheaper on CPU).
    Bilinear,
}

/// Shape of the decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Width of the two 1x1 convolutions on the deepest tap.
    pub head_channels: i64,
    /// Output channels of the decoder stages (1 to 4; each made of bottlenecks of expansion 2).
    /// Each stage doubles the resolution; the first takes the stride-16 tap as a skip, the second
    /// the stride-8 tap. The output convolutions run after one more doubling, so 4 stages end at
    /// the input resolution (the paper's shape) and fewer stages end coarser, their logits then
    /// upsampled bilinearly to the input size.
    pub stage_channels: Vec<i64>,
    /// Bottleneck blocks per stage (same length as `stage_channels`).
    pub stage_blocks: Vec<usize>,
    /// Upsampling mode.
    pub upsample: Upsample,
}

impl DecoderConfig {
    /// The default decoder for a backbone: the paper's shape for the ResNets (head = half the
    /// deepest tap, four stages 256..32 with 3, 6, 4, 3 bottlenecks, output at full resolution);
    /// for the Lite models, whose taps are narrow and whose extractor costs far less, a decoder scaled to it:
    /// two stages (128, 64 channels) ending at stride 4, so that the classifier adds a fraction of
    /// the extractor's time rather than more than the extractor itself.
    pub fn for_backbone(kind: BackboneKind) -> Self {
        let deep = kind.tap_channels()[2];
        match kind {
            BackboneKind::WideResnet50_2 | BackboneKind::Resnet18 => DecoderConfig {
                head_channels: deep / 2,
                stage_channels: vec![256, 128, 64, 32],
                stage_blocks: vec![3, 6, 4, 3],
                upsample: if kind == BackboneKind::WideResnet50_2 {
                    Upsample::Bicubic
                } else {
                    Upsample::Bilinear
                },
            },
            BackboneKind::EfficientnetLite0
            | BackboneKind::EfficientnetLite1
            | BackboneKind::EfficientnetLite2 => DecoderConfig {
                head_channels: deep / 2,
                stage_channels: vec![128, 64],
                stage_blocks: vec![3, 4],
                upsample: Upsample::Bilinear,
            },
        }
    }

    /// Checks that every width is usable.
    pub fn validate(&self) -> crate::Result<()> {
        if self.head_channels < 1 || self.stage_channels.iter().any(|&c| c < 2 || c % 2 != 0) {
            return Err(crate::Error::Config(format!(
                "decoder widths must be positive and stage widths even, got head {} and stages {:?}",
                self.head_channels, self.stage_channels
            )));
        }
        if self.stage_channels.is_empty()
            || self.stage_channels.len() > 4
            || self.stage_blocks.len() != self.stage_channels.len()
        {
            return Err(crate::Error::Config(format!(
                "the decoder needs 1 to 4 stages with one block count each, got channels {:?} and blocks {:?}",
                self.stage_channels, self.stage_blocks
            )));
        }
        if self.stage_blocks.contains(&0) {
            return Err(crate::Error::Config(format!(
                "every decoder stage needs at least one block, got {:?}",
                self.stage_blocks
            )));
        }
        // far beyond any useful decoder, and within what a tensor's size can hold
        let widths = std::iter::once(self.head_channels).chain(self.stage_channels.iter().copied());
        if widths.clone().any(|c| c > MAX_WIDTH) || self.stage_blocks.iter().any(|&b| b > 64) {
            return Err(crate::Error::Config(format!(
                "decoder widths must be at most {MAX_WIDTH} and stages at most 64 blocks, got \
                 head {}, stages {:?} with {:?} blocks",
                self.head_channels, self.stage_channels, self.stage_blocks
            )));
        }
        Ok(())
    }
}

/// The widest layer a decoder config may ask for.
const MAX_WIDTH: i64 = 16_384;

fn conv3(p: &Path, c_in: i64, c_out: i64) -> Conv2d {
    let opts = ConvOpts {
        padding: Padding::Reflect(1),
        ..ConvOpts::default()
    };
    Conv2d::new(p, c_in, c_out, 3, opts)
}

fn conv1(p: &Path, c_in: i64, c_out: i64, bias: bool) -> Conv2d {
    let opts = ConvOpts {
        bias,
        ..ConvOpts::default()
    };
    Conv2d::new(p, c_in, c_out, 1, opts)
}

/// The decoder's BatchNorm epsilon (tch's default, named so that folding uses the same value).
const BN_EPS: f64 = 1e-5;

/// A convolution and its trainable BatchNorm. Training and the classifier's calibration use both;
/// [`ConvNorm::fold`] merges them into one convolution for inference (see
/// [`crate::layers::ConvBn`], the extractor's frozen counterpart).
#[derive(Debug)]
struct ConvNorm {
    conv: Conv2d,
    bn: nn::BatchNorm,
    folded: Option<Conv2d>,
}

impl ConvNorm {
    fn new(conv: Conv2d, p: &Path, c: i64) -> Self {
        let config = nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        };
        ConvNorm {
            conv,
            bn: nn::batch_norm2d(p, c, config),
            folded: None,
        }
    }

    fn fold(&mut self) {
        let bn = &self.bn;
        let (w, b) = (bn.ws.as_ref(), bn.bs.as_ref());
        self.folded = Some(self.conv.folded_with_norm(
            w.expect("affine BatchNorm"),
            b.expect("affine BatchNorm"),
            &bn.running_mean,
            &bn.running_var,
            BN_EPS,
        ));
    }

    /// `train` uses batch statistics (and never the folded form).
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.folded {
            Some(conv) if !train => conv.forward(x),
            _ => self.bn.forward_t(&self.conv.forward(x), train),
        }
    }
}

/// Bottleneck of expansion 2: 1x1 reduce, 3x3, 1x1 expand, with a projected shortcut when the
/// width changes.
#[derive(Debug)]
struct Bottleneck {
    c1: ConvNorm,
    c2: ConvNorm,
    c3: ConvNorm,
    shortcut: Option<ConvNorm>,
}

impl Bottleneck {
    fn new(p: &Path, c_in: i64, c_out: i64) -> Self {
        let planes = c_out / 2;
        Bottleneck {
            c1: ConvNorm::new(
                conv1(&(p / "conv1"), c_in, planes, false),
                &(p / "bn1"),
                planes,
            ),
            c2: ConvNorm::new(conv3(&(p / "conv2"), planes, planes), &(p / "bn2"), planes),
            c3: ConvNorm::new(
                conv1(&(p / "conv3"), planes, c_out, false),
                &(p / "bn3"),
                c_out,
            ),
            shortcut: (c_in != c_out).then(|| {
                let conv = conv1(&(p / "shortcut" / "0"), c_in, c_out, false);
                ConvNorm::new(conv, &(p / "shortcut" / "1"), c_out)
            }),
        }
    }

    fn fold(&mut self) {
        for c in [&mut self.c1, &mut self.c2, &mut self.c3] {
            c.fold();
        }
        if let Some(c) = &mut self.shortcut {
            c.fold();
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.c1.forward(x, train).relu();
        let h = self.c2.forward(&h, train).relu();
        let h = self.c3.forward(&h, train);
        let s = match &self.shortcut {
            Some(c) => c.forward(x, train),
            None => x.shallow_clone(),
        };
        (h + s).relu()
    }
}

/// The pixelwise classifier. `forward` returns logits at the input resolution (N, 1, H, W);
/// sigmoid gives the defect probability.
#[derive(Debug)]
pub struct Decoder {
    head1: Conv2d,
    head2: Conv2d,
    stages: Vec<Vec<Bottleneck>>,
    out1: ConvNorm,
    out2: Conv2d,
    upsample: Upsample,
}

impl Decoder {
    /// Creates the decoder under `p` for taps of `tap_channels` (strides 8, 16, 32).
    pub fn new(p: &Path, tap_channels: [i64; 3], config: &DecoderConfig) -> Self {
        let [c8, c16, c32] = tap_channels;
        let head = config.head_channels;
        let head1 = conv1(&(p / "head" / "0"), c32, head, true);
        let head2 = conv1(&(p / "head" / "2"), head, head, true);
        // skip inputs per stage: stride 16 tap, stride 8 tap, none, none
        let skips = [c16, c8, 0, 0];
        let mut c_in = head;
        let mut stages = Vec::new();
        for (s, (&c_out, &n)) in config
            .stage_channels
            .iter()
            .zip(&config.stage_blocks)
            .enumerate()
        {
            let sp = p / "stages" / s;
            let mut blocks = Vec::new();
            for b in 0..n {
                let cin = if b == 0 { c_in + skips[s] } else { c_out };
                blocks.push(Bottleneck::new(&(&sp / b), cin, c_out));
            }
            stages.push(blocks);
            c_in = c_out;
        }
        Decoder {
            head1,
            head2,
            stages,
            out1: ConvNorm::new(conv3(&(p / "out" / "0"), c_in, 8), &(p / "out" / "1"), 8),
            out2: Conv2d::new(
                &(p / "out" / "3"),
                8,
                1,
                3,
                ConvOpts {
                    padding: Padding::Reflect(1),
                    bias: true,
                    ..ConvOpts::default()
                },
            ),
            upsample: config.upsample,
        }
    }

    /// Folds every BatchNorm into its convolution for inference (forward with `train` false);
    /// call again after the weights change. The variables are unchanged.
    pub fn fold_batch_norms(&mut self) {
        for block in self.stages.iter_mut().flatten() {
            block.fold();
        }
        self.out1.fold();
    }

    fn up2(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let size = [s[2] * 2, s[3] * 2];
        match self.upsample {
            Upsample::Bicubic => x.upsample_bicubic2d(size, false, None, None),
            Upsample::Bilinear => x.upsample_bilinear2d(size, false, None, None),
        }
    }

    /// Defect logits (N, 1, 32 * H32, 32 * W32) from the three taps. `train` switches the
    /// decoder's own BatchNorms to batch statistics.
    pub fn forward(&self, taps: &[Tensor; 3], train: bool) -> Tensor {
        let s = taps[2].size();
        let size = [s[2] * 32, s[3] * 32];
        let logits = self.forward_native(taps, train);
        if logits.size()[2..] == size {
            logits
        } else {
            logits.upsample_bilinear2d(size, false, None, None)
        }
    }

    /// Logits at the decoder's own output resolution (input / 2^(4 - stages)).
    pub fn forward_native(&self, taps: &[Tensor; 3], train: bool) -> Tensor {
        let mut h = self
            .head2
            .forward(&self.head1.forward(&taps[2]).relu())
            .relu();
        let skips = [Some(&taps[1]), Some(&taps[0]), None, None];
        for (stage, skip) in self.stages.iter().zip(skips) {
            h = self.up2(&h);
            if let Some(skip) = skip {
                h = Tensor::cat(&[&h, skip], 1);
            }
            for block in stage {
                h = block.forward(&h, train);
            }
        }
        let h = self.up2(&h);
        let h = self.out1.forward(&h, train).relu();
        self.out2.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    #[test]
    fn folded_batch_norms_give_the_same_logits() {
        tch::manual_seed(9);
        let vs = VarStore::new(Device::Cpu);
        let config = DecoderConfig::for_backbone(BackboneKind::EfficientnetLite0);
        let mut dec = Decoder::new(&vs.root(), [40, 112, 320], &config);
        // trained-looking statistics: every BatchNorm away from the identity
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let r = Tensor::rand_like(&t);
                if name.ends_with("running_var") {
                    t.copy_(&(r + 0.5));
                } else if name.contains(".bn")
                    || name.contains("shortcut.1.")
                    || name.starts_with("out.1.")
                {
                    t.copy_(&(r - 0.5));
                }
            }
        });
        let f = (Kind::Float, Device::Cpu);
        let taps = [
            Tensor::randn([2, 40, 8, 8], f),
            Tensor::randn([2, 112, 4, 4], f),
            Tensor::randn([2, 320, 2, 2], f),
        ];
        let plain = tch::no_grad(|| dec.forward(&taps, false));
        dec.fold_batch_norms();
        let folded = tch::no_grad(|| dec.forward(&taps, false));
        let diff = (&plain - &folded).abs().max().double_value(&[]);
        let scale = plain.abs().max().double_value(&[]);
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "max difference {diff} (scale {scale})"
        );
        // training mode never uses the folded form (batch statistics)
        let train = dec.forward(&taps, true);
        assert!(!train.allclose(&folded, 1e-4, 1e-4, false));
    }
}
