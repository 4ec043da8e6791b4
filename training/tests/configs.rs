//! Every shipped config parses and validates; paper configs carry the authors' settings.

use clap::Parser;
use clsflow::BackboneKind;
use clsflow_train::config::{Overrides, TrainConfig};
use std::path::PathBuf;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn all_configs_load() {
    let mut n = 0;
    for dir in [configs(), configs().join("paper")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                TrainConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
    }
    assert_eq!(
        n,
        3 + 15,
        "cpu-fast, demo, test-tiny and the 15 MVTec AD paper configs"
    );
}

#[test]
fn the_builtin_config_is_cpu_fast() {
    assert_eq!(
        TrainConfig::builtin(),
        TrainConfig::load(&configs().join("cpu-fast.toml")).unwrap()
    );
    assert_eq!(
        TrainConfig::load_or_builtin(None).unwrap(),
        TrainConfig::builtin()
    );
}

#[test]
fn paper_settings_match_the_table() {
    let c = TrainConfig::load(&configs().join("paper/screw.toml")).unwrap();
    assert_eq!(c.model.backbone, BackboneKind::WideResnet50_2);
    assert_eq!(
        (
            c.stage1.batch_size,
            c.stage1.lr,
            c.stage1.frozen_epochs,
            c.stage1.joint_epochs,
            c.stage1.repeat
        ),
        (16, 5e-4, 35, 5, 5)
    );
    assert_eq!(c.calibration.fusion_weight, Some(1.0));
    let c = TrainConfig::load(&configs().join("paper/zipper.toml")).unwrap();
    assert_eq!(c.calibration.fusion_weight, Some(0.15));
    assert_eq!(c.stage2.epochs, 200);
    let d = c.model_config().decoder;
    assert_eq!(
        (
            d.head_channels,
            d.stage_channels.clone(),
            d.stage_blocks.clone()
        ),
        (1024, vec![256, 128, 64, 32], vec![3, 6, 4, 3]),
        "the paper's decoder for WRN50-2"
    );
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    o: Overrides,
}

#[test]
fn command_line_overrides_win_and_are_validated() {
    let mut c = TrainConfig::load(&configs().join("cpu-fast.toml")).unwrap();
    let cli = Cli::parse_from([
        "x",
        "--frozen-epochs",
        "2",
        "--flow-epochs",
        "3",
        "--seed",
        "9",
        "--textures",
        "/tmp/a",
        "--textures",
        "/tmp/b",
    ]);
    cli.o.apply(&mut c).unwrap();
    assert_eq!((c.stage1.frozen_epochs, c.stage2.epochs, c.seed), (2, 3, 9));
    assert_eq!(c.data.textures.len(), 2);
    let bad = Cli::parse_from(["x", "--input-size", "100"]);
    let err = bad.o.apply(&mut c).unwrap_err();
    assert!(format!("{err:#}").contains("multiple of 32"), "{err:#}");
    let bad = Cli::parse_from(["x", "--input-size", "-64"]);
    let err = bad.o.apply(&mut c).unwrap_err();
    assert!(format!("{err:#}").contains("got -64"), "{err:#}");
    let err = load_edited_default("fiber_batch", "fibre_batch");
    assert!(err.contains("fibre_batch"), "unknown keys are named: {err}");
}

#[test]
fn weights_are_chosen_unless_fixed_and_must_be_usable() {
    let c = TrainConfig::load(&configs().join("cpu-fast.toml")).unwrap();
    assert_eq!(
        (c.calibration.fusion_weight, c.calibration.score_weight),
        (None, None)
    );
    let mut c2 = c.clone();
    let cli = Cli::parse_from(["x", "--score-weight", "0.5"]);
    cli.o.apply(&mut c2).unwrap();
    assert_eq!(c2.calibration.score_weight, Some(0.5));
    let bad = Cli::parse_from(["x", "--score-weight", "-2"]);
    let err = format!("{:#}", bad.o.apply(&mut c2.clone()).unwrap_err());
    assert!(err.contains("score_weight = -2"), "{err}");
    let err = load_edited_default("fusion_weights = [0.05,", "fusion_weights = [nan,");
    assert!(err.contains("fusion_weights: NaN"), "{err}");
}

/// Loads `configs/cpu-fast.toml` with `from` replaced by `to`, expecting an error; returns it.
fn load_edited_default(from: &str, to: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edited.toml");
    let text = std::fs::read_to_string(configs().join("cpu-fast.toml")).unwrap();
    assert!(text.contains(from), "cpu-fast.toml has no {from:?}");
    std::fs::write(&p, text.replace(from, to)).unwrap();
    format!("{:#}", TrainConfig::load(&p).unwrap_err())
}

#[test]
fn defect_kind_rates_must_leave_room_for_texture_blends() {
    let err = load_edited_default("line_probability = 0.2", "line_probability = 0.9");
    assert!(
        err.contains("line_probability (0.9)") && err.contains("smooth_probability (0.2)"),
        "{err}"
    );
    // the paper configs keep the method's synthesis alone
    let paper = TrainConfig::load(&configs().join("paper/bottle.toml")).unwrap();
    assert_eq!(
        (paper.synth.line_probability, paper.synth.smooth_probability),
        (0.0, 0.0)
    );
}

#[test]
fn flow_regularisers_are_validated() {
    let err = load_edited_default(
        "feature_noise = [0.0, 0.0, 0.1]",
        "feature_noise = [0.0, 1.5, 0.1]",
    );
    assert!(
        err.contains("stage2.feature_noise values must be in [0, 1], got 1.5"),
        "{err}"
    );
    let err = load_edited_default(
        "fiber_batch = 256",
        "fiber_batch = 256\nweight_decay = -1e-4",
    );
    assert!(
        err.contains("stage2.weight_decay must be >= 0, got -0.0001"),
        "{err}"
    );
    // the paper configs keep the paper's unregularised flows
    let paper = TrainConfig::load(&configs().join("paper/bottle.toml")).unwrap();
    assert_eq!(
        (paper.stage2.weight_decay, paper.stage2.feature_noise),
        (0.0, [0.0; 3])
    );
}

#[test]
fn backbone_override_reshapes_the_model() {
    let mut c = TrainConfig::load(&configs().join("cpu-fast.toml")).unwrap();
    assert_eq!(
        c.model.backbone,
        BackboneKind::EfficientnetLite2,
        "the default"
    );
    let cli = Cli::parse_from(["x", "--backbone", "efficientnet_lite0"]);
    cli.o.apply(&mut c).unwrap();
    let m = c.model_config();
    assert_eq!(m.backbone, BackboneKind::EfficientnetLite0);
    assert_eq!(m.decoder.head_channels, 160, "half of Lite0's deepest tap");
    let w = c
        .weights_path()
        .expect("setup.sh installs the Lite0 weights");
    assert!(
        w.ends_with("efficientnet_lite0.safetensors"),
        "{}",
        w.display()
    );
    let err = Cli::try_parse_from(["x", "--backbone", "resnet50"])
        .err()
        .expect("an unknown backbone is refused")
        .to_string();
    assert!(
        err.contains("resnet50") && err.contains("efficientnet_lite2"),
        "{err}"
    );
}

#[test]
fn removed_calibration_settings_load_when_neutral_and_are_named_otherwise() {
    let text = std::fs::read_to_string(configs().join("demo.toml")).unwrap();
    let with = |line: &str| {
        text.replace(
            "tap_reference = \"auto\"",
            &format!("tap_reference = \"auto\"\n{line}"),
        )
    };
    // the neutral values, as configs and runs of earlier versions stored them
    let old = with(
        "tap_aggregation = \"auto\"\nscore_pools = []\ncut_paste_guard = false\nfaint_contrast = 0.0",
    );
    let loaded = TrainConfig::parse(&old).unwrap();
    assert!(
        clsflow_train::train::config_differences(&loaded, &TrainConfig::parse(&text).unwrap())
            .is_empty()
    );
    TrainConfig::parse(&with("tap_aggregation = \"sum\"")).unwrap();
    for (line, named) in [
        ("tap_aggregation = \"mean\"", "tap_aggregation = \"mean\""),
        ("tap_aggregation = \"max\"", "tap_aggregation = \"max\""),
        ("score_pools = [9, 17]", "score_pools = [9, 17]"),
        ("cut_paste_guard = true", "cut_paste_guard = true"),
        ("faint_contrast = 0.3", "faint_contrast = 0.3"),
    ] {
        let e = format!("{:#}", TrainConfig::parse(&with(line)).unwrap_err());
        assert!(e.contains(named) && e.contains("no longer"), "{line}: {e}");
    }
}
