//! Conditional normalizing flows (CFlow-AD style), one per feature tap.
//!
//! Training feeds rows of feature vectors with their positional condition; inference evaluates a
//! whole feature map at once (every per-position linear layer is one matmul over all positions).

mod coupling;
mod positional;

pub use coupling::{CouplingBlock, FoldedBlock, LOW_ROTATION_CHANNELS, LOW_ROTATION_MACS};
pub use positional::{positional_encoding_2d, positional_rows};

use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// log(2 pi) / 2.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// Hyper-parameters of the flows (docs/method.md section 4). Fields left out take the paper's
/// values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredFlowConfig")]
pub struct FlowConfig {
    /// Coupling blocks per flow.
    pub blocks: usize,
    /// Channels of the positional-encoding condition (multiple of 4).
    pub condition_channels: i64,
    /// Soft clamp alpha of the affine coupling.
    pub clamp: f64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            blocks: 6,
            condition_channels: 128,
            clamp: 1.9,
        }
    }
}

/// The stored form, which also reads the keys of two options clsflow no longer has: a config
/// or checkpoint that gave them their neutral value loads, one that used them is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoredFlowConfig {
    blocks: usize,
    condition_channels: i64,
    clamp: f64,
    blocks_per_tap: Option<[usize; 3]>,
    input_pool: Option<i64>,
}

impl Default for StoredFlowConfig {
    fn default() -> Self {
        let d = FlowConfig::default();
        StoredFlowConfig {
            blocks: d.blocks,
            condition_channels: d.condition_channels,
            clamp: d.clamp,
            blocks_per_tap: None,
            input_pool: None,
        }
    }
}

impl TryFrom<StoredFlowConfig> for FlowConfig {
    type Error = String;

    fn try_from(s: StoredFlowConfig) -> Result<Self, String> {
        if let Some(b) = s
            .blocks_per_tap
            .filter(|b| b.iter().any(|&n| n != s.blocks))
        {
            return Err(crate::model::removed_option(
                "flow.blocks_per_tap",
                &format!("{b:?}"),
            ));
        }
        if let Some(k) = s.input_pool.filter(|&k| k != 1) {
            return Err(crate::model::removed_option(
                "flow.input_pool",
                &k.to_string(),
            ));
        }
        Ok(FlowConfig {
            blocks: s.blocks,
            condition_channels: s.condition_channels,
            clamp: s.clamp,
        })
    }
}

/// A chain of coupling blocks modelling the density of one tap's feature vectors.
#[derive(Debug)]
pub struct ConditionalFlow {
    blocks: Vec<CouplingBlock>,
    channels: i64,
}

impl ConditionalFlow {
    /// Creates the flow's variables under `p` for feature vectors of `channels` channels.
    pub fn new(p: &Path, channels: i64, config: &FlowConfig) -> Self {
        let blocks = (0..config.blocks)
            .map(|i| {
                CouplingBlock::new(&(p / i), channels, config.condition_channels, config.clamp)
            })
            .collect();
        ConditionalFlow { blocks, channels }
    }

    /// Channels of the modelled feature vectors.
    pub fn channels(&self) -> i64 {
        self.channels
    }

    /// Number of coupling blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// A second handle on the same variables ([`CouplingBlock::shallow_clone`]).
    pub fn shallow_clone(&self) -> Self {
        ConditionalFlow {
            blocks: self
                .blocks
                .iter()
                .map(CouplingBlock::shallow_clone)
                .collect(),
            channels: self.channels,
        }
    }

    /// Multiply-adds per feature vector of the folded inference form ([`FoldedFlow`]): per
    /// block the subnet's two layers without the condition's share, which folding precomputes,
    /// and the rotation. Element-wise work (tanh, exp, sums) is not counted.
    pub fn folded_multiply_adds(&self) -> i64 {
        self.blocks
            .iter()
            .map(CouplingBlock::folded_multiply_adds)
            .sum()
    }

    /// Element type of the weights.
    pub fn kind(&self) -> Kind {
        self.blocks[0].w1.kind()
    }

    /// Maps rows x (N, C) with conditions (N, P) to latent rows z and log|det J| (N).
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> (Tensor, Tensor) {
        let mut z = x.shallow_clone();
        let mut log_det = Tensor::zeros([x.size()[0]], (Kind::Float, x.device()));
        for block in &self.blocks {
            let (y, j) = block.forward(&z, cond);
            z = y;
            log_det += j;
        }
        (z, log_det)
    }

    /// Inverse of [`Self::forward`].
    pub fn inverse(&self, z: &Tensor, cond: &Tensor) -> Tensor {
        self.blocks
            .iter()
            .rev()
            .fold(z.shallow_clone(), |y, block| block.inverse(&y, cond))
    }

    /// Exact log-likelihood log p(x | c) of rows (N, C): -C/2 log 2 pi - |z|^2 / 2 + log|det J|.
    pub fn log_prob(&self, x: &Tensor, cond: &Tensor) -> Tensor {
        let (z, log_det) = self.forward(x, cond);
        log_likelihood(&z, &log_det)
    }

    /// Log-likelihood divided by the channel count for every position of a feature map
    /// (B, C, H, W), with `cond_rows` (H*W, P) from [`positional_rows`]. Returns (B, H, W).
    ///
    /// All positions of all images go through each block as one matmul, and the condition's
    /// share of the first subnet layer is computed once per position, not once per image.
    pub fn log_prob_map(&self, features: &Tensor, cond_rows: &Tensor) -> Tensor {
        let (b, c, h, w) = features.size4().expect("feature map (B, C, H, W)");
        let mut z = features.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let mut log_det = Tensor::zeros([b, h * w], (features.kind(), features.device()));
        for block in &self.blocks {
            let cond_term = block.condition_term(cond_rows).unsqueeze(0); // (1, HW, 2d)
            let (y, j) = block.forward_with_condition_term(&z, &cond_term);
            z = y;
            log_det += j;
        }
        (log_likelihood(&z, &log_det) / c as f64).reshape([b, h, w])
    }
}

/// A flow folded for inference at one grid of positions (see [`FoldedBlock`]); rebuild it after
/// the weights change.
#[derive(Debug)]
pub struct FoldedFlow {
    blocks: Vec<FoldedBlock>,
    positions: i64,
}

impl ConditionalFlow {
    /// Folds every block for the condition rows (H*W, P) of a fixed grid.
    pub fn fold(&self, cond_rows: &Tensor) -> FoldedFlow {
        FoldedFlow {
            blocks: self.blocks.iter().map(|b| b.fold(cond_rows)).collect(),
            positions: cond_rows.size()[0],
        }
    }
}

impl FoldedFlow {
    /// Same as [`ConditionalFlow::log_prob_map`] for maps of the folded grid, faster.
    pub fn log_prob_map(&self, features: &Tensor) -> Tensor {
        let (_, c, h, w) = features.size4().expect("feature map (B, C, H, W)");
        assert_eq!(
            h * w,
            self.positions,
            "feature map does not match the folded grid"
        );
        // -1 for the batch: a traced (TorchScript) module then takes any batch size
        let mut z = features.permute([0, 2, 3, 1]).reshape([-1, h * w, c]);
        let mut log_det: Option<Tensor> = None;
        for block in &self.blocks {
            let (y, j) = block.forward(&z);
            z = y;
            log_det = Some(match log_det {
                Some(mut l) => {
                    let _ = l.g_add_(&j);
                    l
                }
                None => j,
            });
        }
        (log_likelihood(&z, &log_det.expect("at least one block")) / c as f64).reshape([-1, h, w])
    }

    /// The same flow with its matmuls in `kind` and its latent rows in the input's precision.
    pub fn with_matmul_kind(&self, kind: Kind) -> FoldedFlow {
        FoldedFlow {
            blocks: self
                .blocks
                .iter()
                .map(|b| b.with_matmul_kind(kind))
                .collect(),
            positions: self.positions,
        }
    }

    /// Converts to another precision.
    pub fn to_kind(&self, kind: Kind) -> FoldedFlow {
        FoldedFlow {
            blocks: self.blocks.iter().map(|b| b.to_kind(kind)).collect(),
            positions: self.positions,
        }
    }
}

/// log p from latent rows and log-determinants (last axis = channels).
pub fn log_likelihood(z: &Tensor, log_det: &Tensor) -> Tensor {
    let c = *z.size().last().expect("non-scalar latent") as f64;
    log_det - z.square().sum_dim_intlist(-1, false, z.kind()) * 0.5 - c * HALF_LOG_2PI
}

/// CFlow-AD's training loss: mean of -log sigmoid(log p / C).
pub fn flow_loss(log_prob: &Tensor, channels: i64) -> Tensor {
    -(log_prob / channels as f64).log_sigmoid().mean(Kind::Float)
}
