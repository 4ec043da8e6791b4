//! The coupling block reproduces FrEIA 0.2's AllInOneBlock (fixture), inverts exactly, and its
//! log-determinant equals the autograd Jacobian's; the positional encoding matches CFlow-AD's.
mod common;

use clsflow::flow::{
    ConditionalFlow, CouplingBlock, FlowConfig, positional_encoding_2d, positional_rows,
};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixture_block() -> (
    VarStore,
    CouplingBlock,
    std::collections::HashMap<String, Tensor>,
) {
    let refs = common::read_tensors(&common::fixture("flow_reference.safetensors"));
    let vs = VarStore::new(Device::Cpu);
    let block = CouplingBlock::new(&(vs.root() / "block"), 8, 4, 1.9);
    tch::no_grad(|| {
        for (ours, theirs) in [
            (&block.w1, "block.subnet.0.weight"),
            (&block.b1, "block.subnet.0.bias"),
            (&block.w2, "block.subnet.2.weight"),
            (&block.b2, "block.subnet.2.bias"),
            (&block.global_scale, "block.global_scale"),
            (&block.global_offset, "block.global_offset"),
            (&block.w_perm, "block.w_perm"),
        ] {
            assert_eq!(ours.size(), refs[theirs].size(), "{theirs} shape");
            ours.shallow_clone().copy_(&refs[theirs]);
        }
    });
    (vs, block, refs)
}

#[test]
fn coupling_block_matches_freia() {
    let (_vs, block, refs) = fixture_block();
    let (y, log_det) = tch::no_grad(|| block.forward(&refs["x"], &refs["c"]));
    let ey = common::rel_err(&y, &refs["y"]);
    let ej = common::rel_err(&log_det, &refs["log_jac_det"]);
    assert!(ey < 1e-5, "output differs from FrEIA: {ey:.2e}");
    assert!(ej < 1e-5, "log-det differs from FrEIA: {ej:.2e}");
    let back = tch::no_grad(|| block.inverse(&y, &refs["c"]));
    assert!(common::rel_err(&back, &refs["x"]) < 1e-5, "inverse");
}

#[test]
fn folded_multiply_adds_count_the_folded_layers() {
    // C = 7, P = 4: x1 has 4 channels, d = 8, hidden 16, output 2 * 3; the rotation 7 x 7
    let vs = VarStore::new(Device::Cpu);
    let block = CouplingBlock::new(&vs.root(), 7, 4, 1.9);
    assert_eq!(block.folded_multiply_adds(), 4 * 16 + 16 * 6 + 7 * 7);
    let cfg = FlowConfig {
        blocks: 3,
        condition_channels: 4,
        clamp: 1.9,
    };
    let flow = ConditionalFlow::new(&(vs.root() / "flow"), 7, &cfg);
    assert_eq!(flow.folded_multiply_adds(), 3 * (4 * 16 + 16 * 6 + 7 * 7));
}

#[test]
fn fresh_block_has_unit_global_scale_and_orthogonal_rotation() {
    let vs = VarStore::new(Device::Cpu);
    let block = CouplingBlock::new(&vs.root(), 7, 4, 1.9);
    let eye = block.w_perm.matmul(&block.w_perm.tr());
    assert!(common::rel_err(&eye, &Tensor::eye(7, (Kind::Float, Device::Cpu))) < 1e-5);
    assert!(
        (block.w_perm.det().double_value(&[]) - 1.0).abs() < 1e-4,
        "special orthogonal"
    );
    // zero subnet output and unit global scale: the block is the rotation alone
    tch::no_grad(|| {
        let _ = block.w2.shallow_clone().zero_();
        let _ = block.b2.shallow_clone().zero_();
    });
    let x = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
    let c = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    let (y, j) = tch::no_grad(|| block.forward(&x, &c));
    assert!(common::rel_err(&y, &x.matmul(&block.w_perm.tr())) < 1e-5);
    assert!(j.abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn flow_inverts_and_log_det_matches_autograd_jacobian() {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let flow = ConditionalFlow::new(
        &vs.root(),
        5,
        &FlowConfig {
            blocks: 4,
            condition_channels: 4,
            clamp: 1.9,
        },
    );
    // make the subnets non-trivial
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            if v.requires_grad() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.3));
            }
        }
    });
    let x = Tensor::randn([3, 5], (Kind::Double, Device::Cpu)).to_kind(Kind::Float);
    let c = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let (z, log_det) = tch::no_grad(|| flow.forward(&x, &c));
    let back = tch::no_grad(|| flow.inverse(&z, &c));
    assert!(
        common::rel_err(&back, &x) < 1e-4,
        "inverse(forward(x)) != x"
    );
    for row in 0..3 {
        let xr = x.get(row).unsqueeze(0).detach().set_requires_grad(true);
        let cr = c.get(row).unsqueeze(0);
        let mut jac = Vec::new();
        for k in 0..5 {
            let (zr, _) = flow.forward(&xr, &cr);
            let g = Tensor::run_backward(&[zr.get(0).get(k)], &[&xr], false, false);
            jac.push(g[0].get(0));
        }
        let jac = Tensor::stack(&jac, 0).to_kind(Kind::Double);
        let (_, logabsdet) = jac.slogdet();
        let ours = log_det.double_value(&[row]);
        let theirs = logabsdet.double_value(&[]);
        assert!(
            (ours - theirs).abs() < 1e-3,
            "row {row}: log-det {ours} vs autograd {theirs}"
        );
    }
}

#[test]
fn whole_map_log_prob_equals_row_log_prob() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let flow = ConditionalFlow::new(
        &vs.root(),
        6,
        &FlowConfig {
            blocks: 3,
            condition_channels: 8,
            clamp: 1.9,
        },
    );
    let fmap = Tensor::randn([2, 6, 4, 5], (Kind::Float, Device::Cpu));
    let cond = positional_rows(8, 4, 5, Device::Cpu);
    let map = tch::no_grad(|| flow.log_prob_map(&fmap, &cond));
    assert_eq!(map.size(), vec![2, 4, 5]);
    // the same through the per-row path, one image at a time
    for b in 0..2 {
        let rows = fmap.get(b).reshape([6, 20]).tr();
        let lp = tch::no_grad(|| flow.log_prob(&rows, &cond)) / 6.0;
        assert!(common::rel_err(&map.get(b).reshape([20]), &lp) < 1e-5);
    }
}

#[test]
fn positional_encoding_matches_cflow() {
    let refs = common::read_tensors(&common::fixture("flow_reference.safetensors"));
    let ours = positional_encoding_2d(128, 8, 8, Device::Cpu);
    let e = common::rel_err(&ours, &refs["positional_encoding_128x8x8"]);
    assert!(e < 1e-6, "positional encoding differs: {e:.2e}");
    // spot values: channel 0 is sin(col), channel 1 cos(col), channel 64 sin(row)
    assert!((ours.double_value(&[0, 3, 2]) - 2f64.sin()).abs() < 1e-6);
    assert!((ours.double_value(&[1, 3, 2]) - 2f64.cos()).abs() < 1e-6);
    assert!((ours.double_value(&[64, 3, 2]) - 3f64.sin()).abs() < 1e-6);
}

#[test]
fn whole_map_flows_equal_the_fiber_loop_reference() {
    tch::manual_seed(8);
    let model = clsflow::ClsFlowModel::new(common::tiny_config(), Device::Cpu).unwrap();
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let taps = tch::no_grad(|| model.features(&x));
    let fast = tch::no_grad(|| model.flow_log_prob_maps(&taps));
    let slow = tch::no_grad(|| clsflow::reference::fiber_loop_log_prob_maps(&model, &taps, 7));
    for (a, b) in fast.iter().zip(&slow) {
        assert_eq!(a.size(), b.size());
        assert!(common::rel_err(a, b) < 1e-5);
    }
}

#[test]
fn folded_flows_equal_the_training_form() {
    tch::manual_seed(12);
    let mut model = clsflow::ClsFlowModel::new(common::tiny_config(), Device::Cpu).unwrap();
    // non-trivial global affine and subnets
    tch::no_grad(|| {
        for (_, v) in model.named_variables() {
            if v.requires_grad() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.2));
            }
        }
    });
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let taps = tch::no_grad(|| model.features(&x));
    let plain = tch::no_grad(|| model.flow_log_prob_maps(&taps));
    model.fold_flows();
    let folded = tch::no_grad(|| model.flow_log_prob_maps(&taps));
    for (a, b) in plain.iter().zip(&folded) {
        assert!(
            common::rel_err(b, a) < 1e-5,
            "folded differs: {:.2e}",
            common::rel_err(b, a)
        );
    }
    // bfloat16 matmuls (CPU half precision; correct on any CPU, fast on some): the latent rows
    // and log-dets stay float32, so log p / C moves by bfloat16's rounding (2^-8 relative per
    // product, through 3 flows of 3 blocks with randomised weights here: about 1 %, up to 3.3 %
    // seen, since tests share libtorch's generator in parallel and the draw varies), no more
    model.set_flow_matmul_kind(Kind::BFloat16);
    let mixed = tch::no_grad(|| model.flow_log_prob_maps(&taps));
    for (a, b) in plain.iter().zip(&mixed) {
        assert_eq!(b.kind(), Kind::Float);
        let e = common::rel_err(b, a);
        assert!(e > 0.0 && e < 5e-2, "bfloat16 matmuls differ by {e:.2e}");
    }
}

#[test]
fn bfloat16_rotation_of_large_calls_stays_close() {
    // 112 channels on a 16x16 grid: a batch of 1 has 3.2 M rotation multiply-adds per block
    // (float32 rotation), a batch of 4 12.8 M, above LOW_ROTATION_MACS (bfloat16 rotation)
    let c = 112;
    assert!(c >= clsflow::flow::LOW_ROTATION_CHANNELS);
    assert!(
        256 * c * c < clsflow::flow::LOW_ROTATION_MACS
            && 4 * 256 * c * c >= clsflow::flow::LOW_ROTATION_MACS
    );
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let cfg = FlowConfig {
        blocks: 3,
        condition_channels: 16,
        clamp: 1.9,
    };
    let flow = ConditionalFlow::new(&vs.root(), c, &cfg);
    let folded = flow.fold(&positional_rows(16, 16, 16, Device::Cpu));
    let low = folded.with_matmul_kind(Kind::BFloat16);
    let errors = [1, 4].map(|batch| {
        let x = Tensor::randn([batch, c, 16, 16], (Kind::Float, Device::Cpu));
        let (a, b) = tch::no_grad(|| (folded.log_prob_map(&x), low.log_prob_map(&x)));
        let e = common::rel_err(&b, &a);
        assert_eq!(b.kind(), Kind::Float);
        assert!(
            e > 0.0 && e < 2e-2,
            "batch {batch}: bfloat16 differs by {e:.2e}"
        );
        e
    });
    // the rotation's rounding dominates once it runs in bfloat16 (about 25x here)
    assert!(
        errors[1] > 4.0 * errors[0],
        "the batch of 4 should take the bfloat16 rotation: errors {errors:?}"
    );
}
