//! The `clsflow-train` program as a user runs it: from any folder, with clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::repo;

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

/// `train` with the tiny test config on `data` into `out`, more epochs than the default so that
/// an interrupt finds it busy; extra arguments appended.
fn tiny_train(dir: &Path, data: &str, out: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clsflow-train"));
    cmd.current_dir(dir).args([
        "train",
        "--config",
        repo().join("configs/test-tiny.toml").to_str().unwrap(),
        "--data",
        data,
        "--out",
        out,
        "--frozen-epochs",
        "3",
        "--joint-epochs",
        "2",
        "--flow-epochs",
        "3",
    ]);
    cmd.args(extra);
    cmd
}

/// A folder with the small demo category (`plates`) and a finished tiny run on it (`run`).
fn trained_demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let o = tiny_train(dir.path(), "plates", "run", &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    dir
}

/// Starts `cmd` and returns once the run has begun (its stderr says how many training images it
/// has: the Ctrl-C handler is in place; before it, SIGINT's default would apply), with a thread
/// that collects everything the run prints on stderr.
fn start_run(cmd: &mut Command) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("training images") {
                let _ = tx.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
    (child, reader)
}

/// [`start_run`], `delay_ms` more, one SIGINT; the exit status and the run's stderr.
fn interrupt_after_start(cmd: &mut Command, delay_ms: u64) -> (std::process::ExitStatus, String) {
    let (mut child, reader) = start_run(cmd);
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    sigint(&child);
    let status = child.wait().unwrap();
    (status, reader.join().unwrap())
}

fn sigint(child: &std::process::Child) {
    // SAFETY: kill(2) on a child process id this test owns
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

/// Ctrl-C twice in quick succession, at different moments of a real training run, 20 times:
/// the trainer stops with exit status 130 every time (never a crash or a panic), and the last
/// run's saved progress resumes to a finished model.
#[test]
fn a_second_ctrl_c_stops_at_once_without_a_crash() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let mut stopped = 0;
    for i in 0..20 {
        let out = format!("run{i}");
        let (mut child, reader) = start_run(&mut tiny_train(dir.path(), "plates", &out, &[]));
        // from the first epochs to stage 2 (the whole run takes several seconds)
        std::thread::sleep(std::time::Duration::from_millis(50 + 200 * i));
        sigint(&child);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        let err = reader.join().unwrap();
        assert!(
            status.signal().is_none(),
            "run {i}: killed by signal {:?}: {err}",
            status.signal()
        );
        assert!(!err.contains("panicked"), "run {i}: {err}");
        match status.code() {
            Some(130) => stopped += 1,
            // finished before the signals came
            Some(0) => assert!(dir.path().join(&out).join("model.clsflow").is_file()),
            c => panic!("run {i}: exit status {c:?}: {err}"),
        }
    }
    assert!(stopped >= 15, "only {stopped} of 20 runs were interrupted");
    // the last interrupted run resumes to a loadable model
    let last = (0..20)
        .rev()
        .map(|i| format!("run{i}"))
        .find(|r| !dir.path().join(r).join("model.clsflow").exists())
        .unwrap();
    let o = tiny_train(dir.path(), "plates", &last, &["--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join(&last).join("model.clsflow").is_file());
}

/// One Ctrl-C: the current step finishes, progress is saved, and the exit status is 130.
#[test]
fn one_ctrl_c_saves_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let (status, err) =
        interrupt_after_start(&mut tiny_train(dir.path(), "plates", "run", &[]), 500);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(dir.path().join("run/state.json").is_file());
}

/// Unreadable training images are named on stderr even when it is not a terminal, left out of
/// the run's lists, and listed with their errors in training.json; eval names its own.
#[test]
fn skipped_files_are_always_reported() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    for i in 0..4 {
        std::fs::write(
            dir.path().join(format!("plates/train/good/corrupt{i}.png")),
            b"\x89PNG\r\n\x1a\n broken",
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("plates/test/crack/corrupt.png"), b"nope").unwrap();
    let o = tiny_train(dir.path(), "plates", "run", &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for i in 0..4 {
        assert!(err.contains(&format!("corrupt{i}.png")), "{err}");
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/training.json")).unwrap(),
    )
    .unwrap();
    let skipped = summary["skipped_files"].as_array().unwrap();
    assert_eq!(skipped.len(), 4);
    assert!(
        skipped
            .iter()
            .all(|s| s["error"].as_str().unwrap().contains("corrupt"))
    );
    assert_eq!(
        summary["train_images"].as_u64().unwrap() + summary["holdout_images"].as_u64().unwrap(),
        12,
        "the 12 readable images only"
    );
    let state = std::fs::read_to_string(dir.path().join("run/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    for list in ["train", "holdout"] {
        assert!(
            !state[list].to_string().contains("corrupt"),
            "{list} lists an unreadable file"
        );
    }
    let o = run(
        dir.path(),
        &[
            "eval",
            "--model",
            "run/model.clsflow",
            "--data",
            "plates",
            "--out",
            "report",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("corrupt.png"), "{}", text(&o));
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(
        md.contains("1 file(s) skipped") && md.contains("corrupt.png"),
        "{md}"
    );
    let json = std::fs::read_to_string(dir.path().join("report/report.json")).unwrap();
    assert!(json.contains("corrupt.png"));
}

/// Work that cannot succeed is refused before any is done, and leaves no output folder.
#[test]
fn impossible_work_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let o = tiny_train(dir.path(), "plates", "zero", &["--vectors-per-epoch", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("vectors_per_epoch = 0"), "{}", text(&o));
    assert!(
        !dir.path().join("zero").exists(),
        "no folder for refused work"
    );
    let o = tiny_train(dir.path(), "missing", "nodata", &[])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("missing") && msg.contains("No such file"),
        "{msg}"
    );
    assert!(
        !dir.path().join("nodata").exists(),
        "no folder for refused work"
    );
    let o = tiny_train(
        dir.path(),
        "plates",
        "notex",
        &["--textures", "/no/textures"],
    )
    .output()
    .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("/no/textures"),
        "{}",
        text(&o)
    );
    assert!(
        !dir.path().join("notex").exists(),
        "no folder for refused work"
    );
    // an OS error is said once
    std::fs::create_dir_all(dir.path().join("taken/report.json")).unwrap();
    let o = tiny_train(dir.path(), "plates", "run", &[])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        dir.path(),
        &[
            "eval",
            "--model",
            "run/model.clsflow",
            "--data",
            "plates",
            "--out",
            "taken",
        ],
        &[],
    );
    let msg = text(&o);
    assert!(!o.status.success());
    assert_eq!(msg.matches("os error").count(), 1, "{msg}");
}

/// A folder that holds a run is never silently reused: a fresh run is refused, --overwrite
/// keeps the old model until the new one is written, and --resume must match the stored run.
#[test]
fn runs_in_use_are_protected() {
    let dir = trained_demo();
    let model = dir.path().join("run/model.clsflow");
    let first = std::fs::read(&model).unwrap();
    let o = tiny_train(dir.path(), "plates", "run", &[])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--overwrite") && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        first,
        "the model is untouched"
    );

    // --overwrite, interrupted at once: the old model is still there, as model.clsflow.bak
    let (status, err) = interrupt_after_start(
        &mut tiny_train(dir.path(), "plates", "run", &["--overwrite", "--seed", "2"]),
        200,
    );
    if status.code() == Some(130) {
        let bak = dir.path().join("run/model.clsflow.bak");
        assert_eq!(
            std::fs::read(&bak).unwrap(),
            first,
            "kept until the new one is written"
        );
        assert!(!model.exists());
        // --resume with other data or another seed is refused with the difference named
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let o = run(
            dir.path(),
            &[
                "demo-data",
                "--out",
                "other/plates",
                "--train",
                "4",
                "--test-good",
                "0",
                "--per-defect",
                "0",
            ],
            &[],
        );
        assert!(o.status.success());
        let o = tiny_train(
            dir.path(),
            "other/plates",
            "run",
            &["--resume", "--seed", "2"],
        )
        .output()
        .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains("other/plates"), "{}", text(&o));
        let o = tiny_train(dir.path(), "plates", "run", &["--resume", "--seed", "3"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains("seed: stored 2, given 3"), "{}", text(&o));
        let o = tiny_train(dir.path(), "plates", "run", &["--resume", "--seed", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    } else {
        assert!(status.success(), "{err}");
    }
    assert!(model.is_file());
    assert!(
        !dir.path().join("run/model.clsflow.bak").exists(),
        "dropped once replaced"
    );
    assert_ne!(std::fs::read(&model).unwrap(), first, "seed 2's model");
}

/// The one-image warning names the holdout fraction the config gave.
#[test]
fn the_no_holdout_warning_names_the_configured_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "demo-data",
            "--out",
            "two",
            "--train",
            "2",
            "--test-good",
            "0",
            "--per-defect",
            "0",
        ],
        &[],
    );
    assert!(o.status.success());
    let o = tiny_train(dir.path(), "two", "run", &[]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let msg = text(&o);
    assert!(msg.contains("holdout_fraction 0.2"), "{msg}");
}

/// `recalibrate` gives a finished run's calibration again with its own settings, other
/// thresholds with others and fixed weights on request, leaving the run as it was.
#[test]
fn recalibrate_a_finished_run() {
    let dir = trained_demo();
    // `recalibrate --run run --out OUT` with more arguments
    let recalibrate = |out: &str, more: &[&str]| {
        let mut args = vec!["recalibrate", "--run", "run", "--out", out];
        args.extend(more);
        let o = run(dir.path(), &args, &[]);
        assert!(o.status.success(), "{}", text(&o));
    };
    recalibrate("same", &[]);
    let scoring = |f: &str| -> serde_json::Value {
        let t = std::fs::read_to_string(dir.path().join(f).join("training.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&t).unwrap()["calibration"]["scoring"].clone()
    };
    assert_eq!(
        scoring("run"),
        scoring("same"),
        "the run's own settings, the same result"
    );
    let cfg = std::fs::read_to_string(repo().join("configs/test-tiny.toml"))
        .unwrap()
        .replace("[calibration]", "[calibration]\nthreshold_sigmas = 9.0");
    std::fs::write(dir.path().join("other.toml"), cfg).unwrap();
    recalibrate("other", &["--config", "other.toml"]);
    let (a, b) = (scoring("run"), scoring("other"));
    assert!(b["threshold"].as_f64().unwrap() >= a["threshold"].as_f64().unwrap());
    // the flow branch alone, on the run's own flow reference, thresholds made for it
    recalibrate("flow", &["--fusion-weight", "0", "--score-weight", "0"]);
    let f = scoring("flow");
    assert_eq!(
        (f["fusion_weight"].as_f64(), f["score_weight"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(
        f["tap_offsets"], a["tap_offsets"],
        "the run's flow reference"
    );
    assert_ne!(f["threshold"], a["threshold"]);
    // a recalibrated model is a run in turn: it keeps its state
    let o = run(
        dir.path(),
        &["recalibrate", "--run", "flow", "--out", "again"],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(scoring("again")["fusion_weight"].as_f64(), Some(0.0));
    let o = run(
        dir.path(),
        &["recalibrate", "--run", "plates", "--out", "x"],
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("state.json"),
        "{}",
        text(&o)
    );
}

/// `update` teaches a finished run more good images: the flows train on, the classifier and
/// extractor stay, the model is calibrated anew into another folder, the run stays as it was,
/// and `eval` leaves the added images out of the test split. Bad input gets a clear error.
#[test]
fn update_a_finished_run_with_confirmed_good_images() {
    let dir = trained_demo();
    let run_model = std::fs::read(dir.path().join("run/model.clsflow")).unwrap();
    // an operator's folder of confirmed false alarms, as snapshots leave them: a frame, its
    // overlay, an unreadable file; and one image that the run already trained on
    let confirmed = dir.path().join("confirmed");
    std::fs::create_dir(&confirmed).unwrap();
    let frame = dir.path().join("plates/test/good/000.png");
    std::fs::copy(&frame, confirmed.join("snapshot-1-det-1.png")).unwrap();
    std::fs::copy(&frame, confirmed.join("snapshot-1-det-1.overlay.png")).unwrap();
    std::fs::write(confirmed.join("broken.png"), b"not a png").unwrap();
    let trained_on = std::fs::read_dir(dir.path().join("plates/train/good"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let update = |args: &[&str]| {
        let mut all = vec!["update", "--run", "run"];
        all.extend(args);
        run(dir.path(), &all, &[])
    };
    let o = update(&[
        "--good",
        "confirmed",
        "--good",
        "plates/test/good/000.png",
        "--good",
        trained_on.to_str().unwrap(),
        "--out",
        "updated",
    ]);
    let msg = text(&o);
    assert!(o.status.success(), "{msg}");
    assert!(
        msg.contains("1 overlay image(s) of snapshots left out"),
        "{msg}"
    );
    assert!(
        msg.contains("1 image(s) left out: the run has them already"),
        "{msg}"
    );
    assert!(msg.contains("1 unreadable image(s) left out"), "{msg}");
    assert!(msg.contains("update finished"), "{msg}");
    assert_eq!(
        std::fs::read(dir.path().join("run/model.clsflow")).unwrap(),
        run_model,
        "the run stays as it was"
    );
    let summary = |f: &str| -> serde_json::Value {
        let t = std::fs::read_to_string(dir.path().join(f).join("training.json")).unwrap();
        serde_json::from_str(&t).unwrap()
    };
    let (r, u) = (summary("run"), summary("updated"));
    // the frame and the test image are the same picture at two paths: both are added
    assert_eq!(u["update"]["added"].as_array().unwrap().len(), 3, "{u}");
    assert_eq!(
        u["train_images"].as_u64().unwrap(),
        r["train_images"].as_u64().unwrap() + 2,
        "the two readable images join the run's"
    );
    assert_eq!(
        u["holdout_images"], r["holdout_images"],
        "the run's held-out images"
    );
    // a quarter of the run's 3 flow epochs is less than one: one epoch, at a tenth of the rate
    assert_eq!(u["config"]["stage2"]["epochs"], 1);
    let lr = |s: &serde_json::Value| s["config"]["stage2"]["lr"].as_f64().unwrap();
    assert!((lr(&u) - lr(&r) / 10.0).abs() < 1e-12);
    assert_eq!(
        u["stage1_losses"], r["stage1_losses"],
        "stage 1 is the run's"
    );
    assert!(u["update"]["repeat"].as_u64().unwrap() >= 1);
    assert_ne!(
        u["calibration"]["scoring"]["threshold"], r["calibration"]["scoring"]["threshold"],
        "calibrated anew on the changed flows"
    );

    // eval leaves the added test image out and says so
    let o = run(
        dir.path(),
        &[
            "eval",
            "--model",
            "updated/model.clsflow",
            "--data",
            "plates",
            "--out",
            "report",
        ],
        &[],
    );
    let msg = text(&o);
    assert!(o.status.success(), "{msg}");
    assert!(
        msg.contains("left out 1 test image(s) that the model trained on"),
        "{msg}"
    );
    let csv = std::fs::read_to_string(dir.path().join("report/scores.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 1 + 3,
        "header, 1 good and 3 defective: {csv}"
    );
    assert!(!csv.contains("good/000.png,"), "{csv}");

    // an update of the update adds to its images; the same --out again is refused
    let o = update(&["--good", "plates/test/good/001.png", "--out", "updated"]);
    assert!(
        !o.status.success() && text(&o).contains("already holds a run"),
        "{}",
        text(&o)
    );
    let o = run(
        dir.path(),
        &[
            "update",
            "--run",
            "updated",
            "--good",
            "plates/test/good/001.png",
            "--out",
            "twice",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        summary("twice")["update"]["added"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // bad input: named
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (args, expected) in [
        (
            vec!["--good", "empty", "--out", "x"],
            "empty: no image files",
        ),
        (
            vec!["--good", "nowhere", "--out", "x"],
            "nowhere: no such file or folder",
        ),
        (
            vec!["--good", "confirmed/broken.png", "--out", "x"],
            "no readable images among 1 file(s) for --good",
        ),
        (
            vec![
                "--good",
                "confirmed/snapshot-1-det-1.overlay.png",
                "--out",
                "x",
            ],
            "no new good images",
        ),
        (
            vec!["--good", "confirmed", "--out", "run"],
            "the same folder as --run",
        ),
        (
            vec!["--good", "confirmed", "--out", "x", "--epochs", "0"],
            "--epochs 0",
        ),
        (
            vec!["--good", "confirmed", "--out", "x", "--added-share", "1"],
            "--added-share 1",
        ),
    ] {
        let o = update(&args);
        assert!(
            !o.status.success() && text(&o).contains(expected),
            "{args:?}: {}",
            text(&o)
        );
        assert!(!dir.path().join("x").exists(), "{args:?}: nothing written");
    }
    let o = run(
        dir.path(),
        &[
            "update",
            "--run",
            "plates",
            "--good",
            "confirmed",
            "--out",
            "x",
        ],
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("state.json"),
        "{}",
        text(&o)
    );
    an_interrupted_update_resumes(dir.path());
}

/// Ctrl-C stops an update after saving its progress (exit status 130); `--resume` finishes it,
/// and refuses other --good images.
fn an_interrupted_update_resumes(dir: &Path) {
    let update = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clsflow-train"));
        cmd.current_dir(dir).args([
            "update",
            "--run",
            "run",
            "--good",
            "plates/test/good",
            "--out",
            "resumed",
            "--epochs",
            "40",
        ]);
        cmd.args(extra);
        cmd
    };
    let (status, err) = interrupt_after_start(&mut update(&[]), 1500);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("continue with --resume"), "{err}");
    assert!(!dir.join("resumed/model.clsflow").exists());
    let o = update(&["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming the update"), "{}", text(&o));
    assert!(dir.join("resumed/model.clsflow").is_file());
    let o = run(
        dir,
        &[
            "update",
            "--run",
            "run",
            "--good",
            "plates/test/crack",
            "--out",
            "resumed",
            "--resume",
        ],
        &[],
    );
    assert!(
        !o.status.success() && text(&o).contains("not among the"),
        "{}",
        text(&o)
    );
}
