//! Device selection: `cpu`, `cuda`, `cuda:N`, `metal`, checked against the features this binary
//! was built with so that a wrong `--device` fails at start-up with a clear message.

use candle_core::{DType, Device};

/// Why a device string could not be turned into a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}; expected cpu, cuda, cuda:N or metal")]
    Unknown(String),
    #[error("device {0:?} needs a build with `--features {1}`")]
    NotBuilt(String, &'static str),
    #[error("unknown precision {0:?}; expected f32, f16 or bf16")]
    Precision(String),
    #[error("cannot open device {0:?}: {1}")]
    Open(String, candle_core::Error),
}

/// Parses and opens a device.
///
/// # Errors
/// [`DeviceError`] for an unknown name, a device this build lacks, or one that fails to open.
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    let spec = spec.trim().to_ascii_lowercase();
    let (name, ordinal) = match spec.split_once(':') {
        Some((name, n)) => (
            name,
            n.parse::<usize>()
                .map_err(|_| DeviceError::Unknown(spec.clone()))?,
        ),
        None => (spec.as_str(), 0),
    };
    match name {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => {
            Device::new_cuda(ordinal).map_err(|e| DeviceError::Open(spec.clone(), e))
        }
        "cuda" => Err(DeviceError::NotBuilt(spec.clone(), "cuda")),
        "metal" if cfg!(feature = "metal") => {
            Device::new_metal(ordinal).map_err(|e| DeviceError::Open(spec.clone(), e))
        }
        "metal" => Err(DeviceError::NotBuilt(spec.clone(), "metal")),
        _ => Err(DeviceError::Unknown(spec.clone())),
    }
}

/// Parses a compute precision: `f32` (every device), `f16` or `bf16` (GPUs: half the memory
/// traffic and tensor-core matrix products; logits and features still come back in f32).
///
/// # Errors
/// [`DeviceError::Precision`] for any other name.
pub fn parse_precision(spec: &str) -> Result<DType, DeviceError> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(DeviceError::Precision(spec.to_string())),
    }
}

/// Sizes the CPU compute pool (rayon's global pool, where candle's CPU kernels and ours run)
/// to `threads`, by default the CPUs this process may use: `available_parallelism` counts the
/// container's CPU quota (cgroup `cpu.max`) and affinity mask, so a pod limited to 2 CPUs on a
/// 64-core node computes on 2 threads instead of thrashing. Returns the pool's size; only the
/// first call in a process takes effect.
pub fn init_threads(threads: Option<usize>) -> usize {
    let n = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("labeld-compute-{i}"))
        .build_global();
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_parses_and_unknown_devices_do_not() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse_device(" CPU "), Ok(Device::Cpu)));
        assert!(matches!(parse_device("tpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(
            parse_device("cuda:x"),
            Err(DeviceError::Unknown(_))
        ));
        assert_eq!(parse_precision("F16").ok(), Some(DType::F16));
        assert_eq!(parse_precision("bf16").ok(), Some(DType::BF16));
        assert!(matches!(
            parse_precision("f8"),
            Err(DeviceError::Precision(_))
        ));
        if !cfg!(feature = "cuda") {
            assert!(matches!(
                parse_device("cuda:1"),
                Err(DeviceError::NotBuilt(..))
            ));
        }
    }
}
