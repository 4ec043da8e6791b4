//! The real categories that the project keeps outside the repository, in `shared/data/` beside
//! the checkout (or under `$CLSFLOW_SHARED/data`). A test that needs one runs when it is there
//! and otherwise skips with one line naming the data and where it comes from; the line also goes
//! to `target/tmp/skipped-tests.txt`, which `make test` lists after the run (cargo hides the
//! output of tests that pass). One file, included by the test helpers of every crate.
#![allow(dead_code)] // each test crate uses its own subset

use std::io::Write;
use std::path::PathBuf;

/// Environment variable naming the shared folder (its `data/` holds the categories); an empty
/// folder hides the data, as on a user's clone.
pub const SHARED_ENV: &str = "CLSFLOW_SHARED";

/// The file that collects one line per skipped test (emptied by `make test` before the run).
pub const SKIPPED_LIST: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped-tests.txt");

/// `$CLSFLOW_SHARED`, else `shared/` beside the checkout.
pub fn shared_root() -> PathBuf {
    std::env::var_os(SHARED_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // every crate's manifest folder sits at most one level below the checkout
            let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let checkout = if here.join(".ci").is_dir() {
                here
            } else {
                here.join("..")
            };
            checkout.join("../shared")
        })
}

/// Where each real category comes from, for the skip line.
fn source(name: &str) -> &'static str {
    match name {
        "magnetic_tile" => {
            "Magnetic-Tile defects (Huang et al. 2020) in MVTec layout, with pixel masks"
        }
        "screw" => "MVTec AD screw (CC BY-NC-SA 4.0), image labels only",
        "deeppcb" => "DeepPCB (MIT), defect boxes as masks",
        _ => "a real category in MVTec layout",
    }
}

/// The real category `name` (`magnetic_tile`, `screw`, `deeppcb`), or `None` after saying on
/// stderr, and in [`SKIPPED_LIST`], that the calling test is skipped and why.
pub fn category(name: &str) -> Option<PathBuf> {
    let root = shared_root().join("data").join(name);
    if root.join("train").is_dir() {
        return Some(root);
    }
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("a test")
        .to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(b, _)| b.to_string()))
        .unwrap_or_default();
    let line = format!(
        "skipped {binary}::{test}: needs {} ({}), absent; put the project's shared/ folder \
         beside the checkout or set {SHARED_ENV}",
        root.display(),
        source(name)
    );
    eprintln!("{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(SKIPPED_LIST)
    {
        // one write per line: lines from test threads and binaries running at once stay whole
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
    None
}
