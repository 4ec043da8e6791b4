//! Where clsflow finds the files it ships beside its programs: the ImageNet weights of the
//! feature extractors. Programs run from any folder, so the lookup never depends on the current
//! directory.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Environment variable naming a folder of ImageNet weight files.
pub const MODELS_DIR_ENV: &str = "CLSFLOW_MODELS_DIR";

/// The folders searched for ImageNet weights, in order, each with where it comes from:
/// `$CLSFLOW_MODELS_DIR`, the install's `share/clsflow` (beside the running program's `bin/`),
/// and the source checkout's `models/` (where `scripts/setup.sh` puts them).
pub fn weights_search_path() -> Vec<(PathBuf, String)> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push((PathBuf::from(d), format!("${MODELS_DIR_ENV}")));
    }
    if let Some(share) = install_share_dir() {
        dirs.push((share, "the install's share folder".into()));
    }
    dirs.push((
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        "the source checkout's models/".into(),
    ));
    dirs
}

/// `<prefix>/share/clsflow` for a program installed as `<prefix>/bin/<name>` (symlinks followed).
pub fn install_share_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    Some(exe.parent()?.parent()?.join("share/clsflow"))
}

/// The ImageNet weights file `file_name` (e.g. `efficientnet_lite2.safetensors`): `explicit`
/// when given (it must exist), else the first of [`weights_search_path`] that holds it. The error
/// lists every place looked at and how to provide the file.
pub fn find_weights(file_name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::NotFound(format!(
                "ImageNet weights {}: no such file (given with --weights or the config's \
                 [model] weights)",
                p.display()
            )))
        };
    }
    let dirs = weights_search_path();
    if let Some((d, _)) = dirs.iter().find(|(d, _)| d.join(file_name).is_file()) {
        return Ok(d.join(file_name));
    }
    let mut looked = String::new();
    if std::env::var_os(MODELS_DIR_ENV).is_none_or(|d| d.is_empty()) {
        looked.push_str(&format!("\n  - ${MODELS_DIR_ENV}: not set"));
    }
    for (d, what) in &dirs {
        looked.push_str(&format!("\n  - {} ({what})", d.join(file_name).display()));
    }
    Err(Error::NotFound(format!(
        "ImageNet weights {file_name} not found; looked in:{looked}\nInstall them with \
         `make install` or scripts/setup.sh in the source checkout, set ${MODELS_DIR_ENV} to \
         their folder, or pass --weights FILE"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_file_is_named() {
        let e = find_weights(
            "x.safetensors",
            Some(Path::new("/nonexistent/w.safetensors")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/w.safetensors"), "{e}");
    }

    #[test]
    fn the_error_lists_every_place() {
        let e = find_weights("no_such_backbone.safetensors", None)
            .unwrap_err()
            .to_string();
        for (d, what) in weights_search_path() {
            assert!(
                e.contains(&d.join("no_such_backbone.safetensors").display().to_string()),
                "{e}"
            );
            assert!(e.contains(&what), "{e}");
        }
        assert!(e.contains("--weights"), "{e}");
    }
}
