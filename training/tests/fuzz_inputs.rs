//! Property tests: config TOML and image files with random content are accepted or refused with
//! an error, never a panic. `make test` runs a short seeded pass;
//! `PROPTEST_CASES=N cargo test -p clsflow-train --test fuzz_inputs` runs more.

use clsflow_train::config::{DEFAULT_CONFIG_TOML, TrainConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]),
    )
}

/// TOML values of every kind, including the awkward ones.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z_ ]{0,10}".prop_map(|s| format!("\"{s}\"")),
        Just("[]".to_string()),
        Just("[0.0, -1.0]".to_string()),
        Just("[1e309, 0, 0]".to_string()),
        Just("{}".to_string()),
    ]
}

#[test]
fn edited_configs_never_panic() {
    let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
    let value_lines: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('#'))
        .collect();
    let strategy = prop::collection::vec((0..value_lines.len(), toml_value(), 0u8..4), 1..5);
    let (tried, valid) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    runner()
        .run(&strategy, |edits| {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            for (i, value, how) in edits {
                let at = value_lines[i];
                let key = l[at].split(" = ").next().unwrap_or("").to_string();
                l[at] = match how {
                    0 => format!("{key} = {value}"),
                    1 => String::new(),
                    2 => format!("{key}_x = {value}"),
                    _ => format!("{key} = {value} junk"),
                };
            }
            if let Ok(cfg) = TrainConfig::parse(&l.join("\n")) {
                valid.set(valid.get() + 1);
                prop_assert!(cfg.validate().is_ok());
            }
            tried.set(tried.get() + 1);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "edited configs: {} cases ({} valid), no panic",
        tried.get(),
        valid.get()
    );
}

#[test]
fn damaged_image_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    // real files of each format the trainer reads, then damaged
    let img = image::RgbImage::from_fn(37, 23, |x, y| image::Rgb([x as u8 * 7, y as u8 * 11, 99]));
    let mut seeds = Vec::new();
    for ext in ["png", "jpg", "bmp", "tif", "webp", "gif", "pnm"] {
        let p = dir.path().join(format!("seed.{ext}"));
        image::DynamicImage::ImageRgb8(img.clone())
            .save(&p)
            .unwrap();
        seeds.push((ext, std::fs::read(&p).unwrap()));
    }
    let strategy = (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        prop::option::of(any::<prop::sample::Index>()),
    );
    let (tried, read) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let path = dir.path().join("case");
    runner()
        .run(&strategy, |(s, flips, cut)| {
            let (ext, good) = &seeds[s];
            let mut b = good.clone();
            for (i, v) in flips {
                let i = i.index(b.len());
                b[i] ^= v | 1;
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len()));
            }
            let p = path.with_extension(ext);
            std::fs::write(&p, &b).unwrap();
            read.set(read.get() + usize::from(clsflow_train::data::read_rgb(&p).is_ok()));
            tried.set(tried.get() + 1);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "damaged image files: {} cases ({} still readable), no panic",
        tried.get(),
        read.get()
    );
}
