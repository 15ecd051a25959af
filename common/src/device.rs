//! Device and dtype selection from command-line style names.

use crate::{Error, Result};
use tch::{Device, Kind};

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when usable, else CPU).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" | "gpu" => cuda_device(0),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda_device(index),
            _ => Err(Error::InvalidInput(format!(
                "unknown device {name:?}: use cpu, cuda, cuda:N or auto"
            ))),
        },
    }
}

fn cuda_device(index: usize) -> Result<Device> {
    let count = tch::Cuda::device_count();
    if (index as i64) < count {
        Ok(Device::Cuda(index))
    } else {
        Err(Error::InvalidInput(format!(
            "device cuda:{index} requested but libtorch sees {count} CUDA device(s): \
             use --device cpu or auto"
        )))
    }
}

/// Returns the command-line name of a device: `cpu`, `cuda:N`, `mps`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(index) => format!("cuda:{index}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Parses a floating-point dtype name: `f32`, `bf16` or `f16`.
pub fn parse_kind(name: &str) -> Result<Kind> {
    match name {
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" => Ok(Kind::Half),
        _ => Err(Error::InvalidInput(format!(
            "unknown dtype {name:?}: use f32, bf16 or f16"
        ))),
    }
}

/// Returns the short name of a floating-point kind (`f32`, `bf16`, `f16`).
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "f32",
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        Kind::Double => "f64",
        _ => "other",
    }
}

/// Returns the machine's total memory from `/proc/meminfo`, or None where
/// that file is missing or unreadable.
pub fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Rejects `parameters` weights of 4 bytes each that cannot fit in the
/// machine's memory, before libtorch's allocation fails (the variable store
/// panics when it does). `what` names the model in the message.
pub fn check_parameters_fit(parameters: i64, what: &str) -> Result<()> {
    let bytes = parameters as f64 * 4.0;
    if let Some(total) = total_memory_bytes() {
        if bytes > total as f64 {
            return Err(Error::InvalidInput(format!(
                "{what} has {parameters} parameters, {:.1} GiB in f32, more than the \
                 {:.1} GiB of memory of this machine: use a smaller configuration",
                bytes / f64::from(1u32 << 30),
                total as f64 / f64::from(1u32 << 30)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn kind_names_round_trip() {
        for name in ["f32", "bf16", "f16"] {
            assert_eq!(kind_name(parse_kind(name).unwrap()), name);
        }
        let err = parse_kind("int8").unwrap_err().to_string();
        assert!(err.contains("int8"), "{err}");
    }
}
