//! The `clsflow-train` program as a user runs it: from any folder, with clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the program in `cwd` with `args`.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clsflow-train"));
    cmd.current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("clsflow-train runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small demo category under `dir`.
fn demo(dir: &Path) -> PathBuf {
    let data = dir.join("plates");
    let o = run(
        dir,
        &[
            "demo-data",
            "--out",
            "plates",
            "--train",
            "12",
            "--test-good",
            "2",
            "--per-defect",
            "1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    data
}

/// Overrides that make the built-in config tiny (with `--backbone efficientnet_lite0`).
const TINY: [&str; 10] = [
    "--input-size",
    "64",
    "--frozen-epochs",
    "1",
    "--joint-epochs",
    "0",
    "--flow-epochs",
    "1",
    "--vectors-per-epoch",
    "2048",
];

#[test]
fn trains_from_any_folder_with_the_builtin_config() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    // no --config, run outside the checkout: the built-in config, the checkout's weights
    let mut args = vec!["train", "--data", "plates", "--out", "run"];
    args.extend(TINY);
    args.extend(["--backbone", "efficientnet_lite0"]);
    let o = run(dir.path(), &args, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("run/model.clsflow").is_file());

    let o = run(dir.path(), &["config", "--print"], &[]);
    assert!(o.status.success());
    let printed = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        printed,
        std::fs::read_to_string(repo().join("configs/cpu-fast.toml")).unwrap()
    );

    // predict on the test folder, from the same folder
    let o = run(
        dir.path(),
        &[
            "predict",
            "--model",
            "run/model.clsflow",
            "--input",
            "plates/test",
            "--out",
            "pred",
            "--save",
            "heatmap,mask",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let lines = std::fs::read_to_string(dir.path().join("pred/predictions.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5, "2 good and 3 defective images");
    assert!(dir.path().join("pred/crack/000.heatmap.png").is_file());
    assert!(dir.path().join("pred/crack/000.mask.png").is_file());
    assert!(!dir.path().join("pred/crack/000.overlay.png").exists());
}

#[test]
fn missing_weights_name_every_place_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // no ResNet-18 weights anywhere
    let mut args = vec!["train", "--data", "plates", "--out", "run"];
    args.extend(TINY);
    args.extend(["--backbone", "resnet18"]);
    let o = run(
        dir.path(),
        &args,
        &[("CLSFLOW_MODELS_DIR", empty.to_str().unwrap())],
    );
    assert!(!o.status.success());
    let msg = text(&o);
    for place in [
        empty.join("resnet18.safetensors"),
        repo().join("models/resnet18.safetensors"),
    ] {
        let shown = place.display().to_string().replace("/training/..", "");
        assert!(
            msg.contains(&shown) || msg.contains(&place.display().to_string()),
            "{} not listed in: {msg}",
            place.display()
        );
    }
    assert!(
        msg.contains("share folder") && msg.contains("--weights"),
        "{msg}"
    );
}
