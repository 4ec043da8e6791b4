//! Parsing of user device strings (`auto`, `cpu`, `cuda`, `cuda:N`).

use crate::{Error, Result};
use tch::{Cuda, Device};

/// Turns a device string into a [`tch::Device`].
///
/// `auto` picks the first CUDA device when one is usable, else the CPU. Asking for CUDA where
/// none is usable is an error (rather than a silent fall-back to the CPU).
pub fn parse_device(spec: &str) -> Result<Device> {
    let err = |message: String| Error::Device {
        device: spec.to_string(),
        message,
    };
    match spec.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let index = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| err(format!("{n:?} is not a device index")))?,
            };
            let count = Cuda::device_count() as usize;
            if count == 0 {
                return Err(err(
                    "CUDA is not available (no GPU, or a binary built without the `cuda` feature)"
                        .into(),
                ));
            }
            if index >= count {
                return Err(err(format!("only {count} CUDA device(s) present")));
            }
            Ok(Device::Cuda(index))
        }
        _ => Err(err("expected auto, cpu, cuda or cuda:N".into())),
    }
}

/// The canonical string of a device, the inverse of [`parse_device`].
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX-BF16): only then
/// are libtorch's bfloat16 matmuls faster than float32 ones rather than emulated. Reads the
/// flags of `/proc/cpuinfo`; false where there is none.
pub fn cpu_has_native_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| {
                    l.split_whitespace()
                        .any(|f| f == "avx512_bf16" || f == "amx_bf16")
                })
        })
        .unwrap_or(false)
}
