//! `cargo xtask convert`.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Convert {
    /// Convert a llama.cpp GGUF file (v2 or v3) to a Hugging Face model directory:
    /// config.json, model.safetensors (f32), tokenizer.json and
    /// tokenizer_config.json.
    Gguf {
        /// The GGUF file.
        input: PathBuf,
        /// The model directory to create; it must not exist, and missing
        /// parent directories are created.
        output: PathBuf,
    },
}

pub fn run(command: Convert) -> Result<ExitCode> {
    match command {
        Convert::Gguf { input, output } => {
            llama::convert::gguf_to_model_dir(&input, &output, true)?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
