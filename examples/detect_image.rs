//! Loads a checkpoint, scores one image, prints the score and writes a heatmap PNG.
//!
//! cargo run --release --example detect_image -- MODEL.clsflow IMAGE [HEATMAP.png] [DEVICE]
use clsflow::colormap::{self, HeatScale};
use clsflow::{Detector, DetectorOptions, DeviceSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // a program that scores many images on its main thread should do this (see clsflow::alloc)
    clsflow::alloc::keep_tensor_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: detect_image MODEL.clsflow IMAGE [HEATMAP.png] [DEVICE]");
        std::process::exit(2);
    }
    let options = DetectorOptions {
        device: args.get(3).map_or(Ok(DeviceSpec::Auto), |d| d.parse())?,
        half: false,
    };
    let detector = Detector::load(&args[0], &options)?;
    let image = image::open(&args[1])
        .map_err(|e| format!("{}: {e}", args[1]))?
        .to_rgb8();
    let d = detector.detect_one(&image)?;
    let threshold = detector.scoring().threshold;
    println!(
        "{}: score {:.4} (threshold {:.4}) -> {}",
        args[1],
        d.score,
        threshold,
        if d.anomalous { "ANOMALOUS" } else { "normal" }
    );
    let out = args.get(2).cloned().unwrap_or_else(|| "heatmap.png".into());
    // the fused map at the image's size, the region threshold in the middle of the colour map
    let map = d
        .fused
        .resized(image.width() as usize, image.height() as usize);
    let scale = HeatScale::of_map(&map.data, detector.scoring().region_threshold as f32);
    colormap::render(&map.data, map.width, map.height, scale).save(&out)?;
    println!("heatmap written to {out}");
    Ok(())
}
