//! Diagnostic: where on held-out good images do the branch maps peak? If the maxima crowd at
//! the borders (padding, cropping), the image score is set by an artefact, not by the surface.
//! Training images only; no test image is read.
//! cargo run --release -p clsflow-train --example max_positions -- RUN_DIR
use clsflow::checkpoint;
use clsflow_train::calibrate::{branch_maps, head_outputs};
use clsflow_train::train::TrainState;
use std::path::Path;
use tch::Device;

/// Distance bands from the nearest border, in pixels of the S x S map.
const BANDS: [usize; 5] = [4, 8, 16, 32, usize::MAX];

fn band_of(d: usize) -> usize {
    BANDS.iter().position(|&b| d < b).unwrap()
}

fn report(name: &str, maps: &[Vec<f32>], s: usize) {
    // share of maxima per band, against the band's share of the area
    let mut hits = [0usize; BANDS.len()];
    let mut area = [0usize; BANDS.len()];
    let mut mean = [0f64; BANDS.len()];
    for y in 0..s {
        for x in 0..s {
            area[band_of(x.min(y).min(s - 1 - x).min(s - 1 - y))] += 1;
        }
    }
    for m in maps {
        let (i, _) =
            m.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &v)| if v > a.1 { (i, v) } else { a },
            );
        let (y, x) = (i / s, i % s);
        hits[band_of(x.min(y).min(s - 1 - x).min(s - 1 - y))] += 1;
        for (j, &v) in m.iter().enumerate() {
            let (y, x) = (j / s, j % s);
            mean[band_of(x.min(y).min(s - 1 - x).min(s - 1 - y))] += v as f64;
        }
    }
    println!("{name}: {} maps", maps.len());
    for b in 0..BANDS.len() {
        println!(
            "  border distance < {:>4}: maxima {:5.1} %  area {:5.1} %  mean value {:9.4}",
            if BANDS[b] == usize::MAX {
                "inf".into()
            } else {
                BANDS[b].to_string()
            },
            100.0 * hits[b] as f64 / maps.len() as f64,
            100.0 * area[b] as f64 / (s * s) as f64,
            mean[b] / (area[b] * maps.len()) as f64
        );
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let run = Path::new(&a[1]);
    let (model, manifest) = checkpoint::load(&run.join("model.clsflow"), Device::Cpu)?;
    let s = model.config().input_size as usize;
    let (_, held) = TrainState::load(run)?.good_images(s as u32)?;
    let sc = &manifest.scoring;
    let maps =
        tch::no_grad(|| branch_maps(&model, &held, sc.tap_log_prob_max, &manifest.normalization));
    // each tap on its own grid: where is log p lowest, by ring (0 = the outermost cells)?
    let heads = head_outputs(&model, &held, &manifest.normalization);
    for (tap, lp) in heads.log_prob.iter().enumerate() {
        let (n, h, w) = lp.size3()?;
        let v: Vec<f32> = Vec::<f32>::try_from(lp.reshape([-1]))?;
        let rings = (h.min(w) as usize).div_ceil(2);
        let (mut hits, mut cells, mut mean) =
            (vec![0usize; rings], vec![0usize; rings], vec![0f64; rings]);
        let ring = |y: usize, x: usize| x.min(y).min(w as usize - 1 - x).min(h as usize - 1 - y);
        for y in 0..h as usize {
            for x in 0..w as usize {
                cells[ring(y, x)] += 1;
            }
        }
        for i in 0..n as usize {
            let m = &v[i * (h * w) as usize..(i + 1) * (h * w) as usize];
            let mut best = 0;
            for (j, &p) in m.iter().enumerate() {
                mean[ring(j / w as usize, j % w as usize)] += p as f64;
                if p < m[best] {
                    best = j;
                }
            }
            hits[ring(best / w as usize, best % w as usize)] += 1;
        }
        println!("tap {tap} ({h}x{w}): lowest log p / C per held-out good image, by ring");
        for r in 0..rings.min(4) {
            println!(
                "  ring {r}: minima {:5.1} %  cells {:5.1} %  mean log p / C {:8.4}",
                100.0 * hits[r] as f64 / n as f64,
                100.0 * cells[r] as f64 / (h * w) as f64,
                mean[r] / (cells[r] * n as usize) as f64
            );
        }
        let inner: usize = hits[4.min(rings)..].iter().sum();
        println!(
            "  rings 4+: minima {:5.1} %",
            100.0 * inner as f64 / n as f64
        );
    }
    report("held-out good, flow map", &maps.flow, s);
    report("held-out good, classifier map", &maps.cls, s);
    let w = sc.score_weight as f32;
    let fused: Vec<Vec<f32>> = maps
        .flow
        .iter()
        .zip(&maps.cls)
        .map(|(f, c)| f.iter().zip(c).map(|(a, b)| a + w * b).collect())
        .collect();
    report(
        &format!("held-out good, image-score map (w_s = {w})"),
        &fused,
        s,
    );
    Ok(())
}
