//! Llama 1, Llama 2 and Llama-architecture decoders (such as SmolLM2) on
//! libtorch.
//!
//! The architecture is that of Touvron et al. (2023), "LLaMA: Open and
//! Efficient Foundation Language Models", and its Llama 2 successor: pre-norm
//! blocks with RMSNorm, rotary position embeddings, a SwiGLU feed-forward
//! layer and, in the larger Llama 2 models, grouped-query attention. The
//! reference implementation is `LlamaForCausalLM` of Hugging Face
//! transformers, whose checkpoints load by name.
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! let dir = std::path::Path::new("SmolLM2-135M-Instruct");
//! let model = llama::Llama::load(dir, tch::Device::Cpu, tch::Kind::Float)?;
//! let tokenizer = common::tokenizer::Tokenizer::from_dir(dir)?;
//! # Ok(()) }
//! ```

mod config;
pub mod convert;
mod model;

pub use config::{Config, LlamaConfig, RopeParameters, TokenIds};
pub use model::{Cache, Llama};

use common::checkpoint::{self, LoadOptions};
use common::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind};

/// Buffers that some checkpoints store but the model recomputes.
const IGNORED_SUFFIXES: &[&str] = &["rotary_emb.inv_freq"];

impl Llama {
    /// Loads a model directory (`config.json` and `model.safetensors` or its
    /// shards) onto `device` with weights of dtype `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Ok(Self::load_with_var_store(dir, device, kind)?.0)
    }

    /// Loads a model directory and also returns the variable store that owns
    /// the weights, for training or saving.
    pub fn load_with_var_store(dir: &Path, device: Device, kind: Kind) -> Result<(Self, VarStore)> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} not found: a model directory needs config.json and model.safetensors",
                config_path.display()
            )));
        }
        let config = Config::from_file(&config_path)?;
        let files = checkpoint::model_files(dir)?;
        check_checkpoint_size(&config_path, &config, &files)?;
        let mut vs = VarStore::new(device);
        let model = Llama::new(&vs.root(), &config)?;
        vs.set_kind(kind);
        let options = LoadOptions {
            ignore_suffixes: IGNORED_SUFFIXES,
            ..Default::default()
        };
        checkpoint::load_into(&mut vs, &files, &options)?;
        Ok((model, vs))
    }
}

/// Rejects a configuration that needs more weights than the checkpoint
/// stores before the model allocates them, so that a config.json of a larger
/// model fails with a message instead of exhausting memory.
fn check_checkpoint_size(config_path: &Path, config: &Config, files: &[PathBuf]) -> Result<()> {
    let stored = checkpoint::count_elements(files)?;
    let minimum = min_parameters(config);
    if minimum.is_some_and(|n| n <= u128::from(stored)) {
        return Ok(());
    }
    let needed = minimum.map_or_else(|| "2^128".to_string(), |n| n.to_string());
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(Error::InvalidInput(format!(
        "{}: vocab_size {}, hidden_size {}, intermediate_size {}, num_hidden_layers {}, \
         num_attention_heads {} and head_dim {} need at least {needed} weights, but {} \
         stores {stored}: check that config.json belongs to these weights",
        config_path.display(),
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_layers,
        config.num_heads,
        config.head_dim,
        names.join(", ")
    )))
}

/// Returns a lower bound on the parameter count of `config`: the token
/// embedding and, per layer, the Q and output projections and the SwiGLU
/// layer. None when it overflows, which only an absurd configuration does.
fn min_parameters(config: &Config) -> Option<u128> {
    let size = |value: i64| u128::try_from(value).ok();
    let (d, ff) = (size(config.hidden_size)?, size(config.intermediate_size)?);
    let q = size(config.num_heads)?.checked_mul(size(config.head_dim)?)?;
    let embedding = size(config.vocab_size)?.checked_mul(d)?;
    let attention = d.checked_mul(q)?.checked_mul(2)?;
    let mlp = d.checked_mul(ff)?.checked_mul(3)?;
    let layers = size(config.num_layers)?.checked_mul(attention.checked_add(mlp)?)?;
    embedding.checked_add(layers)
}
