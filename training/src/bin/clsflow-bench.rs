//! `clsflow-bench`: detector speed side by side in one run (libtorch only, no GStreamer, so it
//! also runs on GPU servers without it). All rows use the same weights; ratios are to the
//! backbone-alone floor of the same device and batch.
//!
//! clsflow-bench [--model M.clsflow] [--config C.toml] [--compare-config C.toml]
//!               [--device cpu|cuda|all] [--iters N] [--batches 1,8,32]
//! clsflow-bench --check-devices [--model M.clsflow]
//!
//! `--check-devices` runs one model on the CPU and on cuda:0 and fails unless their maps and
//! scores agree to 1e-3 of the maps' range (the GPU check, `scripts/gpu-check.sh`).
//!
//! `--compare-config` adds the backbone-alone and full-detector rows of a second architecture (for
//! example another backbone) to the same round robin, so the two compare as a ratio of one run.

use anyhow::Result;
use clap::Parser;
use clsflow::preprocess::prepare_batch;
use clsflow::reference::fiber_loop_log_prob_maps;
use clsflow::scoring::{BatchMaps, maps_from_heads};
use clsflow::{ClsFlowModel, Detector, DetectorOptions, Scoring};
use clsflow_train::config::TrainConfig;
use clsflow_train::timing::median;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// A trained checkpoint; without it a model of --config is initialised (speed does not depend on the weights).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Architecture when no --model is given; default: the built-in config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A second architecture whose backbone and full detector are timed in the same round robin.
    #[arg(long)]
    compare_config: Option<PathBuf>,
    /// cpu, cuda, or all (every available device).
    #[arg(long, default_value = "all")]
    device: String,
    /// Timed iterations per row (after 2 warm-up runs).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Batch sizes timed, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batches: Vec<i64>,
    /// Compare the CPU's and cuda:0's maps and scores instead of timing.
    #[arg(long)]
    check_devices: bool,
}

/// Times every row round-robin (so that load from elsewhere hits all rows alike) after two
/// warm-up calls each; returns the median milliseconds per call of each row.
/// A named row: a closure doing one measured call.
type Row<'a> = (String, Box<dyn FnMut() + 'a>);

fn time_rows(iters: usize, device: Device, rows: &mut [Row<'_>]) -> Vec<f64> {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for (_, f) in rows.iter_mut() {
        f();
        f();
    }
    let mut times = vec![Vec::with_capacity(iters); rows.len()];
    for _ in 0..iters {
        for (t, (_, f)) in times.iter_mut().zip(rows.iter_mut()) {
            sync();
            let t0 = Instant::now();
            f();
            sync();
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.into_iter().map(median).collect()
}

/// The post-processing every detector row ends with: the maps copied to Rust, one detection per
/// frame, and the regions of each fused map.
fn regions(det: &Detector, maps: &BatchMaps) {
    let side = det.map_size() as u32;
    let frames = vec![(side, side); maps.scores.size()[0] as usize];
    let detections = det
        .split(maps, &frames, clsflow::regions::DEFAULT_MIN_REGION_AREA)
        .expect("split");
    std::hint::black_box(detections);
}

/// A detector of a config's architecture with seeded random weights: timing needs the shapes,
/// not trained values.
fn untrained_detector(
    config: Option<&std::path::Path>,
    device: Device,
    name: &str,
) -> Result<Detector> {
    tch::manual_seed(0);
    let cfg = TrainConfig::load_or_builtin(config)?;
    Ok(Detector::from_model(
        ClsFlowModel::new(cfg.model_config(), device)?,
        Scoring::default(),
        name,
    ))
}

/// The same model on the CPU and on cuda:0, one batch of 8 random frames: the largest
/// difference of each map, relative to the CPU map's range, and of the scores.
fn check_devices(args: &Args) -> Result<()> {
    anyhow::ensure!(
        tch::Cuda::is_available(),
        "--check-devices: no CUDA device (a build without --features cuda, or no GPU)"
    );
    let dir = tempfile_dir()?;
    let path = match &args.model {
        Some(m) => m.clone(),
        None => {
            let p = dir.join("check.clsflow");
            untrained_detector(args.config.as_deref(), Device::Cpu, "check")?.save(&p, None)?;
            p
        }
    };
    let load = |device| {
        Detector::load(
            &path,
            &DetectorOptions {
                device,
                half: false,
            },
        )
    };
    let (cpu, gpu) = (
        load(clsflow::DeviceSpec::Cpu)?,
        load(clsflow::DeviceSpec::Cuda(0))?,
    );
    tch::manual_seed(1);
    let s = cpu.map_size() as i64;
    let frames =
        (Tensor::rand([8, 3, s, s], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8);
    let (a, b) = (cpu.detect_batch(&frames)?, gpu.detect_batch(&frames)?);
    let mut worst = 0f64;
    for (name, x, y) in [
        ("fused", &a.fused, &b.fused),
        ("flow", &a.flow, &b.flow),
        ("classifier", &a.cls, &b.cls),
        ("scores", &a.scores, &b.scores),
    ] {
        let y = y.to_device(Device::Cpu);
        let range = (x.max() - x.min()).double_value(&[]).max(1e-12);
        let diff = (x - &y).abs().max().double_value(&[]) / range;
        println!("{name}: largest CPU/CUDA difference {diff:.2e} of the range");
        worst = worst.max(diff);
    }
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        worst <= 1e-3,
        "CPU and CUDA differ by {worst:.2e} of the range (> 1e-3)"
    );
    println!("CPU and cuda:0 agree to {worst:.2e} of the maps' range");
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("clsflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.check_devices {
        return check_devices(&args);
    }
    // as clsflow-train does: timing the kernel's page faults instead of the model would mislead
    let kept = clsflow::alloc::keep_tensor_memory();
    let devices: Vec<Device> = match args.device.as_str() {
        "all" => {
            let mut d = vec![Device::Cpu];
            if tch::Cuda::is_available() {
                d.push(Device::Cuda(0));
            }
            d
        }
        s => vec![clsflow::device::parse_device(s)?],
    };
    println!(
        "clsflow-bench: {} threads, {} round-robin iterations per row, medians; tensor memory kept in the heap: {}\n",
        tch::get_num_threads(),
        args.iters,
        if kept { "yes" } else { "no (not glibc)" }
    );
    println!("| device | batch | row | ms/frame | frames/s | x floor |");
    println!("|---|---|---|---|---|---|");
    for device in devices {
        let make = |half: bool| -> Result<Detector> {
            let det = match &args.model {
                Some(m) => Detector::load(
                    m,
                    &DetectorOptions {
                        device: match device {
                            Device::Cuda(i) => clsflow::DeviceSpec::Cuda(i),
                            _ => clsflow::DeviceSpec::Cpu,
                        },
                        half: false,
                    },
                )?,
                None => untrained_detector(args.config.as_deref(), device, "bench")?,
            };
            Ok(if half { det.with_half()? } else { det })
        };
        let det = make(false)?;
        // the architecture to compare with, random weights as the others' when no --model is given
        let other = match &args.compare_config {
            Some(c) => {
                let o = untrained_detector(Some(c), device, "compare")?;
                anyhow::ensure!(
                    o.model().config().input_size == det.model().config().input_size,
                    "--compare-config {}: input size {} differs from {}",
                    c.display(),
                    o.model().config().input_size,
                    det.model().config().input_size
                );
                Some(o)
            }
            None => None,
        };
        // half precision rows where it is fast: float16 on CUDA, bfloat16 matmuls on such CPUs
        let det_half = match device {
            Device::Cpu if !clsflow::device::cpu_has_native_bf16() => None,
            _ => Some(make(true)?),
        };
        let model = det.model();
        let s = model.config().input_size;
        let norm = det.manifest().normalization;
        let scoring = det.scoring().clone();
        for &batch in &args.batches {
            let frames = (Tensor::rand([batch, 3, s, s], (Kind::Float, device)) * 255.0)
                .to_kind(Kind::Uint8);
            let x = prepare_batch(&frames, s, &norm, Kind::Float)?;
            let taps = tch::no_grad(|| model.features(&x));
            let n = batch as f64;
            // The flows' arithmetic as one large matmul (K = N = 512), libtorch's best case on
            // this device: how fast the flows could be at all without changing the model.
            let flow_macs: i64 = (0..3)
                .map(|t| {
                    model.flows()[t].folded_multiply_adds() * model.condition_rows(t).size()[0]
                })
                .sum::<i64>()
                * batch;
            // the heads' outputs and the maps, so that the post-processing rows time only that
            let logits = tch::no_grad(|| model.cls_logits(&taps, false));
            let logp = tch::no_grad(|| model.flow_log_prob_maps(&taps));
            let maps = tch::no_grad(|| maps_from_heads(&logits, &logp, &scoring, s));
            let dense_a = Tensor::rand([flow_macs / (512 * 512), 512], (Kind::Float, device));
            let dense_b = Tensor::rand([512, 512], (Kind::Float, device));
            let mut rows: Vec<Row<'_>> = vec![
                (
                    "backbone forward alone (floor)".into(),
                    Box::new(|| tch::no_grad(|| drop(model.features(&x)))),
                ),
                (
                    "full detector (whole-map flows, maps, regions)".into(),
                    Box::new(|| regions(&det, &det.detect_batch(&frames).expect("detect"))),
                ),
                (
                    "decoder (classifier head) only".into(),
                    Box::new(|| tch::no_grad(|| drop(model.cls_logits(&taps, false).sigmoid()))),
                ),
                (
                    "flows only, whole map (folded)".into(),
                    Box::new(|| tch::no_grad(|| drop(model.flow_log_prob_maps(&taps)))),
                ),
                (
                    "one dense matmul with the flows' multiply-adds".into(),
                    Box::new(|| drop(dense_a.matmul(&dense_b))),
                ),
                (
                    "flows only, CFlow-AD fiber loop (256)".into(),
                    Box::new(|| tch::no_grad(|| drop(fiber_loop_log_prob_maps(model, &taps, 256)))),
                ),
                (
                    "full detector with fiber-loop flows".into(),
                    Box::new(|| {
                        tch::no_grad(|| {
                            let x = prepare_batch(&frames, s, &norm, Kind::Float).expect("batch");
                            let taps = model.features(&x);
                            let logits = model.cls_logits(&taps, false);
                            let lp = fiber_loop_log_prob_maps(model, &taps, 256);
                            let maps = maps_from_heads(&logits, &lp, &scoring, s);
                            let _ = Vec::<f32>::try_from(maps.scores.to_device(Device::Cpu));
                        })
                    }),
                ),
                (
                    "  of which: input conversion (uint8 frames to the normalised batch)".into(),
                    Box::new(|| {
                        drop(prepare_batch(&frames, s, &norm, Kind::Float).expect("batch"))
                    }),
                ),
                (
                    "  of which: maps from the heads (flow map, fusion, image scores)".into(),
                    Box::new(|| {
                        tch::no_grad(|| drop(maps_from_heads(&logits, &logp, &scoring, s)))
                    }),
                ),
                (
                    "  of which: maps to Rust, regions".into(),
                    Box::new(|| regions(&det, &maps)),
                ),
            ];
            if let Some(dh) = &det_half {
                let taps_half: [Tensor; 3] = if dh.kind() == Kind::Half {
                    tch::no_grad(|| dh.model().features(&x.to_kind(Kind::Half)))
                } else {
                    taps.each_ref().map(|t| t.shallow_clone())
                };
                rows.push((
                    "flows only, whole map, half (CPU: bfloat16 matmuls)".into(),
                    Box::new(move || {
                        tch::no_grad(|| drop(dh.model().flow_log_prob_maps(&taps_half)))
                    }),
                ));
                rows.push((
                    "full detector, half".into(),
                    Box::new(|| regions(dh, &dh.detect_batch(&frames).expect("detect"))),
                ));
            }
            if let Some(other) = &other {
                let name = other.model().config().backbone.name();
                let om = other.model();
                let ox = prepare_batch(&frames, s, &other.manifest().normalization, Kind::Float)?;
                rows.push((
                    format!("backbone forward alone, {name}"),
                    Box::new(move || tch::no_grad(|| drop(om.features(&ox)))),
                ));
                rows.push((
                    format!("full detector, {name}"),
                    Box::new(|| regions(other, &other.detect_batch(&frames).expect("detect"))),
                ));
            }
            let ms: Vec<f64> = time_rows(args.iters, device, &mut rows)
                .into_iter()
                .map(|t| t / n)
                .collect();
            let names: Vec<String> = rows.into_iter().map(|r| r.0).collect();
            let floor = ms[0];
            let name = clsflow::device::device_name(device);
            for (row, ms) in names.iter().zip(&ms) {
                println!(
                    "| {name} | {batch} | {row} | {ms:.2} | {:.1} | {:.2} |",
                    1000.0 / ms,
                    ms / floor
                );
            }
            println!(
                "| {name} | {batch} | **whole-map flows vs fiber loop** | | | **{:.1}x faster** |",
                ms[5] / ms[3]
            );
            println!(
                "| {name} | {batch} | flows' multiply-adds per frame: {:.0} M, run at {:.0} % of the dense-matmul rate | | | |",
                flow_macs as f64 / n / 1e6,
                100.0 * ms[4] / ms[3]
            );
        }
    }
    Ok(())
}
