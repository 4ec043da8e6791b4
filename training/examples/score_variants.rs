//! Diagnostic: scores the test split of a category with one trained checkpoint under several
//! scoring variants (each tap alone, tap aggregation, smoothing), for docs/experiments.md.
//! cargo run --release -p clsflow-train --example score_variants -- MODEL DATA [STATS_IMAGES [FUSION_WEIGHT]]
use clsflow::metrics;
use clsflow::preprocess::images_to_batch;
use clsflow::{Detector, DetectorOptions};
use clsflow_train::data::{Dataset, read_mask, read_rgb, resize_rgb};
use tch::{Kind, Tensor};

fn blur(map: &Tensor, sigma: f64) -> Tensor {
    if sigma <= 0.0 {
        return map.shallow_clone();
    }
    let r = (4.0 * sigma).ceil() as i64;
    let x = Tensor::arange_start(-r, r + 1, (Kind::Float, map.device()));
    let k = (x.square() / (-2.0 * sigma * sigma)).exp();
    let k = &k / k.sum(Kind::Float);
    let kh = k.view([1, 1, 1, 2 * r + 1]);
    let kv = k.view([1, 1, 2 * r + 1, 1]);
    let m =
        map.reflection_pad2d([r, r, 0, 0])
            .conv2d(&kh, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
    m.reflection_pad2d([0, 0, r, r])
        .conv2d(&kv, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let det = Detector::load(
        &a[1],
        &DetectorOptions {
            device: "cpu".into(),
            half: false,
        },
    )?;
    let ds = Dataset::open(std::path::Path::new(&a[2]))?;
    let size = det.map_size() as i64;
    let mut sc = det.scoring().clone();
    // optional 4th argument: one weight for map and score instead of the checkpoint's
    if let Some(w) = a.get(4).and_then(|v| v.parse().ok()) {
        sc.fusion_weight = w;
        sc.score_weight = w;
    }
    let model = det.model();
    let norm = det.manifest().normalization;
    // per tap and position: mean and std of -log p / C over the training images (the first
    // `--stats N` of train/good; the held-out split is not separated here, this is a diagnostic)
    let n_stats: usize = a.get(3).and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut sums: Vec<(Tensor, Tensor)> = Vec::new();
    let mut count = 0f64;
    for chunk in ds.train[..n_stats.min(ds.train.len())].chunks(8) {
        let imgs = chunk
            .iter()
            .map(|p| Ok(resize_rgb(&read_rgb(p)?, size as u32)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        tch::no_grad(|| -> anyhow::Result<()> {
            let x = images_to_batch(&imgs, &norm)?;
            let logp = model.flow_log_prob_maps(&model.features(&x));
            for (l, t) in logp.iter().enumerate() {
                let nll = -t.to_kind(Kind::Double);
                let (s1, s2) = (
                    nll.sum_dim_intlist([0i64].as_slice(), false, Kind::Double),
                    nll.square()
                        .sum_dim_intlist([0i64].as_slice(), false, Kind::Double),
                );
                if sums.len() <= l {
                    sums.push((s1, s2));
                } else {
                    sums[l].0 += s1;
                    sums[l].1 += s2;
                }
            }
            count += chunk.len() as f64;
            Ok(())
        })?;
    }
    let stats: Vec<(Tensor, Tensor)> = sums
        .iter()
        .map(|(s1, s2)| {
            let m = s1 / count;
            let v = (s2 / count - m.square()).clamp_min(1e-12);
            (m, v.sqrt())
        })
        .collect();
    // variant name -> per-image maps
    let names = [
        "tap1",
        "tap2",
        "tap3",
        "sum_p",
        "mean_nll",
        "cls",
        "fused(sum_p)",
        "fused(mean_nll)",
        "z_tap1",
        "z_tap2",
        "z_tap3",
        "mean_z",
        "max_z",
        "fused(mean_z)",
    ];
    let sigmas = [0.0];
    let mut maps: Vec<Vec<Vec<f32>>> = vec![Vec::new(); names.len() * sigmas.len()];
    let mut masks: Vec<Vec<bool>> = Vec::new();
    let mut labels = Vec::new();
    for chunk in ds.test.chunks(8) {
        let mut imgs = Vec::new();
        for t in chunk {
            imgs.push(resize_rgb(&read_rgb(&t.path)?, size as u32));
            masks.push(match &t.mask {
                Some(m) => read_mask(m, size as u32)?
                    .pixels()
                    .map(|p| p[0] > 0)
                    .collect(),
                None => vec![false; (size * size) as usize],
            });
            labels.push(t.defect_type != "good");
        }
        tch::no_grad(|| -> anyhow::Result<()> {
            let x = images_to_batch(&imgs, &norm)?;
            let taps = model.features(&x);
            let cls = model.cls_logits(&taps, false).sigmoid();
            let logp = model.flow_log_prob_maps(&taps);
            let nll: Vec<Tensor> = logp
                .iter()
                .zip(sc.tap_log_prob_max)
                .map(|(t, m)| {
                    (-(t.to_kind(Kind::Double) - m))
                        .unsqueeze(1)
                        .upsample_bilinear2d([size, size], false, None, None)
                        .to_kind(Kind::Float)
                })
                .collect();
            let sum_p = clsflow::scoring::sum_flow_map(&logp, &sc.tap_log_prob_max, size);
            let mean_nll = (&nll[0] + &nll[1] + &nll[2]) / 3.0;
            let w = sc.fusion_weight;
            let z: Vec<Tensor> = logp
                .iter()
                .zip(&stats)
                .map(|(t, (m, sd))| {
                    ((-t.to_kind(Kind::Double) - m) / sd)
                        .unsqueeze(1)
                        .upsample_bilinear2d([size, size], false, None, None)
                        .to_kind(Kind::Float)
                })
                .collect();
            let mean_z = (&z[0] + &z[1] + &z[2]) / 3.0;
            let max_z = z[0].maximum(&z[1]).maximum(&z[2]);
            let v = [
                nll[0].shallow_clone(),
                nll[1].shallow_clone(),
                nll[2].shallow_clone(),
                sum_p.shallow_clone(),
                mean_nll.shallow_clone(),
                cls.shallow_clone(),
                &sum_p + &cls * w,
                &mean_nll + &cls * (w * 3.0),
                z[0].shallow_clone(),
                z[1].shallow_clone(),
                z[2].shallow_clone(),
                mean_z.shallow_clone(),
                max_z,
                &mean_z + &cls * (w * 3.0),
            ];
            for (si, &s) in sigmas.iter().enumerate() {
                for (vi, m) in v.iter().enumerate() {
                    let b = blur(m, s);
                    for i in 0..b.size()[0] {
                        maps[si * names.len() + vi]
                            .push(Vec::<f32>::try_from(b.get(i).flatten(0, -1))?);
                    }
                }
            }
            Ok(())
        })?;
        eprint!(".");
    }
    eprintln!();
    println!("| variant | sigma | image AUROC | pixel AUROC | AU-PRO |\n|---|---|---|---|---|");
    for (si, &s) in sigmas.iter().enumerate() {
        for (vi, n) in names.iter().enumerate() {
            let ms: Vec<&[f32]> = maps[si * names.len() + vi]
                .iter()
                .map(Vec::as_slice)
                .collect();
            let ks: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
            let side = size as usize;
            let (img, pix, pro) = metrics::map_metrics(&ms, &ks, &labels, side, side, 0.3);
            let (img, pix, pro) = (img.unwrap(), pix.unwrap(), pro.unwrap());
            println!(
                "| {n} | {s} | {:.1} | {:.1} | {:.1} |",
                img * 100.0,
                pix * 100.0,
                pro * 100.0
            );
        }
    }
    Ok(())
}
