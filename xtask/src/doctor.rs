//! `cargo xtask doctor`: what this build links and which data files exist.

use anyhow::Result;
use common::paths::{self, DATA_FILES, SETUP_COMMAND};
use std::path::Path;
use std::process::ExitCode;

/// libtorch's directory as the build saw it (`LIBTORCH`, set by
/// `.cargo/config.toml`).
const LIBTORCH: Option<&str> = option_env!("LIBTORCH");

fn libtorch_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("version.py")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
}

pub fn run() -> Result<ExitCode> {
    let mut problems = 0;
    match LIBTORCH {
        Some(dir) => {
            let dir = Path::new(dir);
            let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            match libtorch_version(dir) {
                Some(version) => println!("libtorch  {version} at {}", real.display()),
                None => {
                    problems += 1;
                    println!(
                        "libtorch  version unknown at {}: run `{SETUP_COMMAND}`",
                        real.display()
                    );
                }
            }
        }
        None => println!("libtorch  linked from a system location (LIBTORCH was not set)"),
    }
    println!("threads   {} intra-op", tch::get_num_threads());
    if tch::Cuda::is_available() {
        println!(
            "cuda      usable: {} device(s), cuDNN {}",
            tch::Cuda::device_count(),
            if tch::Cuda::cudnn_is_available() {
                "available"
            } else {
                "unavailable"
            }
        );
    } else {
        println!("cuda      not usable (no CUDA device or driver); models run on the CPU");
    }

    let python = paths::python();
    if python.is_file() {
        println!("python    {} (references and benchmarks)", python.display());
    } else {
        problems += 1;
        println!(
            "python    missing {}: run `{SETUP_COMMAND}`",
            python.display()
        );
    }

    println!("data files:");
    for file in DATA_FILES {
        match file.location() {
            Ok(path) if path.exists() => {
                println!("  found    {:<36} {}", file.description, path.display())
            }
            Ok(path) => {
                problems += 1;
                println!(
                    "  missing  {:<36} {} (package {}): run `{SETUP_COMMAND}`",
                    file.description,
                    path.display(),
                    file.package
                );
            }
            Err(e) => {
                problems += 1;
                println!("  missing  {:<36} {e}", file.description);
            }
        }
    }

    let model = crate::models::default_model_dir();
    if model.join("config.json").is_file() {
        println!("model     {} (converted)", model.display());
    } else {
        println!(
            "model     {} not converted yet: `cargo xtask generate` converts it on first use",
            model.display()
        );
    }

    if problems == 0 {
        println!("all set");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s): run `{SETUP_COMMAND}`, then `cargo xtask doctor` again");
        Ok(ExitCode::FAILURE)
    }
}
