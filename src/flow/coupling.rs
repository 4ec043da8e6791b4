//! One coupling block, computing exactly what FrEIA 0.2's `AllInOneBlock` computes in the way
//! CFlow-AD configures it (affine clamping, SOFTPLUS global affine, soft permutation).

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// softplus with beta = 0.5: 2 * log(1 + exp(v / 2)).
fn softplus_half(v: &Tensor) -> Tensor {
    (v * 0.5).softplus() * 2.0
}

/// Affine coupling + global affine + fixed orthogonal rotation.
#[derive(Debug)]
pub struct CouplingBlock {
    /// Subnet first layer, (2d, d) with d = len(x1) + condition channels; input is [x1, c].
    pub w1: Tensor,
    /// Subnet first bias, (2d).
    pub b1: Tensor,
    /// Subnet second layer, (2 len(x2), 2d).
    pub w2: Tensor,
    /// Subnet second bias.
    pub b2: Tensor,
    /// Global scale before activation, (1, C).
    pub global_scale: Tensor,
    /// Global offset, (1, C).
    pub global_offset: Tensor,
    /// Fixed special-orthogonal rotation, (C, C); y = u W^T.
    pub w_perm: Tensor,
    channels: i64,
    split: i64,
    clamp: f64,
}

impl CouplingBlock {
    /// Creates the block's variables under `p` for `channels` inputs and `cond` condition channels.
    ///
    /// The rotation is drawn from libtorch's random generator (seed it with `tch::manual_seed`
    /// for reproducible models) and stored as a non-trainable variable.
    pub fn new(p: &Path, channels: i64, cond: i64, clamp: f64) -> Self {
        assert!(channels >= 2, "a coupling block needs at least 2 channels");
        let split = (channels + 1) / 2;
        let d = split + cond;
        let out = 2 * (channels - split);
        let sub = p / "subnet";
        let lin = |name: &str, fan_in: i64, shape: &[i64]| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (&sub / name).var(
                if shape.len() == 2 { "weight" } else { "bias" },
                shape,
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )
        };
        let w1 = lin("0", d, &[2 * d, d]);
        let b1 = lin("0", d, &[2 * d]);
        let w2 = lin("2", 2 * d, &[out, 2 * d]);
        let b2 = lin("2", 2 * d, &[out]);
        // global scale initialised so that 0.1 * softplus_0.5(v) = 1, i.e. v = 2 ln(e^5 - 1)
        let v0 = 2.0 * (5f64.exp() - 1.0).ln();
        let global_scale = p.var("global_scale", &[1, channels], Init::Const(v0));
        let global_offset = p.var("global_offset", &[1, channels], Init::Const(0.0));
        // not trainable: the rotation is drawn once and stored
        let w_perm = p.zeros_no_train("w_perm", &[channels, channels]);
        tch::no_grad(|| {
            w_perm
                .shallow_clone()
                .copy_(&random_rotation(channels, p.device()))
        });
        CouplingBlock {
            w1,
            b1,
            w2,
            b2,
            global_scale,
            global_offset,
            w_perm,
            channels,
            split,
            clamp,
        }
    }

    /// A second handle on the same variables: what one trains, the other sees (so a flow can
    /// train on another thread, tensors being `Send` but not `Sync`).
    pub fn shallow_clone(&self) -> Self {
        CouplingBlock {
            w1: self.w1.shallow_clone(),
            b1: self.b1.shallow_clone(),
            w2: self.w2.shallow_clone(),
            b2: self.b2.shallow_clone(),
            global_scale: self.global_scale.shallow_clone(),
            global_offset: self.global_offset.shallow_clone(),
            w_perm: self.w_perm.shallow_clone(),
            channels: self.channels,
            split: self.split,
            clamp: self.clamp,
        }
    }

    /// Number of channels of the block's input.
    pub fn channels(&self) -> i64 {
        self.channels
    }

    /// Multiply-adds per vector of the folded form: x1 W1x^T, hidden W2^T and the rotation.
    pub fn folded_multiply_adds(&self) -> i64 {
        let hidden = self.w1.size()[0];
        self.split * hidden + hidden * self.w2.size()[0] + self.channels * self.channels
    }

    fn global_gain(&self) -> Tensor {
        softplus_half(&self.global_scale) * 0.1
    }

    /// The hidden pre-activation of the subnet's first layer for the condition alone,
    /// c W1c^T + b1: constant per position, so whole-map inference computes it once.
    pub fn condition_term(&self, cond: &Tensor) -> Tensor {
        let w1c = self
            .w1
            .narrow(1, self.split, self.w1.size()[1] - self.split);
        cond.linear(&w1c, Some(&self.b1))
    }

    /// Forward pass on rows x (N, C) with the condition's first-layer term (see
    /// [`Self::condition_term`]), broadcastable to (N, 2d). Returns y and log|det J| per row.
    pub fn forward_with_condition_term(&self, x: &Tensor, cond_term: &Tensor) -> (Tensor, Tensor) {
        let x1 = x.narrow(-1, 0, self.split);
        let x2 = x.narrow(-1, self.split, self.channels - self.split);
        let w1x = self.w1.narrow(1, 0, self.split);
        let hidden = (x1.matmul(&w1x.tr()) + cond_term).relu();
        let a = hidden.linear(&self.w2, Some(&self.b2)) * 0.1;
        let n2 = self.channels - self.split;
        let s = a.narrow(-1, 0, n2).tanh() * self.clamp;
        let t = a.narrow(-1, n2, n2);
        let x2 = &x2 * s.exp() + t;
        let gain = self.global_gain();
        let u = Tensor::cat(&[x1, x2], -1) * &gain + &self.global_offset;
        let y = u.matmul(&self.w_perm.tr());
        let log_det = s.sum_dim_intlist(-1, false, Kind::Float) + gain.log().sum(Kind::Float);
        (y, log_det)
    }

    /// Forward pass on rows x (N, C) with condition rows c (N, P).
    pub fn forward(&self, x: &Tensor, cond: &Tensor) -> (Tensor, Tensor) {
        self.forward_with_condition_term(x, &self.condition_term(cond))
    }

    /// Inverse pass: recovers x from y for the same condition.
    pub fn inverse(&self, y: &Tensor, cond: &Tensor) -> Tensor {
        let u = y.matmul(&self.w_perm);
        let x = (u - &self.global_offset) / self.global_gain();
        let x1 = x.narrow(-1, 0, self.split);
        let x2 = x.narrow(-1, self.split, self.channels - self.split);
        let w1x = self.w1.narrow(1, 0, self.split);
        let hidden = (x1.matmul(&w1x.tr()) + self.condition_term(cond)).relu();
        let a = hidden.linear(&self.w2, Some(&self.b2)) * 0.1;
        let n2 = self.channels - self.split;
        let s = a.narrow(-1, 0, n2).tanh() * self.clamp;
        let t = a.narrow(-1, n2, n2);
        let x2 = (x2 - t) * (-s).exp();
        Tensor::cat(&[x1, x2], -1)
    }
}

/// A block with everything that does not depend on the input folded ahead of time, for
/// inference on whole maps at a fixed grid: the condition's share of the first subnet layer per
/// position, the 0.1 output scale, and the global affine followed by the rotation as one affine map.
#[derive(Debug)]
pub struct FoldedBlock {
    cond_term: Tensor,
    w1x_t: Tensor,
    w2_t: Tensor,
    b2: Tensor,
    /// The global affine and rotation as one affine map: W^T's rows for x1 and for x2, and the
    /// bias; y = x1 W1 + x2 W2 + b.
    rotation: [Tensor; 3],
    /// The same in the subnet's lower precision, for large calls (`with_matmul_kind`,
    /// [`LOW_ROTATION_MACS`]).
    low_rotation: Option<[Tensor; 3]>,
    log_gain: f64,
    split: i64,
    n2: i64,
    clamp: f64,
}

impl CouplingBlock {
    /// Folds the block for positions with condition rows `cond` (HW, P).
    pub fn fold(&self, cond: &Tensor) -> FoldedBlock {
        tch::no_grad(|| {
            let gain = self.global_gain(); // (1, C)
            // y = (u * g + o) W^T = u (W diag g)^T + o W^T
            let w_out_t = (&self.w_perm * &gain).tr().contiguous(); // (C, C)
            let n2 = self.channels - self.split;
            FoldedBlock {
                cond_term: self.condition_term(cond).contiguous(),
                w1x_t: self.w1.narrow(1, 0, self.split).tr().contiguous(),
                w2_t: (&self.w2 * 0.1).tr().contiguous(),
                b2: &self.b2 * 0.1,
                rotation: [
                    w_out_t.narrow(0, 0, self.split).contiguous(),
                    w_out_t.narrow(0, self.split, n2).contiguous(),
                    self.global_offset.matmul(&self.w_perm.tr()),
                ],
                low_rotation: None,
                log_gain: gain.log().sum(Kind::Float).double_value(&[]),
                split: self.split,
                n2,
                clamp: self.clamp,
            }
        })
    }
}

impl FoldedBlock {
    /// Forward on rows (B, HW, C) at the folded positions: (y, log|det J|) with log-det (B, HW).
    ///
    /// The subnet's two matmuls and its wide hidden layer run in the weights' precision, and so
    /// does the C x C rotation where it is large enough to gain ([`LOW_ROTATION_MACS`]); the rest
    /// (latent rows, scales, log-det) in x's. The conversions are no-ops when the two agree.
    /// Intermediate results are updated in place and the rotation's bias and second half are
    /// accumulated into the first half's product (`addmm`), which saves five passes over rows
    /// of 20-576 values per block: 5-11 % of the flows' float32 time (BENCHMARKS.md).
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (b, hw, c) = x.size3().expect("rows (B, HW, C)");
        // -1 for the batch: a traced (TorchScript) module then takes any batch size
        let x = x.reshape([-1, c]);
        let x1 = x.narrow(-1, 0, self.split);
        let x2_in = x.narrow(-1, self.split, self.n2);
        // (B, HW, 2d): the condition term is per position, broadcast over the batch
        let mut hidden = x1
            .to_kind(self.w1x_t.kind())
            .reshape([-1, hw, self.split])
            .matmul(&self.w1x_t);
        let _ = hidden.g_add_(&self.cond_term);
        let _ = hidden.relu_();
        let width = hidden.size()[2];
        let mut a = hidden.reshape([-1, width]).mm(&self.w2_t).to_kind(x.kind());
        let _ = a.g_add_(&self.b2);
        // A copy to contiguous rows pays for itself: on the strided half of `a`, libtorch's tanh
        // and exp run a row at a time and compute each row's tail (20 of 40 values on the
        // stride-8 tap) with scalar code (`flow_op_times`: 0.34 against 0.48 ms per block).
        let mut s = a.narrow(-1, 0, self.n2).contiguous();
        let _ = s.tanh_();
        let _ = s.g_mul_scalar_(self.clamp);
        let mut x2 = s.exp();
        let _ = x2.g_mul_(&x2_in);
        let _ = x2.g_add_(&a.narrow(-1, self.n2, self.n2));
        let [w1, w2, bias] = match &self.low_rotation {
            Some(low) if b * hw * c * c >= LOW_ROTATION_MACS => low,
            _ => &self.rotation,
        };
        let mut y = bias.addmm(&x1.to_kind(w1.kind()), w1);
        let _ = y.addmm_(&x2.to_kind(w1.kind()), w2);
        let y = y.to_kind(x.kind());
        let log_det = s.sum_dim_intlist(-1, false, Kind::Float) + self.log_gain;
        (y.reshape([-1, hw, c]), log_det.reshape([-1, hw]))
    }

    /// Converts the folded tensors to another precision (half on CUDA).
    pub fn to_kind(&self, kind: Kind) -> FoldedBlock {
        FoldedBlock {
            cond_term: self.cond_term.to_kind(kind),
            w1x_t: self.w1x_t.to_kind(kind),
            w2_t: self.w2_t.to_kind(kind),
            b2: self.b2.to_kind(kind),
            rotation: self.rotation.each_ref().map(|t| t.to_kind(kind)),
            low_rotation: None,
            ..*self
        }
    }

    /// Converts the subnet's weights and condition term to `kind` (bfloat16 on CPUs with
    /// AVX512-BF16 or AMX-BF16), and keeps a copy of the rotation in `kind` for the calls where it
    /// gains ([`LOW_ROTATION_MACS`]); the forward keeps the input's precision everywhere else.
    pub fn with_matmul_kind(&self, kind: Kind) -> FoldedBlock {
        let wide = self.split + self.n2 >= LOW_ROTATION_CHANNELS;
        FoldedBlock {
            cond_term: self.cond_term.to_kind(kind),
            w1x_t: self.w1x_t.to_kind(kind),
            w2_t: self.w2_t.to_kind(kind),
            b2: self.b2.shallow_clone(),
            rotation: self.rotation.each_ref().map(|t| t.shallow_clone()),
            low_rotation: wide.then(|| self.rotation.each_ref().map(|t| t.to_kind(kind))),
            ..*self
        }
    }
}

/// With [`FoldedBlock::with_matmul_kind`], the rotation runs in the lower precision as well in
/// blocks of at least [`LOW_ROTATION_CHANNELS`] channels, for calls of at least this many of its
/// multiply-adds (rows x C x C). A bfloat16 matmul pays for converting its inputs and a fixed
/// cost per call; on the default taps (`flow_op_times`, BENCHMARKS.md) it takes 0.4-0.7x of the
/// float32 rotation's time on the 112- and 320-channel taps from batch 4 on, but 1.0-1.6x at
/// batch 1-2, and 1.2-1.3x on the 40-channel tap at any batch.
pub const LOW_ROTATION_MACS: i64 = 12_000_000;

/// See [`LOW_ROTATION_MACS`].
pub const LOW_ROTATION_CHANNELS: i64 = 64;

/// A random special-orthogonal matrix (Haar-distributed, determinant +1).
fn random_rotation(n: i64, device: tch::Device) -> Tensor {
    tch::no_grad(|| {
        let a = Tensor::randn([n, n], (Kind::Double, device));
        let (q, r) = Tensor::linalg_qr(&a, "reduced");
        let signs = r.diagonal(0, 0, 1).sign();
        let mut q = q * signs.unsqueeze(0);
        if q.det().double_value(&[]) < 0.0 {
            let first = q.narrow(1, 0, 1) * -1.0;
            q = Tensor::cat(&[first, q.narrow(1, 1, n - 1)], 1);
        }
        q.to_kind(Kind::Float)
    })
}
