//! `clsflow-train`: train, calibrate and evaluate clsflow detectors on MVTec-AD-style folders.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use clsflow::checkpoint::read_manifest;
use clsflow::{Detector, DetectorOptions, DeviceSpec};
use clsflow_train::config::{DEFAULT_CONFIG_TOML, Overrides, TrainConfig};
use clsflow_train::data::{Dataset, OnBadImage, load_images};
use clsflow_train::demo_data::{self, DemoCounts};
use clsflow_train::evaluate::{BRANCHES, evaluate, leave_out_trained, score_test_set};
use clsflow_train::export::{ExportInput, export_torchscript};
use clsflow_train::predict::{PredictOptions, Save, collect_inputs, predict};
use clsflow_train::recording::{self, DEFAULT_FRAMES, FrameCounts, Sampling};
use clsflow_train::report::{flow_alone_note, save_png, write_report};
use clsflow_train::synth::foreground::{ForegroundMode, foreground_mask, rule_for_run};
use clsflow_train::synth::textures::load_textures;
use clsflow_train::synth::{DefectSynthesizer, sample_sheet};
use clsflow_train::train::{Interrupted, Start, UpdateOptions, recalibrate, train, update};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "clsflow-train",
    version,
    about = "Train, calibrate and evaluate clsflow anomaly detectors"
)]
struct Cli {
    /// libtorch threads (default: one per core); lower it when other libtorch processes, such
    /// as a GStreamer pipeline, share the cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Export formats.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// A traced TorchScript module.
    Torchscript,
}

#[derive(Subcommand)]
enum Command {
    /// Train a detector on the good images of a category (MVTec AD layout or a plain folder).
    Train {
        /// TOML config; default: the built-in one (`clsflow-train config --print` shows it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Category folder (MVTec layout or a folder of good images), or a recording of good
        /// parts (any video file GStreamer decodes, or a folder of them): its frames, sampled
        /// and without near-duplicates, become the good images (written to OUT/frames/).
        #[arg(long)]
        data: PathBuf,
        /// Output folder (checkpoints, state, summary).
        #[arg(long)]
        out: PathBuf,
        /// From a recording, every Nth frame.
        #[arg(long, conflicts_with = "frames")]
        frame_step: Option<usize>,
        /// From a recording, about this many frames spread evenly over each file [default: 300].
        #[arg(long)]
        frames: Option<usize>,
        /// Continue the run in --out from its last finished epoch (same data and config).
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start over in an --out that holds a run (its model is kept as model.clsflow.bak
        /// until the new one is written).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Evaluate a checkpoint on the test split and write the report.
    Eval {
        /// Checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// Category folder with test/good and test/<defect type> (masks in ground_truth/ are
        /// optional: without them, image-level metrics only).
        #[arg(long)]
        data: PathBuf,
        /// Report folder.
        #[arg(long)]
        out: PathBuf,
        /// Device: auto, cpu, cuda, cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Images per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Unreadable test images: skip or fail.
        #[arg(long, value_enum, default_value = "skip")]
        on_bad_image: OnBadImage,
        /// Reduced precision, as the element's `half`: float16 on CUDA, bfloat16 matmuls for the
        /// flows on CPUs with AVX512-BF16 or AMX-BF16.
        #[arg(long)]
        half: bool,
    },
    /// Score images with a trained model: one JSON line per image, and per image a heatmap, a
    /// mask and an overlay PNG.
    Predict {
        /// Checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// An image, a folder (searched recursively) or a quoted glob such as 'cam1/*.png';
        /// repeatable.
        #[arg(long, required = true)]
        input: Vec<String>,
        /// Output folder: predictions.jsonl and the images, in the inputs' folder structure.
        #[arg(long)]
        out: PathBuf,
        /// Images to write per input image (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
        save: Vec<Save>,
        /// Device: auto, cpu, cuda, cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
        /// Images per batch.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Smallest defect region reported, in map pixels.
        #[arg(long, default_value_t = 4)]
        min_region_area: u32,
        /// Reduced precision, as for eval.
        #[arg(long)]
        half: bool,
    },
    /// Calibrate a finished training run anew (other thresholds or weight rules) without
    /// training again: the new model and summary go to --out, the run stays as it was.
    Recalibrate {
        /// The training run's folder (its state.json and model.clsflow).
        #[arg(long)]
        run: PathBuf,
        /// Output folder for the recalibrated model.clsflow and training.json.
        #[arg(long)]
        out: PathBuf,
        /// Config whose [calibration] section applies (the rest is the run's); default: the
        /// run's own calibration settings.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Fixed weight of the classifier in the fused map instead of the label-free choice
        /// (also the score's unless --score-weight is given); 0: the flow branch alone.
        #[arg(long, allow_negative_numbers = true)]
        fusion_weight: Option<f64>,
        /// Fixed weight of the classifier in the image score; 0: the flow branch alone.
        #[arg(long, allow_negative_numbers = true)]
        score_weight: Option<f64>,
    },
    /// Teach a finished run more good images (for example snapshots that were false alarms)
    /// without starting over: the flows train on from the run's flows on its good images and
    /// the new ones, the extractor and classifier stay, and the model is calibrated anew. The
    /// updated model goes to --out; the run stays as it was.
    Update {
        /// The finished training (or update) run's folder (its state.json and model.clsflow).
        #[arg(long)]
        run: PathBuf,
        /// Good images to add: an image, a folder (searched recursively; snapshots' overlay
        /// images are left out) or a quoted glob; repeatable.
        #[arg(long, required = true)]
        good: Vec<String>,
        /// Output folder for the updated model.clsflow, its state and summary.
        #[arg(long)]
        out: PathBuf,
        /// Epochs per flow [default: a quarter of the run's, at least 1].
        #[arg(long)]
        epochs: Option<usize>,
        /// Share of the flows' training vectors that the added images make up (their vectors
        /// repeat, each image at most 20 times); 0: each counts once.
        #[arg(long, default_value_t = clsflow_train::train::DEFAULT_ADDED_SHARE)]
        added_share: f64,
        /// Continue an interrupted update in --out (same --run and --good).
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start over in an --out that holds a run or an update.
        #[arg(long)]
        overwrite: bool,
    },
    /// Export a model for a serving engine: a TorchScript module in a Triton model repository.
    Export {
        /// Checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// Output folder (the repository: OUT/clsflow/1/model.pt, config.pbtxt, calibration.json).
        #[arg(long)]
        out: PathBuf,
        /// Format (TorchScript, which Triton's PyTorch backend runs).
        #[arg(long, value_enum, default_value = "torchscript")]
        format: ExportFormat,
        /// What the module takes: normalised floats, or 0..255 bytes normalised inside.
        #[arg(long, value_enum, default_value = "float")]
        input: ExportInput,
    },
    /// Show the built-in default config.
    Config {
        /// Print it as TOML (the same text as configs/cpu-fast.toml).
        #[arg(long)]
        print: bool,
    },
    /// Write N synthetic-defect samples as a PNG sheet (image, mask, label target).
    SynthSheet {
        /// Category folder (good images are the base).
        #[arg(long)]
        data: PathBuf,
        /// Config whose synth/data settings apply; default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Samples.
        #[arg(long, default_value_t = 8)]
        count: usize,
        /// Output PNG.
        #[arg(long, default_value = "synthetic-defects.png")]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where synthetic defects go (overrides the config): none, object, dark or bright.
        #[arg(long, value_enum)]
        foreground: Option<ForegroundMode>,
    },
    /// Generate the embedded demo category (procedural plates with defects, MVTec layout).
    DemoData {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Good training images.
        #[arg(long, default_value_t = 60)]
        train: usize,
        /// Good test images.
        #[arg(long, default_value_t = 16)]
        test_good: usize,
        /// Test images per defect type.
        #[arg(long, default_value_t = 10)]
        per_defect: usize,
    },
}

fn main() {
    // large tensors stay in the heap between passes (clsflow::alloc: training 1.5x, inference 2x)
    clsflow::alloc::keep_tensor_memory();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        // 130: stopped by Ctrl-C (128 + SIGINT), as shells report it
        let interrupted = e.downcast_ref::<Interrupted>().is_some();
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:5.1}", 100.0 * x))
        .unwrap_or_else(|| "  n/a".into())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads 0: give at least 1 (leave it out for one per core)");
        }
        tch::set_num_threads(n as i32);
    }
    match cli.command {
        Command::Train {
            config,
            data,
            out,
            frame_step,
            frames,
            resume,
            overwrite,
            overrides,
        } => {
            let mut cfg = TrainConfig::load_or_builtin(config.as_deref())?;
            overrides.apply(&mut cfg)?;
            let sampling = match (frame_step, frames) {
                (Some(0), _) | (_, Some(0)) => {
                    bail!("--frame-step and --frames must be at least 1")
                }
                (Some(n), _) => Sampling::Step(n),
                (None, n) => Sampling::Count(n.unwrap_or(DEFAULT_FRAMES)),
            };
            let (data, frame_counts) = frames_of_recordings(&data, &out, sampling, resume)?;
            let stop = stop_on_ctrl_c()?;
            let t0 = Instant::now();
            let r = train(cfg, &data, &out, start_of(resume, overwrite), stop)?;
            let s = &r.state;
            println!(
                "\ntraining finished in {:.1} min",
                t0.elapsed().as_secs_f64() / 60.0
            );
            if let Some(c) = frame_counts {
                println!("  good images from the recording: {c} ({})", data.display());
            }
            println!(
                "  stage 1: {} epochs, {:.0} s, last loss {:.4}",
                s.stage1_done,
                s.seconds[0],
                s.stage1_losses.last().copied().unwrap_or(f64::NAN)
            );
            println!(
                "  stage 2: {:?} epochs per flow, {:.0} s, last losses {:?}",
                s.stage2_done,
                s.seconds[1],
                s.stage2_losses
                    .iter()
                    .map(|l| l.last().copied().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>()
            );
            println!(
                "  calibration ({:.0} s, {} held-out + {} synthetic): the {} reference, weights {} (map) and {} (score), image score {}, thresholds {:.4} (score) and {:.4} (regions)",
                s.seconds[2],
                r.calibration.holdout_images,
                r.calibration.synthetic_defects,
                r.calibration.scoring.tap_reference().name(),
                r.calibration.scoring.fusion_weight,
                r.calibration.scoring.score_weight,
                match r.calibration.scoring.score_top_fraction {
                    q if q > 0.0 => format!("mean of the top {} %", 100.0 * q),
                    _ => "max".to_string(),
                },
                r.calibration.scoring.threshold,
                r.calibration.scoring.region_threshold
            );
            println!("  model:   {}", r.model.display());
            println!("  summary: {}", r.summary.display());
            Ok(())
        }
        Command::Eval {
            model,
            data,
            out,
            device,
            batch_size,
            on_bad_image,
            half,
        } => {
            let t0 = Instant::now();
            let det = Detector::load(&model, &DetectorOptions { device, half })?;
            let mut ds = Dataset::open_test(&data)?;
            let left_out = leave_out_trained(&mut ds, det.manifest().training.as_ref());
            if !left_out.is_empty() {
                println!(
                    "left out {} test image(s) that the model trained on (added by `update`; listed in the report)",
                    left_out.len()
                );
            }
            let set = score_test_set(&det, &ds, on_bad_image, batch_size.max(1))?;
            let eval = evaluate(&set, det.map_size(), det.scoring());
            let extra = serde_json::json!({
                "model": model.display().to_string(),
                "data": data.display().to_string(),
                "device": clsflow::device::device_name(det.device()),
                "half": half,
                "tap_reference": det.scoring().tap_reference().name(),
                "fusion_weight": det.scoring().fusion_weight,
                "score_weight": det.scoring().score_weight,
                "score_top_fraction": det.scoring().score_top_fraction,
                "region_threshold": det.scoring().region_threshold,
                "training": det.manifest().training.as_ref().map(|t| serde_json::json!({"seconds": t["seconds"], "config": t["config"]})),
                "eval_seconds": t0.elapsed().as_secs_f64(),
                "left_out_trained": left_out,
            });
            let title = format!("clsflow evaluation: {}", ds.name);
            let files = write_report(&out, &title, &eval, &set.items, det.map_size(), extra)?;
            println!(
                "{:<11} image AUROC  pixel AUROC  pixel AP  AU-PRO",
                "branch"
            );
            for b in BRANCHES {
                let m = &eval.branches[b];
                println!(
                    "{b:<11} {}        {}        {}     {}",
                    pct(m.image_auroc),
                    pct(m.pixel_auroc),
                    pct(m.pixel_ap),
                    pct(m.au_pro)
                );
            }
            if let Some(note) = eval.pixel_coverage.note() {
                println!("{note}");
            }
            if let Some(note) = flow_alone_note(&eval.branches) {
                println!("note: {note}");
            }
            if !eval.skipped.is_empty() {
                println!(
                    "{} unreadable test file(s) skipped (listed in the report)",
                    eval.skipped.len()
                );
            }
            let d = &eval.decisions;
            println!(
                "threshold {:.4}: precision {}, recall {}, good flagged {}",
                d.threshold,
                pct(d.precision),
                pct(d.recall),
                pct(d.false_positive_rate)
            );
            println!(
                "inference {:.1} ms/image; report written in {:.0} s:",
                set.ms_per_image,
                t0.elapsed().as_secs_f64()
            );
            for f in files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        Command::Predict {
            model,
            input,
            out,
            save,
            device,
            batch_size,
            min_region_area,
            half,
        } => {
            let files = collect_inputs(&input)?;
            let det = Detector::load(&model, &DetectorOptions { device, half })?;
            let t0 = Instant::now();
            let options = PredictOptions {
                save,
                batch_size,
                min_region_area,
            };
            let summary = predict(&det, &files, &out, &options)?;
            let flagged = summary.predictions.iter().filter(|p| p.anomalous).count();
            println!(
                "{} image(s) in {:.1} s: {flagged} anomalous at threshold {:.4}, {} normal{}",
                summary.predictions.len(),
                t0.elapsed().as_secs_f64(),
                det.scoring().threshold,
                summary.predictions.len() - flagged,
                match summary.skipped.len() {
                    0 => String::new(),
                    n => format!("; {n} unreadable file(s) skipped"),
                }
            );
            println!("  results: {}", summary.jsonl.display());
            Ok(())
        }
        Command::Recalibrate {
            run,
            out,
            config,
            fusion_weight,
            score_weight,
        } => {
            let mut calibration = match config {
                Some(c) => TrainConfig::load(&c)?.calibration,
                None => {
                    clsflow_train::train::TrainState::load(&run)?
                        .config
                        .calibration
                }
            };
            if fusion_weight.is_some() || score_weight.is_some() {
                let run_reference = read_manifest(&run.join("model.clsflow"))
                    .with_context(|| format!("{}: no trained model to recalibrate", run.display()))?
                    .scoring
                    .tap_reference();
                calibration =
                    calibration.with_fixed_weights(fusion_weight, score_weight, run_reference);
            }
            let r = recalibrate(&run, calibration, &out)?;
            let s = &r.calibration.scoring;
            println!(
                "recalibrated: weights {} (map) and {} (score), thresholds {:.4} and {:.4}",
                s.fusion_weight, s.score_weight, s.threshold, s.region_threshold
            );
            println!("  model:   {}", r.model.display());
            println!("  summary: {}", r.summary.display());
            Ok(())
        }
        Command::Update {
            run,
            good,
            out,
            epochs,
            added_share,
            resume,
            overwrite,
        } => {
            let files = collect_inputs(&good)?;
            let stop = stop_on_ctrl_c()?;
            let t0 = Instant::now();
            let options = UpdateOptions {
                epochs,
                added_share,
            };
            let r = update(
                &run,
                &files,
                &out,
                start_of(resume, overwrite),
                &options,
                stop,
            )?;
            let s = &r.state;
            let u = s.update.as_ref().expect("an update's state");
            let minutes = t0.elapsed().as_secs_f64() / 60.0;
            println!(
                "\nupdate finished in {minutes:.1} min (the run's training: {:.1} min)",
                u.run_seconds / 60.0
            );
            println!(
                "  {} good image(s) added by updates, beside the run's {}",
                u.added.len(),
                s.train.len() - u.added.len()
            );
            println!(
                "  stage 2: {:?} epochs per flow, {:.0} s; calibration {:.0} s: weights {} (map) and {} (score), thresholds {:.4} (score) and {:.4} (regions)",
                s.stage2_done,
                s.seconds[1],
                s.seconds[2],
                r.calibration.scoring.fusion_weight,
                r.calibration.scoring.score_weight,
                r.calibration.scoring.threshold,
                r.calibration.scoring.region_threshold
            );
            println!("  model:   {}", r.model.display());
            println!("  summary: {}", r.summary.display());
            Ok(())
        }
        Command::Export {
            model,
            out,
            format: ExportFormat::Torchscript,
            input,
        } => {
            let e = export_torchscript(&model, &out, input, None)?;
            println!(
                "exported {} (checked against the detector: largest difference {:.1e})",
                model.display(),
                e.max_difference
            );
            for f in [&e.module, &e.config, &e.calibration] {
                println!("  {}", f.display());
            }
            Ok(())
        }
        Command::Config { print } => {
            if !print {
                bail!("nothing to do: `clsflow-train config --print` prints the built-in config");
            }
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Command::SynthSheet {
            data,
            config,
            count,
            out,
            seed,
            foreground,
        } => {
            let cfg = TrainConfig::load_or_builtin(config.as_deref())?;
            let ds = Dataset::open(&data)?;
            let size = cfg.model.input_size as u32;
            let n = count.clamp(1, ds.train.len());
            let imgs: Vec<_> = load_images(&ds.train[..n], size, cfg.data.on_bad_image, "loading")?
                .images
                .into_iter()
                .map(|(_, i)| i)
                .collect();
            let rule = rule_for_run(
                &ds.name,
                foreground.or(cfg.data.foreground),
                cfg.data.fill_holes,
            );
            println!("synthetic defects go {rule}");
            let synth =
                DefectSynthesizer::new(cfg.synth.clone(), load_textures(&cfg.data.textures, size)?);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let samples: Vec<_> = (0..count)
                .map(|i| {
                    let img = &imgs[i % imgs.len()];
                    synth.sample(
                        img,
                        &imgs,
                        foreground_mask(img, rule).as_ref(),
                        true,
                        &mut rng,
                    )
                })
                .collect();
            save_png(&sample_sheet(&samples), &out)?;
            println!(
                "{count} samples (image | mask | label target) written to {}",
                out.display()
            );
            Ok(())
        }
        Command::DemoData {
            out,
            seed,
            train,
            test_good,
            per_defect,
        } => {
            let n = demo_data::generate(
                &out,
                DemoCounts {
                    train,
                    test_good,
                    per_defect,
                },
                seed,
            )?;
            println!("demo category: {n} images written under {}", out.display());
            Ok(())
        }
    }
}

/// How a run treats its output folder, from the `--resume` and `--overwrite` flags.
fn start_of(resume: bool, overwrite: bool) -> Start {
    match (resume, overwrite) {
        (true, _) => Start::Resume,
        (_, true) => Start::Overwrite,
        _ => Start::Fresh,
    }
}

/// A flag that the first Ctrl-C sets (the run finishes its step, saves and stops); a second
/// Ctrl-C ends the process at once.
fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: stopping now; the last finished epoch is saved");
            // _exit: no destructors or exit handlers while the main thread is inside
            // libtorch (running them there crashed the process); every file the run
            // writes is written atomically, so nothing on disk is half-written
            unsafe { libc::_exit(130) };
        }
        eprintln!(
            "\ninterrupt: finishing the current step and saving (Ctrl-C again to stop at once)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// `data` itself when it is not a recording; else the folder of good images its frames were
/// decoded into (OUT/frames/NAME), with what the decoding did. A resumed run keeps the frames
/// it decoded before, so that its data stays the same.
fn frames_of_recordings(
    data: &Path,
    out: &Path,
    sampling: Sampling,
    resume: bool,
) -> Result<(PathBuf, Option<FrameCounts>)> {
    let videos = recording::recordings(data)?;
    if videos.is_empty() {
        return Ok((data.to_path_buf(), None));
    }
    let name = if data.is_file() {
        data.file_stem().map(ToOwned::to_owned)
    } else {
        data.canonicalize()?.file_name().map(ToOwned::to_owned)
    }
    .map_or_else(|| "recording".into(), |n| n.to_string_lossy().into_owned());
    let frames = out.join("frames").join(name);
    if resume && frames.is_dir() {
        eprintln!(
            "--resume: training on the frames decoded before, in {}",
            frames.display()
        );
        return Ok((frames, None));
    }
    eprintln!(
        "decoding {} recording(s) into {} ({})",
        videos.len(),
        frames.display(),
        match sampling {
            Sampling::Step(n) => format!("every {n}th frame"),
            Sampling::Count(n) => format!("about {n} frames spread evenly over each"),
        }
    );
    let counts = recording::extract(&videos, sampling, &frames)?;
    eprintln!("good images from the recording: {counts}");
    Ok((frames, Some(counts)))
}
