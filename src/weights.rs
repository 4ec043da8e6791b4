//! Reading named float tensors from safetensors files into variable stores, with errors that name
//! the tensor at fault.

use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Keys that a backbone weight file may hold beyond what the extractor uses: BatchNorm step
/// counters and the ImageNet classification heads.
pub fn is_ignorable_backbone_key(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
        || key.starts_with("fc.")
        || key.starts_with("_fc.")
        || key.starts_with("_conv_head.")
        || key.starts_with("_bn1.")
}

/// Reads a whole file (clear error naming it).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Parses safetensors bytes, naming the file on failure (truncated or corrupted files).
pub(crate) fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a readable safetensors file (truncated or corrupted?): {e}"),
        )
    })
}

/// Copies a float tensor of a safetensors file into a tch tensor.
pub(crate) fn to_tensor(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView,
) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        other => {
            return Err(Error::checkpoint(
                path,
                format!("tensor {name} has dtype {other:?}; expected a float type"),
            ));
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_data_size(view.data(), &shape, kind).to_kind(Kind::Float))
}

/// Loads every variable of `vars` whose name starts with `prefix` from `path`, where the file
/// names them without the prefix. Missing tensors, shape mismatches and unexpected extra tensors
/// (other than those `ignorable` accepts) are errors that list the names at fault.
pub fn load_prefixed(
    vars: &VarStore,
    prefix: &str,
    path: &Path,
    ignorable: impl Fn(&str) -> bool,
) -> Result<()> {
    let bytes = read_file(path)?;
    let file = parse(path, &bytes)?;
    let targets: HashMap<String, Tensor> = vars
        .variables()
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v)))
        .collect();
    let names: BTreeSet<String> = file.names().into_iter().map(String::from).collect();
    let missing: Vec<&String> = targets.keys().filter(|k| !names.contains(*k)).collect();
    if !missing.is_empty() {
        let mut missing: Vec<_> = missing.into_iter().cloned().collect();
        missing.sort();
        return Err(Error::checkpoint(
            path,
            format!(
                "{} tensor(s) missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ),
        ));
    }
    let extra: Vec<&String> = names
        .iter()
        .filter(|k| !targets.contains_key(*k) && !ignorable(k))
        .collect();
    if !extra.is_empty() {
        return Err(Error::checkpoint(
            path,
            format!(
                "{} unexpected tensor(s), e.g. {:?} (wrong backbone?)",
                extra.len(),
                &extra[..extra.len().min(5)]
            ),
        ));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &targets {
            let view = file
                .tensor(name)
                .map_err(|e| Error::checkpoint(path, e.to_string()))?;
            let t = to_tensor(path, name, &view)?;
            if t.size() != var.size() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "tensor {name} has shape {:?}, the model expects {:?}",
                        t.size(),
                        var.size()
                    ),
                ));
            }
            var.shallow_clone()
                .copy_(&t.to_device(var.device()).to_kind(var.kind()));
        }
        Ok(())
    })
}
