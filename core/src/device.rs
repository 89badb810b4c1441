//! Which device a model runs on: `cpu`, `cuda` (GPU 0) or `cuda:N`, as commands and `PEFTSPACE_DEVICE` name it.

use candle_core::Device;

use crate::{Error, Result};

/// Environment variable naming the device when no `--device` flag is given.
pub const DEVICE_ENV: &str = "PEFTSPACE_DEVICE";

/// A device as the user names it: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        match text {
            "cpu" => return Ok(DeviceChoice::Cpu),
            "cuda" => return Ok(DeviceChoice::Cuda(0)),
            _ => {}
        }
        text.strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| {
                Error::Missing(format!(
                    "device `{text}`: expected `cpu`, `cuda` or `cuda:N` (N the GPU index)"
                ))
            })
    }

    /// The default: GPU 0 when this build has CUDA and a GPU is present, else the CPU.
    pub fn default_for_build() -> Self {
        if cfg!(feature = "cuda") && Device::new_cuda(0).is_ok() {
            DeviceChoice::Cuda(0)
        } else {
            DeviceChoice::Cpu
        }
    }

    /// Opens the device. Asking for CUDA from a build without it, or for a GPU that is not there, is an error
    /// that says so (never a silent fall-back to the CPU).
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(index) => {
                if !cfg!(feature = "cuda") {
                    return Err(Error::Missing(format!(
                        "device cuda:{index}: this peftspace was built without CUDA; build it with the `cuda` \
                         feature (`scripts/cuda-build.sh --release`, see the README) or use --device cpu"
                    )));
                }
                Device::new_cuda(index).map_err(|e| {
                    Error::Missing(format!(
                        "device cuda:{index} is not available ({}); check the GPU index (nvidia-smi) or use \
                         --device cpu",
                        e.to_string().lines().next().unwrap_or_default()
                    ))
                })
            }
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(DeviceChoice::parse("cpu").ok(), Some(DeviceChoice::Cpu));
        assert_eq!(
            DeviceChoice::parse("cuda").ok(),
            Some(DeviceChoice::Cuda(0))
        );
        assert_eq!(
            DeviceChoice::parse("cuda:3").ok(),
            Some(DeviceChoice::Cuda(3))
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = DeviceChoice::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("cpu`, `cuda` or `cuda:N`"), "{e}");
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_is_a_clear_error() {
        let e = DeviceChoice::Cuda(0)
            .open()
            .expect_err("no cuda")
            .to_string();
        assert!(
            e.contains("built without CUDA") && e.contains("cuda-build.sh"),
            "{e}"
        );
        assert_eq!(DeviceChoice::default_for_build(), DeviceChoice::Cpu);
    }
}
