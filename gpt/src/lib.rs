//! GPT-1, GPT-2 and GPT-3 decoders on libtorch, with GPT-1's fine-tuning
//! heads and the Hugging Face `openai-gpt`, `gpt2` and `gpt_neo` checkpoints.
//!
//! - GPT-1 (Radford et al., 2018, "Improving Language Understanding by
//!   Generative Pre-Training"): post-norm blocks, learned positions, and
//!   fine-tuning heads trained with an auxiliary language-model loss.
//! - GPT-2 (Radford et al., 2019, "Language Models are Unsupervised
//!   Multitask Learners"): pre-norm blocks, a final norm, the four published
//!   sizes.
//! - GPT-3 (Brown et al., 2020, "Language Models are Few-Shot Learners"): the
//!   GPT-2 block in eight sizes, dense attention layers alternating with
//!   locally banded ones. GPT-Neo, the public model with that alternation,
//!   loads from its checkpoints.
//!
//! The output projection is tied to the token embedding in every family.
//! GPT-1 and GPT-2 checkpoints store their projections as `Conv1D` weights,
//! `(in, out)`; they are transposed at load and back at save.
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! let dir = std::path::Path::new("gpt2");
//! let model = gpt::Gpt::load(dir, tch::Device::Cpu, tch::Kind::Float)?;
//! let logits = model.forward(&tch::Tensor::from_slice(&[464i64, 3290]).unsqueeze(0), &mut model.new_cache())?;
//! # Ok(()) }
//! ```

mod config;
pub mod data;
mod heads;
mod model;
pub mod train;

pub use config::{AttentionKind, Config, Layout, GPT1_VOCAB_SIZE, GPT2_VOCAB_SIZE, GPT3_WINDOW};
pub use heads::{FineTuneLoss, MultipleChoice, SequenceClassifier, GPT1_LM_COEF, IGNORE_INDEX};
pub use model::{Cache, Gpt, BASE_PREFIX};

use common::checkpoint::{self, LoadOptions};
use common::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Checkpoint tensors that the model does not use: the causal-mask buffers
/// of older transformers versions and the tied output projection.
const IGNORED_SUFFIXES: &[&str] = &[
    ".attn.bias",
    ".attn.masked_bias",
    ".attention.bias",
    ".attention.masked_bias",
    "lm_head.weight",
];

/// True for the weights that GPT-1 and GPT-2 checkpoints store as `Conv1D`,
/// transposed from the `(out, in)` layout of a linear layer.
fn is_conv1d_weight(layout: Layout, name: &str) -> bool {
    layout != Layout::GptNeo
        && (name.ends_with(".c_attn.weight")
            || name.ends_with(".c_proj.weight")
            || name.ends_with(".c_fc.weight"))
}

fn read_config(dir: &Path) -> Result<(PathBuf, Value, Config)> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: a model directory needs config.json and model.safetensors",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&path, "JSON", e.to_string()))?;
    let config = Config::from_hf(&value, &path)?;
    Ok((path, value, config))
}

/// Rejects a configuration that needs more weights than the checkpoint of
/// `dir` stores, before the model allocates them, so that a config.json of a
/// larger model fails with a message instead of exhausting memory.
fn check_checkpoint_size(config: &Config, dir: &Path) -> Result<Vec<PathBuf>> {
    let files = checkpoint::model_files(dir)?;
    let stored = checkpoint::count_elements(&files)?;
    let needed = config.num_parameters();
    if i128::from(needed) > i128::from(stored) {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(Error::InvalidInput(format!(
            "{}: the configuration (vocab_size {}, context {}, width {}, {} layers) needs \
             {needed} weights, but {} stores {stored}: check that config.json belongs to \
             these weights",
            dir.join("config.json").display(),
            config.vocab_size,
            config.context_length,
            config.hidden_size,
            config.num_layers,
            names.join(", ")
        )));
    }
    Ok(files)
}

/// Builds a model with `build` in a new variable store on `device`, after
/// checking that the checkpoint of `dir` is large enough, and loads the
/// checkpoint into it.
fn build_and_load<M>(
    dir: &Path,
    config: &Config,
    device: Device,
    kind: Kind,
    build: impl FnOnce(&tch::nn::Path) -> Result<M>,
) -> Result<(M, VarStore)> {
    let files = check_checkpoint_size(config, dir)?;
    let mut vs = VarStore::new(device);
    let model = build(&vs.root())?;
    vs.set_kind(kind);
    load_files(&mut vs, config, &files)?;
    Ok((model, vs))
}

/// Loads the weights of the model directory `dir` into `vs`, strictly:
/// checkpoints of the base model (`wte.weight`) and of the head models
/// (`transformer.wte.weight`) both load.
pub fn load_weights(vs: &mut VarStore, config: &Config, dir: &Path) -> Result<()> {
    let files = check_checkpoint_size(config, dir)?;
    load_files(vs, config, &files)
}

/// Loads checkpoint `files` whose size has been checked into `vs`.
fn load_files(vs: &mut VarStore, config: &Config, files: &[PathBuf]) -> Result<()> {
    let layout = config.layout;
    let transpose = move |name: &str, tensor: Tensor| -> Result<Tensor> {
        if is_conv1d_weight(layout, name) && tensor.dim() == 2 {
            Ok(tensor.f_t_copy()?.f_contiguous()?)
        } else {
            Ok(tensor)
        }
    };
    let options = LoadOptions {
        ignore_suffixes: IGNORED_SUFFIXES,
        transform: Some(&transpose),
        base_prefix: Some(BASE_PREFIX),
        // OpenAIGPTDoubleHeadsModel saves the tied embedding as the head.
        aliases: &[("transformer.tokens_embed.weight", "lm_head.weight")],
    };
    checkpoint::load_into(vs, files, &options)
}

/// Writes a model directory: `config.json` (the given value, normally
/// [`Config::to_hf`] with any head fields added) and `model.safetensors`
/// with every variable of `vs` under its name, `Conv1D` weights transposed
/// back to the checkpoint layout. Each file is written atomically.
pub fn save(vs: &VarStore, config: &Config, config_json: &Value, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, tensor)| {
            let tensor = if is_conv1d_weight(config.layout, &name) {
                tensor.f_t_copy()?.f_contiguous()?
            } else {
                tensor.shallow_clone()
            };
            Ok((name, tensor))
        })
        .collect::<Result<_>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    checkpoint::save(&dir.join(checkpoint::SINGLE_FILE), &tensors, Some(metadata))?;
    let text = serde_json::to_string_pretty(config_json)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    checkpoint::write_atomic(&dir.join("config.json"), text.as_bytes())
}

impl Gpt {
    /// Loads a model directory (`config.json` and `model.safetensors` or its
    /// shards) onto `device` with weights of dtype `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Ok(Self::load_with_var_store(dir, device, kind)?.0)
    }

    /// Loads a model directory and also returns the variable store that owns
    /// the weights, for training or saving.
    pub fn load_with_var_store(dir: &Path, device: Device, kind: Kind) -> Result<(Self, VarStore)> {
        let (_, _, config) = read_config(dir)?;
        build_and_load(dir, &config, device, kind, |path| Gpt::new(path, &config))
    }
}

impl SequenceClassifier {
    /// Loads a classifier saved by [`SequenceClassifier::save`] or by
    /// transformers' `*ForSequenceClassification` (`num_labels` from
    /// `id2label`, and `pad_token_id`).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<(Self, VarStore)> {
        let (path, value, config) = read_config(dir)?;
        let num_labels = value
            .get("id2label")
            .and_then(Value::as_object)
            .map(|m| m.len() as i64)
            .or_else(|| value.get("num_labels").and_then(Value::as_i64))
            .unwrap_or(2);
        let pad = match value.get("pad_token_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                Error::format(
                    &path,
                    "GPT config",
                    format!("pad_token_id is not an integer: {v}"),
                )
            })?),
        };
        build_and_load(dir, &config, device, kind, |path| {
            SequenceClassifier::new(path, &config, num_labels, pad)
        })
    }

    /// Loads the decoder of a language model's directory and adds a new,
    /// randomly initialised classifier of `num_labels` labels.
    pub fn from_language_model(
        dir: &Path,
        num_labels: i64,
        pad_token_id: Option<i64>,
        device: Device,
    ) -> Result<(Self, VarStore)> {
        let (gpt, vs) = Gpt::load_with_var_store(dir, device, Kind::Float)?;
        let model = SequenceClassifier::with_decoder(&vs.root(), gpt, num_labels, pad_token_id)?;
        Ok((model, vs))
    }

    /// Writes the classifier as a model directory that transformers' sequence
    /// classification classes load.
    pub fn save(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        let config = self.gpt.config();
        let mut value = config.to_hf();
        let class = match config.layout {
            Layout::OpenAiGpt => "OpenAIGPTForSequenceClassification",
            Layout::Gpt2 => "GPT2ForSequenceClassification",
            Layout::GptNeo => "GPTNeoForSequenceClassification",
        };
        value["architectures"] = json!([class]);
        let labels: serde_json::Map<String, Value> = (0..self.num_labels())
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        value["id2label"] = Value::Object(labels);
        value["pad_token_id"] = json!(self.pad_token_id());
        save(vs, config, &value, dir)
    }
}

impl MultipleChoice {
    /// Loads a model saved by transformers' `OpenAIGPTDoubleHeadsModel`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<(Self, VarStore)> {
        let (_, _, config) = read_config(dir)?;
        build_and_load(dir, &config, device, kind, |path| {
            MultipleChoice::new(path, &config)
        })
    }
}
