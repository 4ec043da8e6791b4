//! Detector behaviour: any image size, scores are the maxima of flow + w_s * classifier, devices,
//! regions.
mod common;

use clsflow::detector::AnomalyMap;
use clsflow::device::parse_device;
use clsflow::regions::find_regions;
use clsflow::{ClsFlowModel, Detector, DetectorOptions, Scoring};
use image::RgbImage;
use tch::Device;

fn detector(threshold: f64) -> Detector {
    tch::manual_seed(2);
    let model = ClsFlowModel::new(common::tiny_config(), Device::Cpu).unwrap();
    let scoring = Scoring {
        threshold,
        ..Scoring::default()
    };
    Detector::from_model(model, scoring, "tiny")
}

#[test]
fn detects_images_of_any_size() {
    let det = detector(0.0);
    let imgs = vec![
        RgbImage::from_fn(31, 17, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 100])),
        RgbImage::from_fn(300, 200, |x, _| image::Rgb([(x % 255) as u8, 10, 200])),
    ];
    let out = det.detect(&imgs).unwrap();
    assert_eq!(out.len(), 2);
    for d in &out {
        assert_eq!((d.fused.width, d.fused.height), (64, 64));
        assert!(
            (d.score - d.fused.max()).abs() < 1e-5,
            "score is the max of the fused map"
        );
        assert!(d.anomalous, "threshold 0: every score is above it");
        assert!(
            d.cls.data.iter().all(|&v| (0.0..=1.0).contains(&v)),
            "classifier map is a probability"
        );
        // fused = flow + w * cls with w = 1
        let i = 100;
        assert!((d.fused.data[i] - d.flow.data[i] - d.cls.data[i]).abs() < 1e-5);
    }
    let strict = detector(1e9);
    assert!(!strict.detect(&imgs[..1]).unwrap()[0].anomalous);
    assert!(det.detect(&[]).unwrap().is_empty());
}

#[test]
fn batches_of_the_wrong_shape_are_refused_by_shape() {
    let det = detector(0.0);
    for shape in [vec![3, 32, 32], vec![1, 1, 32, 32], vec![1, 3, 0, 32]] {
        let bad = tch::Tensor::zeros(shape.as_slice(), (tch::Kind::Uint8, Device::Cpu));
        let Err(err) = det.detect_batch(&bad) else {
            panic!("{shape:?} accepted")
        };
        let err = err.to_string();
        assert!(err.contains(&format!("{shape:?}")), "{err}");
        assert!(err.contains("(N, 3, H, W)"), "{err}");
    }
    let good = tch::Tensor::zeros([2, 3, 40, 24], (tch::Kind::Uint8, Device::Cpu));
    assert_eq!(det.detect_batch(&good).unwrap().scores.size(), [2]);
}

#[test]
fn the_image_score_has_its_own_weight() {
    let imgs = vec![
        RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 3) as u8, 90])
        }),
        RgbImage::from_fn(64, 64, |x, _| image::Rgb([200, (x % 7 * 30) as u8, 10])),
    ];
    let mut det = detector(0.0);
    det.set_scoring(Scoring {
        fusion_weight: 8.0,
        score_weight: 0.5,
        ..det.scoring().clone()
    });
    for d in det.detect(&imgs).unwrap() {
        let i = 333;
        assert!(
            (d.fused.data[i] - d.flow.data[i] - 8.0 * d.cls.data[i]).abs() < 1e-4,
            "the fused map uses the fusion weight"
        );
        let expected = d
            .flow
            .data
            .iter()
            .zip(&d.cls.data)
            .map(|(f, c)| f + 0.5 * c)
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (d.score - expected).abs() < 1e-4,
            "score {} is the max of flow + 0.5 cls ({expected})",
            d.score
        );
        assert!(d.score < d.fused.max(), "w_s < w gives a lower score here");
    }
}

/// With `resize = tile` a 128 x 64 image is two 64 x 64 tiles side by side (no overlap): the
/// maps keep its shape and each half is what that tile alone gives; the score is taken on the
/// stitched map. A 150 x 64 image has three overlapping tiles; a square one is one tile.
#[test]
fn tiled_input_keeps_the_images_shape() {
    tch::manual_seed(2);
    let mut config = common::tiny_config();
    config.resize = clsflow::InputResize::Tile;
    let model = ClsFlowModel::new(config, Device::Cpu).unwrap();
    let det = Detector::from_model(model, Scoring::default(), "tiny");
    let wide = RgbImage::from_fn(128, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x * y) % 256) as u8])
    });
    let d = det.detect(std::slice::from_ref(&wide)).unwrap().remove(0);
    assert_eq!((d.fused.width, d.fused.height), (128, 64));
    assert!((d.score - d.fused.max()).abs() < 1e-5);
    for (x0, half) in [(0u32, 0usize), (64, 1)] {
        let tile = image::imageops::crop_imm(&wide, x0, 0, 64, 64).to_image();
        let alone = det.detect(&[tile]).unwrap().remove(0);
        assert_eq!((alone.fused.width, alone.fused.height), (64, 64));
        let worst = (0..64 * 64)
            .map(|i| {
                let (x, y) = (i % 64, i / 64);
                let j = y * 128 + half * 64 + x;
                (d.flow.data[j] - alone.flow.data[i])
                    .abs()
                    .max((d.cls.data[j] - alone.cls.data[i]).abs())
            })
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "tile {half}: {worst}");
    }
    assert_eq!(det.input_dims(150, 64).unwrap(), (150, 64));
    assert_eq!(det.input_dims(300, 128).unwrap(), (150, 64));
    let odd = RgbImage::from_fn(300, 128, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let d = det.detect(&[odd]).unwrap().remove(0);
    assert_eq!((d.fused.width, d.fused.height), (150, 64));
    // normalised input of the wrong short side is refused with the shapes it expects
    let e = det
        .detect_input(&tch::Tensor::zeros(
            [1, 3, 60, 150],
            (tch::Kind::Float, Device::Cpu),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("short side of 64") && e.contains("60, 150"),
        "{e}"
    );
}

#[test]
fn device_strings() {
    assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    assert!(parse_device("auto").is_ok());
    let e = parse_device("tpu").unwrap_err().to_string();
    assert!(e.contains("tpu") && e.contains("expected auto, cpu"), "{e}");
    if !tch::Cuda::is_available() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("CUDA is not available"), "{e}");
    }
}

#[test]
fn half_on_the_cpu_is_bfloat16_flow_matmuls_or_a_clear_error() {
    if !clsflow::device::cpu_has_native_bf16() {
        let e = Detector::load(
            "x",
            &DetectorOptions {
                device: clsflow::DeviceSpec::Cpu,
                half: true,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("AVX512-BF16") && e.contains("\"cpu\""), "{e}");
        eprintln!("skipped the bfloat16 comparison: this CPU has no native bfloat16 matmuls");
        return;
    }
    let img = vec![RgbImage::from_fn(96, 80, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    })];
    // one model for both (tests run in parallel and share libtorch's random generator)
    let det = detector(0.0);
    let full = det.detect(&img).unwrap().remove(0);
    let half = det.with_half().unwrap();
    assert_eq!(half.device(), Device::Cpu);
    let half = half.detect(&img).unwrap().remove(0);
    let range = full.flow.max() - full.flow.data.iter().copied().fold(f32::INFINITY, f32::min);
    let worst = full
        .flow
        .data
        .iter()
        .zip(&half.flow.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst > 0.0,
        "the bfloat16 path ran (maps are not bit-identical)"
    );
    assert!(
        worst < 0.02 * range,
        "bfloat16 flow map off by {worst} over a range of {range}"
    );
    assert_eq!(
        full.cls.data, half.cls.data,
        "the classifier stays in float32"
    );
}

#[test]
fn regions_are_eight_connected_components_in_frame_coordinates() {
    let mut data = vec![0.0f32; 10 * 8];
    // a diagonal pair (one 8-connected region) and a separate 2x2 block
    data[8 + 1] = 5.0;
    data[8 * 2 + 2] = 3.0;
    for (x, y) in [(5, 6), (6, 6), (5, 7), (6, 7)] {
        data[8 * y + x] = 2.0;
    }
    let map = AnomalyMap {
        width: 8,
        height: 10,
        data,
    };
    let regions = find_regions(&map, 1.0, 1);
    assert_eq!(regions.len(), 2);
    let r = &regions[0];
    assert_eq!((r.x, r.y, r.width, r.height, r.area), (1, 1, 2, 2, 2));
    assert_eq!(r.max_score, 5.0);
    assert_eq!(r.mean_score, 4.0);
    let b = &regions[1];
    assert_eq!((b.x, b.y, b.width, b.height, b.area), (5, 6, 2, 2, 4));
    // map 8x10 -> frame 80x100: scale 10
    assert_eq!(b.scaled_box(8, 10, 80, 100), (50, 60, 20, 20));
    assert_eq!(
        find_regions(&map, 1.0, 3).len(),
        1,
        "min_area drops the small region"
    );
    let resized = map.resized(16, 20);
    assert_eq!(
        (resized.width, resized.height, resized.data.len()),
        (16, 20, 320)
    );
}

#[test]
fn shorter_decoders_give_full_size_maps() {
    for stages in 1..=4usize {
        let mut cfg = common::tiny_config();
        cfg.decoder.stage_channels = vec![8; stages];
        cfg.decoder.stage_blocks = vec![1; stages];
        let model = ClsFlowModel::new(cfg, Device::Cpu).unwrap();
        let x = tch::Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, Device::Cpu));
        let taps = tch::no_grad(|| model.features(&x));
        let native = tch::no_grad(|| model_native(&model, &taps));
        assert_eq!(
            native,
            64 >> (4 - stages),
            "{stages} stages end at stride {}",
            1 << (4 - stages)
        );
        let logits = tch::no_grad(|| model.cls_logits(&taps, false));
        assert_eq!(logits.size(), vec![1, 1, 64, 64]);
    }
    let mut bad = common::tiny_config();
    bad.decoder.stage_blocks = vec![1];
    assert!(
        ClsFlowModel::new(bad, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("1 to 4 stages")
    );
}

fn model_native(model: &ClsFlowModel, taps: &[tch::Tensor; 3]) -> i64 {
    model.decoder().forward_native(taps, false).size()[2]
}
