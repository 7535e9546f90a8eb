//! Where the model runs: `cpu` or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{ModelError, Result};

/// A device as a user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(spec: &str) -> Result<Self> {
        let unknown = || ModelError::UnknownDevice {
            spec: spec.to_string(),
        };
        match spec.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => {
                let ordinal = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                ordinal.parse().map(DeviceSpec::Cuda).map_err(|_| unknown())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The candle device; `cuda:N` needs the `cuda` cargo feature.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => cuda_device(*ordinal, self),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize, spec: &DeviceSpec) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|source| ModelError::CudaUnavailable {
        spec: spec.to_string(),
        source: Box::new(source),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize, spec: &DeviceSpec) -> Result<Device> {
    Err(ModelError::CudaNotBuilt {
        spec: spec.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
        assert!("tpu"
            .parse::<DeviceSpec>()
            .unwrap_err()
            .to_string()
            .contains("cuda:N"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = DeviceSpec::Cuda(0).device().unwrap_err().to_string();
        assert!(
            err.contains("just build-cuda") && err.contains("--features cuda"),
            "{err}"
        );
    }

    /// With the feature, an ordinal past the machine's GPUs (or no GPU at all) is an
    /// error naming the device, not a panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn missing_gpu_is_a_clear_error() {
        let err = DeviceSpec::Cuda(999).device().unwrap_err().to_string();
        assert!(
            err.contains("cuda:999") && err.contains("nvidia-smi"),
            "{err}"
        );
    }
}
