//! Where a detector runs: [`DeviceSpec`] (`auto`, `cpu`, `cuda`, `cuda:N`) and its resolution to
//! a libtorch device.

use crate::{Error, Result};
use tch::{Cuda, Device};

/// Where a detector runs, as a user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first CUDA GPU when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    /// The libtorch device; asking for CUDA where none is usable is an error (rather than a
    /// silent fall-back to the CPU).
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceSpec::Auto => Ok(Device::cuda_if_available()),
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(index) => {
                let err = |message: String| Error::Device {
                    device: self.to_string(),
                    message,
                };
                let count = Cuda::device_count() as usize;
                if count == 0 {
                    return Err(err(
                        "CUDA is not available (no GPU, or a binary built without the `cuda` \
                         feature)"
                            .into(),
                    ));
                }
                if index >= count {
                    return Err(err(format!("only {count} CUDA device(s) present")));
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    /// `auto`, `cpu`, `cuda` or `cuda:N`, in any case.
    fn from_str(spec: &str) -> Result<Self> {
        let err = |message: String| Error::Device {
            device: spec.to_string(),
            message,
        };
        match spec.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            s => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| err(format!("{n:?} is not a device index"))),
                None => Err(err("expected auto, cpu, cuda or cuda:N".into())),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Turns a device string into a [`tch::Device`] ([`DeviceSpec`], then [`DeviceSpec::resolve`]).
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.resolve()
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
