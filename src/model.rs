//! The whole network of the method: one shared extractor, the pixelwise classifier decoder and
//! one conditional flow per tap.

use crate::backbone::{Backbone, BackboneKind};
use crate::decoder::{Decoder, DecoderConfig};
use crate::flow::{ConditionalFlow, FlowConfig, FoldedFlow, positional_rows};
use crate::tiling::InputResize;
use crate::weights;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Architecture of a model; stored in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredModelConfig")]
pub struct ModelConfig {
    /// The shared feature extractor.
    pub backbone: BackboneKind,
    /// Side of the square network input, a multiple of 32 (images are resized to it).
    pub input_size: i64,
    /// How images of other shapes become that input: stretched to it (the paper's) or, with
    /// their aspect ratio kept, cut into tiles of it ([`crate::tiling`]). Checkpoints written
    /// before this setting stretch.
    #[serde(default)]
    pub resize: InputResize,
    /// The pixelwise classifier.
    pub decoder: DecoderConfig,
    /// The normalizing flows.
    pub flow: FlowConfig,
}

impl ModelConfig {
    /// The default configuration for a backbone at 256x256.
    pub fn new(backbone: BackboneKind) -> Self {
        ModelConfig {
            backbone,
            input_size: 256,
            resize: InputResize::Stretch,
            decoder: DecoderConfig::for_backbone(backbone),
            flow: FlowConfig::default(),
        }
    }

    /// Checks the configuration for values the networks cannot use.
    pub fn validate(&self) -> Result<()> {
        if self.input_size < 64 || self.input_size > 8192 || self.input_size % 32 != 0 {
            return Err(Error::Config(format!(
                "input_size must be a multiple of 32 from 64 to 8192, got {}",
                self.input_size
            )));
        }
        if !(1..=64).contains(&self.flow.blocks)
            || !(4..=4096).contains(&self.flow.condition_channels)
            || self.flow.condition_channels % 4 != 0
        {
            return Err(Error::Config(format!(
                "flows need 1 to 64 blocks and a condition width that is a multiple of 4 from 4 to 4096, got {} blocks and {} channels",
                self.flow.blocks, self.flow.condition_channels
            )));
        }
        if !self.flow.clamp.is_finite() || self.flow.clamp <= 0.0 {
            return Err(Error::Config(format!(
                "flow clamp must be positive, got {}",
                self.flow.clamp
            )));
        }
        self.decoder.validate()
    }

    /// Side of each tap's feature map at the model's input size.
    pub fn tap_sizes(&self) -> [i64; 3] {
        self.backbone.tap_strides().map(|s| self.input_size / s)
    }
}

/// The stored form of [`ModelConfig`], which also reads the key of an option clsflow no longer
/// has (`input_padding`): its neutral value loads, any other is refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredModelConfig {
    backbone: BackboneKind,
    input_size: i64,
    #[serde(default)]
    resize: InputResize,
    #[serde(default)]
    input_padding: Option<i64>,
    decoder: DecoderConfig,
    flow: FlowConfig,
}

impl TryFrom<StoredModelConfig> for ModelConfig {
    type Error = String;

    fn try_from(s: StoredModelConfig) -> std::result::Result<Self, String> {
        if let Some(p) = s.input_padding.filter(|&p| p != 0) {
            return Err(removed_option("input_padding", &p.to_string()));
        }
        Ok(ModelConfig {
            backbone: s.backbone,
            input_size: s.input_size,
            resize: s.resize,
            decoder: s.decoder,
            flow: s.flow,
        })
    }
}

/// The error for a config or checkpoint that sets an option clsflow no longer has.
pub fn removed_option(key: &str, value: &str) -> String {
    format!(
        "{key} = {value}: clsflow no longer has this option (it did not improve detection; \
         docs/experiments.md); retrain without it"
    )
}

/// Extractor, decoder and flows with their variables.
///
/// Separate variable stores keep the training stages apart: `cls_vars` (extractor + decoder,
/// trained in stage 1) and one store per flow (stage 2 gives each flow its own optimiser). Variable names carry the prefixes
/// `backbone.`, `decoder.` and `flows.` and are the tensor names in checkpoints.
#[derive(Debug)]
pub struct ClsFlowModel {
    config: ModelConfig,
    cls_vars: VarStore,
    flow_vars: Vec<VarStore>,
    backbone: Backbone,
    decoder: Decoder,
    flows: Vec<ConditionalFlow>,
    cond_rows: Vec<Tensor>,
    /// Flows folded for inference ([`Self::fold_flows`]); `None` while training.
    folded: Option<Vec<FoldedFlow>>,
    /// Whether the BatchNorms of extractor and decoder are folded for inference.
    bn_folded: bool,
    /// Whether the extractor's BatchNorms are folded (for inference, or by
    /// [`Self::set_extractor_folded`] while training leaves the extractor as it is).
    extractor_folded: bool,
}

impl ClsFlowModel {
    /// Creates a randomly initialised model on `device`.
    pub fn new(config: ModelConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let cls_vars = VarStore::new(device);
        let flow_vars: Vec<VarStore> = (0..3).map(|_| VarStore::new(device)).collect();
        let taps = config.backbone.tap_channels();
        let backbone = Backbone::new(&(cls_vars.root() / "backbone"), config.backbone);
        let decoder = Decoder::new(&(cls_vars.root() / "decoder"), taps, &config.decoder);
        let flows = taps
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                ConditionalFlow::new(&(flow_vars[i].root() / "flows" / i), c, &config.flow)
            })
            .collect();
        let cond_rows = config
            .tap_sizes()
            .iter()
            .map(|&s| positional_rows(config.flow.condition_channels, s, s, device))
            .collect();
        Ok(ClsFlowModel {
            config,
            cls_vars,
            flow_vars,
            backbone,
            decoder,
            flows,
            cond_rows,
            folded: None,
            bn_folded: false,
            extractor_folded: false,
        })
    }

    /// Prepares a model whose weights are final for inference: folds the flows
    /// ([`Self::fold_flows`]) and the BatchNorms of the extractor and the decoder into their
    /// convolutions. The variables (and so checkpoints) are unchanged; do not train a folded
    /// model.
    pub fn fold_for_inference(&mut self) {
        self.fold_flows();
        self.fold_batch_norms();
        self.bn_folded = true;
    }

    fn fold_batch_norms(&mut self) {
        self.set_extractor_folded(true);
        self.decoder.fold_batch_norms();
    }

    /// Folds the extractor's BatchNorms into its convolutions (`true`) or unfolds them, for the
    /// stretches of training that leave the extractor's weights as they are: the decoder-only
    /// epochs of stage 1 and everything after that stage. Its forward pass then takes about
    /// 0.8x the time, with taps equal up to float rounding (BENCHMARKS.md). The folded form is
    /// detached, so training the extractor needs it unfolded; call again after its weights
    /// change. The decoder, which trains in every stage-1 epoch, is left as it is.
    pub fn set_extractor_folded(&mut self, folded: bool) {
        self.backbone.set_batch_norms_folded(folded);
        self.extractor_folded = folded;
    }

    /// Whether the extractor's BatchNorms are folded ([`Self::set_extractor_folded`]).
    pub fn extractor_folded(&self) -> bool {
        self.extractor_folded
    }

    /// Folds the flows for fast inference at the model's input size. Call once the weights are
    /// final (a [`crate::Detector`] does); [`Self::flow_log_prob_maps`] then uses the folded form.
    pub fn fold_flows(&mut self) {
        let kind = self.flows[0].kind();
        let folded = self
            .flows
            .iter()
            .zip(&self.cond_rows)
            .map(|(f, c)| f.fold(&c.to_kind(kind)).to_kind(kind))
            .collect();
        self.folded = Some(folded);
    }

    /// Runs the folded flows' subnet matmuls, and the rotations of the wide taps, in `kind`
    /// (bfloat16 on CPUs that multiply it natively) and keeps their latent rows, scales and
    /// log-determinants in float32: about 2x faster flows at batch 8 for maps that move by a
    /// few ten-thousandths of their range on average (BENCHMARKS.md). Folds the flows first if
    /// they are not.
    pub fn set_flow_matmul_kind(&mut self, kind: Kind) {
        if self.folded.is_none() {
            self.fold_flows();
        }
        if let Some(folded) = &mut self.folded {
            for f in folded.iter_mut() {
                *f = f.with_matmul_kind(kind);
            }
        }
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the variables live on.
    pub fn device(&self) -> Device {
        self.cls_vars.device()
    }

    /// Loads ImageNet weights for the extractor from a safetensors file with the backbone's
    /// native names (lukemelas for Lite0, torchvision for ResNets).
    pub fn load_backbone_weights(&mut self, path: &Path) -> Result<()> {
        weights::load_prefixed(
            &self.cls_vars,
            "backbone.",
            path,
            weights::is_ignorable_backbone_key,
        )
    }

    /// Extractor + decoder variables (stage 1 optimiser).
    pub fn cls_vars(&self) -> &VarStore {
        &self.cls_vars
    }

    /// Variables of the flow of tap `i` (stage 2 optimiser).
    pub fn flow_vars(&self, tap: usize) -> &VarStore {
        &self.flow_vars[tap]
    }

    /// Switches gradient tracking of the extractor's trainable weights (BatchNorm running
    /// statistics never train).
    pub fn set_backbone_trainable(&self, trainable: bool) {
        for (name, var) in self.cls_vars.variables() {
            if name.starts_with("backbone.") && !is_running_stat(&name) {
                let _ = var.set_requires_grad(trainable);
            }
        }
    }

    /// The three taps for a normalised batch (N, 3, S, S).
    pub fn features(&self, x: &Tensor) -> [Tensor; 3] {
        self.backbone.forward(x)
    }

    /// Classifier logits (N, 1, S, S) from the taps.
    pub fn cls_logits(&self, taps: &[Tensor; 3], train: bool) -> Tensor {
        self.decoder.forward(taps, train)
    }

    /// The pixelwise classifier.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The flows, one per tap.
    pub fn flows(&self) -> &[ConditionalFlow] {
        &self.flows
    }

    /// Positional-encoding rows (H*W, P) of tap `i` at the model's input size.
    pub fn condition_rows(&self, tap: usize) -> &Tensor {
        &self.cond_rows[tap]
    }

    /// log p / C per position for each tap, (N, h_l, w_l), whole maps at once, from the taps.
    pub fn flow_log_prob_maps(&self, taps: &[Tensor; 3]) -> [Tensor; 3] {
        if let Some(folded) = &self.folded {
            let maps: Vec<Tensor> = taps
                .iter()
                .zip(folded)
                .map(|(f, ff)| ff.log_prob_map(f))
                .collect();
            return maps.try_into().expect("three taps");
        }
        let maps: Vec<Tensor> = taps
            .iter()
            .zip(&self.flows)
            .zip(&self.cond_rows)
            .map(|((f, flow), cond)| flow.log_prob_map(f, &cond.to_kind(f.kind())))
            .collect();
        maps.try_into().expect("three taps")
    }

    /// Every variable by checkpoint name.
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> = self
            .cls_vars
            .variables()
            .into_iter()
            .chain(self.flow_vars.iter().flat_map(|v| v.variables()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Stops gradient tracking of every variable (inference only, and what tracing a
    /// TorchScript module needs: weights become its constants).
    pub fn freeze(&mut self) {
        self.cls_vars.freeze();
        for v in &mut self.flow_vars {
            v.freeze();
        }
    }

    /// Converts every variable to half precision (inference on CUDA only).
    pub fn to_half(&mut self) {
        self.cls_vars.half();
        for v in &mut self.flow_vars {
            v.half();
        }
        if self.folded.is_some() {
            self.fold_flows();
        }
        if self.bn_folded {
            self.fold_batch_norms();
        } else if self.extractor_folded {
            self.set_extractor_folded(true);
        }
    }
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}
