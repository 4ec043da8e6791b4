//! Our ResNets use torchvision's state_dict names and shapes, so exported torchvision weights
//! load unchanged. Facts checked: torchvision's tensor counts (122 for resnet18 and 320 for
//! wide_resnet50_2, including BatchNorm `num_batches_tracked`), parameter counts, and a sample
//! of names with shapes.
mod common;

use clsflow::backbone::{ResNet, ResNetDepth};
use clsflow::weights::{is_ignorable_backbone_key, load_prefixed};
use std::collections::HashMap;
use tch::nn::VarStore;
use tch::{Device, Tensor};

fn state(depth: ResNetDepth) -> (VarStore, ResNet, HashMap<String, Vec<i64>>) {
    let vs = VarStore::new(Device::Cpu);
    let net = ResNet::new(&vs.root(), depth, true);
    let shapes = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect();
    (vs, net, shapes)
}

fn param_count(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[test]
fn resnet18_matches_torchvision() {
    let (vs, _net, shapes) = state(ResNetDepth::R18);
    let bns = shapes
        .keys()
        .filter(|k| k.ends_with("running_mean"))
        .count();
    assert_eq!(
        shapes.len() + bns,
        122,
        "torchvision resnet18 has 122 state_dict entries"
    );
    assert_eq!(
        param_count(&vs),
        11_689_512,
        "torchvision resnet18 parameter count"
    );
    for (k, s) in [
        ("conv1.weight", vec![64, 3, 7, 7]),
        ("layer1.0.conv1.weight", vec![64, 64, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![128, 64, 1, 1]),
        ("layer2.0.downsample.1.running_var", vec![128]),
        ("layer4.1.bn2.bias", vec![512]),
        ("fc.weight", vec![1000, 512]),
    ] {
        assert_eq!(shapes.get(k), Some(&s), "{k}");
    }
}

#[test]
fn wide_resnet50_2_matches_torchvision() {
    let (vs, net, shapes) = state(ResNetDepth::WideR50x2);
    let bns = shapes
        .keys()
        .filter(|k| k.ends_with("running_mean"))
        .count();
    assert_eq!(
        shapes.len() + bns,
        320,
        "torchvision wide_resnet50_2 has 320 state_dict entries"
    );
    assert_eq!(
        param_count(&vs),
        68_883_240,
        "torchvision wide_resnet50_2 parameter count"
    );
    for (k, s) in [
        ("layer1.0.conv1.weight", vec![128, 64, 1, 1]),
        ("layer1.0.conv3.weight", vec![256, 128, 1, 1]),
        ("layer2.0.conv2.weight", vec![256, 256, 3, 3]),
        ("layer3.5.conv3.weight", vec![1024, 512, 1, 1]),
        ("layer4.2.conv3.weight", vec![2048, 1024, 1, 1]),
        ("layer4.0.downsample.0.weight", vec![2048, 1024, 1, 1]),
    ] {
        assert_eq!(shapes.get(k), Some(&s), "{k}");
    }
    let taps = tch::no_grad(|| {
        net.forward_taps(&Tensor::zeros(
            [1, 3, 64, 64],
            (tch::Kind::Float, Device::Cpu),
        ))
    });
    let sizes: Vec<Vec<i64>> = taps.iter().map(|t| t.size()).collect();
    assert_eq!(
        sizes,
        vec![vec![1, 512, 8, 8], vec![1, 1024, 4, 4], vec![1, 2048, 2, 2]]
    );
}

#[test]
fn torchvision_style_file_loads_into_the_extractor() {
    // Write a file the way the README's export snippet does (with num_batches_tracked), load it.
    let (vs, _net, _) = state(ResNetDepth::R18);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach() + 1.0))
        .collect();
    tensors.push(("bn1.num_batches_tracked".into(), Tensor::from(7i64)));
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let (vs2, _net2, _) = state(ResNetDepth::R18);
    let target = VarStore::new(Device::Cpu);
    let _ = ResNet::new(&(target.root() / "backbone"), ResNetDepth::R18, false);
    load_prefixed(&target, "backbone.", &path, is_ignorable_backbone_key).unwrap();
    let got = target.variables();
    let want: HashMap<String, Tensor> = tensors.into_iter().collect();
    assert!(got["backbone.layer3.1.conv2.weight"].equal(&want["layer3.1.conv2.weight"]));
    drop(vs2);
}
