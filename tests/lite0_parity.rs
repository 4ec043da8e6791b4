//! The Lite0 ImageNet weights load right: taps and logits match the reference implementation
//! (timm) on the fixture photo, and the photo is classified as espresso. Lite1 and Lite2, for
//! which no reference tensors exist, load without a missing or extra tensor and classify the
//! same photo as espresso too, which a network built wrong around those weights would not.
mod common;

use clsflow::backbone::{EfficientNetLite, LiteVariant};
use clsflow::weights::load_prefixed;
use tch::nn::VarStore;
use tch::{Device, Kind};

fn lite0_with_head() -> (VarStore, EfficientNetLite) {
    let vs = VarStore::new(Device::Cpu);
    let net = EfficientNetLite::new(&(vs.root() / "net"), LiteVariant::Lite0, true);
    load_prefixed(&vs, "net.", &common::lite0_weights(), |k| {
        k.ends_with("num_batches_tracked")
    })
    .expect("weights load");
    (vs, net)
}

#[test]
fn taps_and_logits_match_reference() {
    let refs = common::read_tensors(&common::fixture("lite0_reference.safetensors"));
    let (_vs, net) = lite0_with_head();
    let input = &refs["input"];
    // our own preprocessing gives the reference input from the uint8 image
    let img = refs["image_u8"].permute([2, 0, 1]).unsqueeze(0);
    let norm = clsflow::BackboneKind::EfficientnetLite0.normalization();
    let ours = clsflow::preprocess::prepare_batch(&img, 256, &norm, Kind::Float).unwrap();
    assert!(
        common::rel_err(&ours, input) < 1e-5,
        "preprocessing differs from the reference input"
    );

    check_against_reference(&net, input, &refs, "as loaded");
    // inference form: BatchNorms folded into the convolutions, channels-last input (as
    // `Backbone::forward` lays it out)
    let (_vs, mut folded) = lite0_with_head();
    folded.set_batch_norms_folded(true);
    let nhwc = input
        .permute([0, 2, 3, 1])
        .contiguous()
        .permute([0, 3, 1, 2]);
    check_against_reference(&folded, &nhwc, &refs, "folded, channels-last");
    // unfolded again (as before a joint stage-1 epoch), it is the loaded network to the bit
    folded.set_batch_norms_folded(false);
    let again = tch::no_grad(|| folded.forward_taps(input));
    let loaded = tch::no_grad(|| net.forward_taps(input));
    for (l, (a, b)) in again.iter().zip(&loaded).enumerate() {
        assert!(a.equal(b), "tap {l} differs after unfolding");
    }
}

fn check_against_reference(
    net: &EfficientNetLite,
    input: &tch::Tensor,
    refs: &std::collections::HashMap<String, tch::Tensor>,
    what: &str,
) {
    let taps = tch::no_grad(|| net.forward_taps(input));
    for (tap, name) in taps.iter().zip(["stride8", "stride16", "stride32"]) {
        let r = &refs[name];
        assert_eq!(tap.size(), r.size(), "{what}: {name} shape");
        let e = common::rel_err(tap, r);
        assert!(
            e < 1e-4,
            "{what}: {name}: relative error {e:.2e} exceeds 1e-4"
        );
    }
    let logits = tch::no_grad(|| net.imagenet_logits(input).unwrap());
    let e = common::rel_err(&logits, &refs["logits"]);
    assert!(e < 1e-4, "{what}: logits: relative error {e:.2e}");
    let top: Vec<i64> = Vec::try_from(logits.topk(3, 1, true, true).1.flatten(0, -1)).unwrap();
    assert_eq!(
        top,
        vec![967, 968, 504],
        "{what}: top-3 ImageNet classes (espresso, cup, coffee mug)"
    );
    let p = logits.softmax(1, Kind::Float).double_value(&[0, 967]);
    assert!((p - 0.76).abs() < 0.01, "{what}: espresso probability {p}");
}

#[test]
fn wrong_weights_fail_loudly() {
    // A ResNet-shaped model cannot load Lite0 weights: missing tensors are named.
    let vs = VarStore::new(Device::Cpu);
    let _net = clsflow::backbone::ResNet::new(
        &(vs.root() / "net"),
        clsflow::backbone::ResNetDepth::R18,
        false,
    );
    let err = load_prefixed(&vs, "net.", &common::lite0_weights(), |_| false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("missing") && msg.contains("efficientnet_lite0.safetensors"),
        "{msg}"
    );
}

#[test]
fn larger_lite_variants_load_and_classify_the_photo() {
    let refs = common::read_tensors(&common::fixture("lite0_reference.safetensors"));
    for (n, variant, taps) in [
        (1, LiteVariant::Lite1, [40, 112, 320]),
        (2, LiteVariant::Lite2, [48, 120, 352]),
    ] {
        let vs = VarStore::new(Device::Cpu);
        let mut net = EfficientNetLite::new(&(vs.root() / "net"), variant, true);
        load_prefixed(&vs, "net.", &common::lite_weights(n), |k| {
            k.ends_with("num_batches_tracked")
        })
        .unwrap_or_else(|e| panic!("Lite{n} weights: {e}"));
        let input = &refs["input"];
        let out = tch::no_grad(|| net.forward_taps(input));
        for (tap, (c, side)) in out.iter().zip(taps.iter().zip([32, 16, 8])) {
            assert_eq!(tap.size(), vec![1, *c, side, side], "Lite{n} tap shape");
        }
        assert_eq!(variant.tap_channels(), taps);
        let logits = tch::no_grad(|| net.imagenet_logits(input).unwrap());
        let p = logits.softmax(1, Kind::Float);
        let top = p.argmax(1, false).int64_value(&[0]);
        let p_top = p.double_value(&[0, top]);
        assert_eq!(
            top, 967,
            "Lite{n}: top-1 class {top} (p {p_top:.2}), not espresso"
        );
        assert!(p_top > 0.3, "Lite{n}: espresso only at p {p_top:.2}");
        // folded for inference, the same taps
        net.set_batch_norms_folded(true);
        let folded = tch::no_grad(|| net.forward_taps(input));
        for (a, b) in folded.iter().zip(&out) {
            let e = common::rel_err(a, b);
            assert!(e < 1e-4, "Lite{n}: folded taps differ by {e:.2e}");
        }
    }
}
