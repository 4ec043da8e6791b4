//! Diagnostic: where on held-out good images do the branch maps peak? If the maxima crowd at
//! the borders (padding, cropping), the image score is set by an artefact, not by the surface.
//! Training images only; no test image is read.
//! cargo run --release -p clsflow-train --example max_positions -- RUN_DIR
use clsflow::{Scoring, checkpoint};
use clsflow_train::calibrate::{fused, head_outputs};
use clsflow_train::train::TrainState;
use std::path::Path;
use tch::Device;

/// Distance bands from the nearest border, in pixels of the S x S map.
const BANDS: [usize; 5] = [4, 8, 16, 32, usize::MAX];

/// Cells between row-major position `i` of an h x w grid and its nearest border (0: outermost).
fn border_distance(i: usize, h: usize, w: usize) -> usize {
    let (y, x) = (i / w, i % w);
    x.min(y).min(w - 1 - x).min(h - 1 - y)
}

/// The ring (border distance) of every row-major cell of an h x w grid, computed once per grid.
fn rings(h: usize, w: usize) -> Vec<usize> {
    (0..h * w).map(|i| border_distance(i, h, w)).collect()
}

fn report(name: &str, maps: &[Vec<f32>], s: usize) {
    // share of maxima per band, against the band's share of the area
    let band: Vec<usize> = rings(s, s)
        .into_iter()
        .map(|d| BANDS.iter().position(|&b| d < b).unwrap())
        .collect();
    let mut hits = [0usize; BANDS.len()];
    let mut area = [0usize; BANDS.len()];
    let mut mean = [0f64; BANDS.len()];
    for &b in &band {
        area[b] += 1;
    }
    for m in maps {
        let (i, _) =
            m.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &v)| if v > a.1 { (i, v) } else { a },
            );
        hits[band[i]] += 1;
        for (&b, &v) in band.iter().zip(m) {
            mean[b] += v as f64;
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
    let (_, held) = TrainState::load(run)?.good_images()?;
    let sc = &manifest.scoring;
    let heads = head_outputs(&model, &held, &manifest.normalization);
    // each tap on its own grid: where is log p lowest, by ring (0 = the outermost cells)?
    for (tap, lp) in heads.log_prob.iter().enumerate() {
        let (n, h, w) = lp.size3()?;
        let (n, h, w) = (n as usize, h as usize, w as usize);
        let v: Vec<f32> = Vec::<f32>::try_from(lp.reshape([-1]))?;
        let ring = rings(h, w);
        let count = h.min(w).div_ceil(2);
        let (mut hits, mut cells, mut mean) =
            (vec![0usize; count], vec![0usize; count], vec![0f64; count]);
        for &r in &ring {
            cells[r] += 1;
        }
        for m in v.chunks(h * w) {
            let mut best = 0;
            for (j, (&r, &p)) in ring.iter().zip(m).enumerate() {
                mean[r] += p as f64;
                if p < m[best] {
                    best = j;
                }
            }
            hits[ring[best]] += 1;
        }
        println!("tap {tap} ({h}x{w}): lowest log p / C per held-out good image, by ring");
        for r in 0..count.min(4) {
            println!(
                "  ring {r}: minima {:5.1} %  cells {:5.1} %  mean log p / C {:8.4}",
                100.0 * hits[r] as f64 / n as f64,
                100.0 * cells[r] as f64 / (h * w) as f64,
                mean[r] / (cells[r] * n) as f64
            );
        }
        let inner: usize = hits[4.min(count)..].iter().sum();
        println!(
            "  rings 4+: minima {:5.1} %",
            100.0 * inner as f64 / n as f64
        );
    }
    // the branch maps from the same head outputs, as calibration forms them
    let maps = heads.maps(&Scoring::single(sc.tap_log_prob_max, 0.0, 0.0), s as i64);
    report("held-out good, flow map", &maps.flow, s);
    report("held-out good, classifier map", &maps.cls, s);
    report(
        &format!("held-out good, image-score map (w_s = {})", sc.score_weight),
        &fused(&maps, sc.score_weight),
        s,
    );
    Ok(())
}
