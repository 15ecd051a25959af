//! Configuration: the Hugging Face `config.json`, resolved into [`Config`].

use common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One token id or several, as `eos_token_id` appears in `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

/// `rope_parameters` of `config.json` (transformers 5 and later).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: f64,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rope_type() -> String {
    "default".into()
}

/// `config.json` of a Hugging Face `llama` checkpoint, field for field.
///
/// Defaults are those of transformers' `LlamaConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Default: `num_attention_heads` (multi-head attention).
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Default: `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<i64>,
    pub vocab_size: i64,
    /// Default: 1e-6.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// The rotary base of transformers 4 configs. Default: 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// The rotary parameters of transformers 5 configs; wins over `rope_theta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Rotary scaling of transformers 4 configs (Llama 3.1); only `null` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Default: 2048.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: i64,
    /// Whether the output projection reuses the token embedding. Default: false.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the Q, K, V and output projections. Default: false.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the feed-forward projections. Default: false.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Default: `silu`, the only activation of the architecture.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Default: `llama`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_position_embeddings() -> i64 {
    2048
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_model_type() -> String {
    "llama".into()
}

/// The resolved configuration the model is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub hidden_size: i64,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: i64,
    pub num_layers: i64,
    /// Query heads.
    pub num_heads: i64,
    /// Key and value heads; fewer than `num_heads` is grouped-query attention.
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub vocab_size: i64,
    pub rms_norm_eps: f64,
    /// Base of the rotary angles.
    pub rope_theta: f64,
    /// Context length.
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::format(path, "config.json", e.to_string()))
    }

    /// Resolves defaults and checks the values.
    pub fn resolve(&self) -> Result<Config> {
        if !["llama", "smollm", "mistral"].contains(&self.model_type.as_str()) {
            return Err(Error::Unsupported(format!(
                "model_type {:?} is not a Llama-architecture model",
                self.model_type
            )));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act {:?} is not supported: Llama models use silu",
                self.hidden_act
            )));
        }
        let scaling = self.rope_scaling.as_ref().filter(|v| !v.is_null());
        let rope_type = self.rope_parameters.as_ref().map(|p| p.rope_type.as_str());
        if scaling.is_some() || rope_type.is_some_and(|t| t != "default") {
            // NOTE: the scaled rotary variants (linear, dynamic NTK, llama3)
            // are not implemented; such checkpoints are rejected here.
            return Err(Error::Unsupported(format!(
                "rotary scaling {} is not supported: only the default rotary embedding is",
                scaling.map_or_else(|| format!("{rope_type:?}"), |v| v.to_string())
            )));
        }
        let rope_theta = match (&self.rope_parameters, self.rope_theta) {
            (Some(p), _) => p.rope_theta,
            (None, Some(theta)) => theta,
            (None, None) => 10_000.0,
        };
        let head_dim = self
            .head_dim
            .unwrap_or_else(|| self.hidden_size / self.num_attention_heads.max(1));
        let config = Config {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            bos_token_id: self.bos_token_id,
            eos_token_ids: match &self.eos_token_id {
                None => vec![],
                Some(TokenIds::One(id)) => vec![*id],
                Some(TokenIds::Many(ids)) => ids.clone(),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Reads and resolves `config.json`. Errors name the file as well as the
    /// field at fault.
    pub fn from_file(path: &Path) -> Result<Self> {
        LlamaConfig::from_file(path)?
            .resolve()
            .map_err(|e| match e {
                Error::InvalidInput(message) => {
                    Error::InvalidInput(format!("{}: {message}", path.display()))
                }
                Error::Unsupported(message) => {
                    Error::Unsupported(format!("{}: {message}", path.display()))
                }
                other => other,
            })
    }

    /// Checks that the sizes are positive and consistent.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in sizes {
            if value <= 0 {
                return Err(Error::InvalidInput(format!(
                    "config: {name} is {value}, expected a positive number"
                )));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::InvalidInput(format!(
                "config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::InvalidInput(format!(
                "config: head_dim {} is odd, but rotary embeddings rotate pairs of dimensions",
                self.head_dim
            )));
        }
        if self.num_parameters() == i64::MAX {
            return Err(Error::InvalidInput(format!(
                "config: hidden_size {}, intermediate_size {}, vocab_size {} and \
                 num_hidden_layers {} give more parameters than an i64 counts",
                self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
            )));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(Error::InvalidInput(format!(
                "config: rms_norm_eps {} and rope_theta {} must be positive",
                self.rms_norm_eps, self.rope_theta
            )));
        }
        Ok(())
    }

    /// Returns the `config.json` that describes this configuration.
    pub fn to_hf(&self) -> LlamaConfig {
        LlamaConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_layers,
            num_attention_heads: self.num_heads,
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: Some(self.rope_theta),
            rope_parameters: None,
            rope_scaling: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            hidden_act: default_hidden_act(),
            bos_token_id: self.bos_token_id,
            eos_token_id: match self.eos_token_ids.as_slice() {
                [] => None,
                [id] => Some(TokenIds::One(*id)),
                ids => Some(TokenIds::Many(ids.to_vec())),
            },
            model_type: default_model_type(),
        }
    }

    /// Returns the number of parameters, from the layer shapes. The
    /// arithmetic saturates at `i64::MAX`, which [`Config::validate`] rejects.
    pub fn num_parameters(&self) -> i64 {
        let mul = |a: i64, b: i64| a.saturating_mul(b);
        let d = self.hidden_size;
        let q = mul(self.num_heads, self.head_dim);
        let kv = mul(self.num_kv_heads, self.head_dim);
        let ff = self.intermediate_size;
        let attn_bias = if self.attention_bias {
            q.saturating_add(mul(2, kv)).saturating_add(d)
        } else {
            0
        };
        let mlp_bias = if self.mlp_bias {
            mul(2, ff).saturating_add(d)
        } else {
            0
        };
        let attention = [mul(d, q), mul(2, mul(d, kv)), mul(q, d), attn_bias];
        let mlp = [mul(3, mul(d, ff)), mlp_bias];
        let layer = attention
            .iter()
            .chain(&mlp)
            .fold(mul(2, d), |sum, x| sum.saturating_add(*x));
        let embedding = mul(self.vocab_size, d);
        let head = if self.tie_word_embeddings {
            0
        } else {
            embedding
        };
        embedding
            .saturating_add(mul(self.num_layers, layer))
            .saturating_add(d)
            .saturating_add(head)
    }

    /// Counts the embedding parameters: the token table, plus the output
    /// projection to the vocabulary when it is a separate matrix (the output
    /// embedding). A tied output projection is the token table, counted once.
    /// Rotary position encoding has no parameters. Saturates at `i64::MAX`.
    pub fn embedding_parameters(&self) -> i64 {
        let table = self.vocab_size.saturating_mul(self.hidden_size);
        if self.tie_word_embeddings {
            table
        } else {
            table.saturating_mul(2)
        }
    }

    /// Counts the parameters outside the embeddings: the layers and the
    /// final norm, the `N` of Kaplan et al. (2020).
    pub fn non_embedding_parameters(&self) -> i64 {
        self.num_parameters()
            .saturating_sub(self.embedding_parameters())
            .max(0)
    }

    /// Returns the bytes of keys and values that a KV cache stores per token,
    /// `2 * num_layers * num_kv_heads * head_dim * bytes_per_element`: 4 bytes
    /// per element in f32, 2 in bf16 or f16. Grouped-query attention divides
    /// it by `num_heads / num_kv_heads`. Saturates at `i64::MAX`.
    pub fn kv_cache_bytes_per_token(&self, bytes_per_element: i64) -> i64 {
        [
            self.num_layers,
            self.num_kv_heads,
            self.head_dim,
            bytes_per_element,
        ]
        .iter()
        .fold(2i64, |product, &x| product.saturating_mul(x))
    }

    /// Estimates the forward FLOPs per token with Kaplan et al. (2020),
    /// section 2.1: `2 * N + 2 * n_layer * n_ctx * d_attn`, where `N` is
    /// [`Config::non_embedding_parameters`], `n_ctx` is
    /// `max_position_embeddings` and `d_attn = num_heads * head_dim`. A
    /// multiply-add counts as 2 FLOPs.
    ///
    /// The attention term counts 2 FLOPs per key and query dimension, as
    /// Kaplan et al. do. That is the multiply-adds of the scores alone, or of
    /// the scores and the weighted values averaged over a full causal context.
    /// The estimate leaves out the output projection to the vocabulary
    /// (`2 * hidden_size * vocab_size` more), the rotary embedding, the
    /// softmax and the SwiGLU product. Saturates at `i64::MAX`.
    pub fn forward_flops_per_token(&self) -> i64 {
        let d_attn = self.num_heads.saturating_mul(self.head_dim);
        let attention = [self.num_layers, self.max_position_embeddings, d_attn]
            .iter()
            .fold(2i64, |product, &x| product.saturating_mul(x));
        self.non_embedding_parameters()
            .saturating_mul(2)
            .saturating_add(attention)
    }

    /// A configuration with the shape of a published model and the Llama
    /// tokenizer (32,000 tokens, BOS 1, EOS 2).
    #[allow(clippy::too_many_arguments)]
    fn llama(
        hidden_size: i64,
        intermediate_size: i64,
        num_layers: i64,
        num_heads: i64,
        num_kv_heads: i64,
        context: i64,
        rms_norm_eps: f64,
    ) -> Self {
        Self {
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size / num_heads,
            vocab_size: 32_000,
            rms_norm_eps,
            rope_theta: 10_000.0,
            max_position_embeddings: context,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    }

    /// Llama 1 7B (Touvron et al., 2023, table 2): 6.7B parameters.
    pub fn llama1_7b() -> Self {
        Self::llama(4096, 11008, 32, 32, 32, 2048, 1e-6)
    }

    /// Llama 1 13B: 13.0B parameters.
    pub fn llama1_13b() -> Self {
        Self::llama(5120, 13824, 40, 40, 40, 2048, 1e-6)
    }

    /// Llama 1 33B: 32.5B parameters.
    pub fn llama1_33b() -> Self {
        Self::llama(6656, 17920, 60, 52, 52, 2048, 1e-6)
    }

    /// Llama 1 65B: 65.2B parameters.
    pub fn llama1_65b() -> Self {
        Self::llama(8192, 22016, 80, 64, 64, 2048, 1e-5)
    }

    /// Llama 2 7B (Touvron et al., 2023b): 4096-token context.
    pub fn llama2_7b() -> Self {
        Self::llama(4096, 11008, 32, 32, 32, 4096, 1e-5)
    }

    /// Llama 2 13B.
    pub fn llama2_13b() -> Self {
        Self::llama(5120, 13824, 40, 40, 40, 4096, 1e-5)
    }

    /// Llama 2 70B, with grouped-query attention over 8 KV heads.
    pub fn llama2_70b() -> Self {
        Self::llama(8192, 28672, 80, 64, 8, 4096, 1e-5)
    }

    /// SmolLM2-135M (Hugging Face, 2024): 30 layers, 9 query heads over 3 KV
    /// heads, a tied 49,152-token embedding.
    pub fn smollm2_135m() -> Self {
        Self {
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49_152,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    }

    /// Returns the named presets, for listings and comparisons.
    pub fn presets() -> Vec<(&'static str, Self)> {
        vec![
            ("llama1-7b", Self::llama1_7b()),
            ("llama1-13b", Self::llama1_13b()),
            ("llama1-33b", Self::llama1_33b()),
            ("llama1-65b", Self::llama1_65b()),
            ("llama2-7b", Self::llama2_7b()),
            ("llama2-13b", Self::llama2_13b()),
            ("llama2-70b", Self::llama2_70b()),
            ("smollm2-135m", Self::smollm2_135m()),
        ]
    }
}
