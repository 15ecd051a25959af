//! `cargo xtask convert`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use common::checkpoint;
use std::path::{Path, PathBuf};
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
    /// Write tokenizer.json and tokenizer_config.json from the vocabulary
    /// files of a tokenizer.
    #[command(subcommand)]
    Tokenizer(Tokenizer),
}

/// The tokenizer formats that `convert tokenizer` reads.
#[derive(Subcommand)]
pub enum Tokenizer {
    /// GPT-2's byte-level BPE from OpenAI's encoder.json and vocab.bpe
    /// (vocab.json and merges.txt in the Hugging Face gpt2 checkpoint).
    Gpt2 {
        /// The vocabulary: a JSON object that maps each token to its id.
        #[arg(value_name = "ENCODER_JSON")]
        encoder: PathBuf,
        /// The merges, one pair of tokens per line.
        #[arg(value_name = "VOCAB_BPE")]
        merges: PathBuf,
        /// The directory to write into. It is created if missing and must not
        /// already contain tokenizer.json or tokenizer_config.json.
        #[arg(value_name = "OUT_DIR")]
        output: PathBuf,
    },
}

pub fn run(command: Convert) -> Result<ExitCode> {
    match command {
        Convert::Gguf { input, output } => {
            llama::convert::gguf_to_model_dir(&input, &output, true)?;
            eprintln!("wrote {}", output.display());
        }
        Convert::Tokenizer(Tokenizer::Gpt2 {
            encoder,
            merges,
            output,
        }) => {
            let (tokenizer, config) = common::tokenizer::gpt2_from_files(&encoder, &merges)?;
            write_tokenizer(&output, &tokenizer, &config)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, creating
/// it if needed, and reports each file on stderr.
fn write_tokenizer(
    dir: &Path,
    tokenizer: &serde_json::Value,
    config: &serde_json::Value,
) -> Result<()> {
    let files = [
        (dir.join("tokenizer.json"), tokenizer),
        (dir.join("tokenizer_config.json"), config),
    ];
    for (path, _) in &files {
        if path.exists() {
            bail!(
                "{} already exists: remove it, or choose another output directory",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create the directory {}", dir.display()))?;
    for (path, value) in &files {
        let text = serde_json::to_string_pretty(value)?;
        checkpoint::write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
