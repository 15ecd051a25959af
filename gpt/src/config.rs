//! GPT configurations: read from and written to Hugging Face `config.json`
//! files (`openai-gpt`, `gpt2`, `gpt_neo`), and the published sizes.

use common::nn::Activation;
use common::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The block form and tensor names of a checkpoint family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// GPT-1 (`openai-gpt`): post-norm blocks, no final norm, fused QKV
    /// projection stored as `Conv1D` (`tokens_embed`, `h.N.attn.c_attn`).
    OpenAiGpt,
    /// GPT-2 and GPT-3 (`gpt2`): pre-norm blocks and a final norm, fused QKV
    /// projection stored as `Conv1D` (`wte`, `h.N.attn.c_attn`, `ln_f`).
    Gpt2,
    /// GPT-Neo (`gpt_neo`): pre-norm blocks and a final norm, separate Q, K
    /// and V projections without bias (`h.N.attn.attention.q_proj`).
    GptNeo,
}

impl Layout {
    /// True for the post-norm blocks of GPT-1.
    pub fn post_norm(self) -> bool {
        self == Self::OpenAiGpt
    }
}

/// The keys one layer's attention may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKind {
    /// Every earlier position.
    Dense,
    /// Only the `window_size` most recent positions, its own included (the
    /// locally banded pattern of the Sparse Transformer that GPT-3
    /// alternates with dense layers).
    Banded,
}

/// A GPT model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub layout: Layout,
    pub vocab_size: i64,
    /// The number of learned positions, the longest context.
    pub context_length: i64,
    pub hidden_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    /// Usually `hidden_size / num_heads`; GPT-3 13B has 40 heads of 128 in a
    /// stream of width 5140.
    pub head_dim: i64,
    /// The width of the feed-forward layer, `4 * hidden_size` in every
    /// published size.
    pub intermediate_size: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    /// One entry per layer.
    pub attention_layers: Vec<AttentionKind>,
    /// The window of banded layers.
    pub window_size: i64,
    /// Scale attention scores by `1 / sqrt(head_dim)`; GPT-Neo does not.
    pub scale_attention: bool,
    /// Dropout on embeddings, attention weights and residual branches
    /// during training; 0 at inference.
    pub dropout: f64,
}

/// GPT-2's vocabulary: 50,000 merges, 256 bytes and `<|endoftext|>`.
pub const GPT2_VOCAB_SIZE: i64 = 50257;
/// GPT-1's vocabulary: 40,000 merges and the characters of its corpus.
pub const GPT1_VOCAB_SIZE: i64 = 40478;
/// The window of banded layers in the GPT-3 presets. Brown et al. (2020) do
/// not state it, so the presets use GPT-Neo's default window of 256.
pub const GPT3_WINDOW: i64 = 256;
/// The BPE vocabulary of DALL-E's captions.
const DALL_E_TEXT_VOCAB_SIZE: i64 = 16384;
/// The text positions of DALL-E, each with its own learned padding token.
const DALL_E_TEXT_POSITIONS: i64 = 256;
/// The codes of DALL-E's dVAE, one per 8 x 8 patch of a 256 x 256 image.
const DALL_E_IMAGE_VOCAB_SIZE: i64 = 8192;
/// The image positions of DALL-E, a 32 x 32 grid of codes.
const DALL_E_IMAGE_POSITIONS: i64 = 1024;

fn int(map: &Map<String, Value>, keys: &[&str], default: Option<i64>, path: &Path) -> Result<i64> {
    for key in keys {
        match map.get(*key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return v.as_i64().ok_or_else(|| {
                    Error::format(path, "GPT config", format!("{key} is not an integer: {v}"))
                })
            }
        }
    }
    default
        .ok_or_else(|| Error::format(path, "GPT config", format!("missing {}", keys.join(" or "))))
}

fn float(map: &Map<String, Value>, key: &str, default: f64, path: &Path) -> Result<f64> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| {
            Error::format(path, "GPT config", format!("{key} is not a number: {v}"))
        }),
    }
}

fn string<'a>(map: &'a Map<String, Value>, key: &str, default: &'a str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or(default)
}

fn parse_attention_layers(
    map: &Map<String, Value>,
    num_layers: i64,
    path: &Path,
) -> Result<Vec<AttentionKind>> {
    let bad = |message: String| Error::format(path, "GPT config", message);
    let kind = |v: &Value| match v.as_str() {
        Some("global") => Ok(AttentionKind::Dense),
        Some("local") => Ok(AttentionKind::Banded),
        _ => Err(bad(format!(
            "attention type {v} is neither \"global\" nor \"local\""
        ))),
    };
    let layers = if let Some(list) = map.get("attention_layers").and_then(Value::as_array) {
        list.iter().map(kind).collect::<Result<Vec<_>>>()?
    } else if let Some(groups) = map.get("attention_types").and_then(Value::as_array) {
        // [[["global", "local"], 12]]: the pattern repeated 12 times.
        let mut layers = Vec::new();
        for group in groups {
            let pattern = group.get(0).and_then(Value::as_array);
            let repeat = group.get(1).and_then(Value::as_u64);
            let (Some(pattern), Some(repeat)) = (pattern, repeat) else {
                return Err(bad(format!(
                    "attention_types entry {group} is not [[types...], count]"
                )));
            };
            for _ in 0..repeat.min(1 << 16) {
                for v in pattern {
                    layers.push(kind(v)?);
                }
            }
        }
        layers
    } else {
        vec![AttentionKind::Dense; num_layers.max(0) as usize]
    };
    if layers.len() as i64 != num_layers {
        return Err(bad(format!(
            "{} attention layer types for {num_layers} layers",
            layers.len()
        )));
    }
    Ok(layers)
}

/// Converts a count to `i64`, saturating at `i64::MAX` and clamping negative
/// values to 0.
fn saturate(count: i128) -> i64 {
    i64::try_from(count.max(0)).unwrap_or(i64::MAX)
}

impl Config {
    /// Reads a Hugging Face `config.json` of model type `openai-gpt`, `gpt2`,
    /// `gpt_neo`, or `gpt3` (a `gpt2` layout with banded layers, written by
    /// [`Config::to_hf`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(path, "JSON", e.to_string()))?;
        Self::from_hf(&value, path)
    }

    /// Parses the contents of a `config.json`; `path` names it in errors.
    pub fn from_hf(value: &Value, path: &Path) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| Error::format(path, "GPT config", "not a JSON object"))?;
        let model_type = string(map, "model_type", "");
        let config = match model_type {
            "openai-gpt" => {
                let hidden = int(map, &["n_embd"], Some(768), path)?;
                let heads = int(map, &["n_head"], Some(12), path)?;
                let layers = int(map, &["n_layer"], Some(12), path)?;
                Self {
                    layout: Layout::OpenAiGpt,
                    vocab_size: int(map, &["vocab_size"], Some(GPT1_VOCAB_SIZE), path)?,
                    context_length: int(map, &["n_positions", "n_ctx"], Some(512), path)?,
                    hidden_size: hidden,
                    num_layers: layers,
                    num_heads: heads,
                    head_dim: if heads > 0 { hidden / heads } else { 0 },
                    intermediate_size: 4 * hidden,
                    layer_norm_eps: float(map, "layer_norm_epsilon", 1e-5, path)?,
                    // transformers maps GPT-1's "gelu" to the tanh form.
                    activation: match string(map, "afn", "gelu") {
                        "gelu" => Activation::GeluTanh,
                        other => Activation::from_name(other)?,
                    },
                    attention_layers: vec![AttentionKind::Dense; layers.max(0) as usize],
                    window_size: 0,
                    scale_attention: true,
                    dropout: 0.0,
                }
            }
            "gpt2" | "gpt3" => {
                for key in ["scale_attn_by_inverse_layer_idx", "add_cross_attention"] {
                    if map.get(key).and_then(Value::as_bool) == Some(true) {
                        return Err(Error::Unsupported(format!(
                            "{}: {key} = true is not supported",
                            path.display()
                        )));
                    }
                }
                let hidden = int(map, &["n_embd"], Some(768), path)?;
                let heads = int(map, &["n_head"], Some(12), path)?;
                let layers = int(map, &["n_layer"], Some(12), path)?;
                // Without an explicit head_dim the heads split the width.
                let even_split = if heads > 0 && hidden % heads == 0 {
                    hidden / heads
                } else {
                    0
                };
                Self {
                    layout: Layout::Gpt2,
                    vocab_size: int(map, &["vocab_size"], Some(GPT2_VOCAB_SIZE), path)?,
                    context_length: int(map, &["n_positions", "n_ctx"], Some(1024), path)?,
                    hidden_size: hidden,
                    num_layers: layers,
                    num_heads: heads,
                    head_dim: int(map, &["head_dim"], Some(even_split), path)?,
                    intermediate_size: int(map, &["n_inner"], Some(4 * hidden), path)?,
                    layer_norm_eps: float(map, "layer_norm_epsilon", 1e-5, path)?,
                    activation: Activation::from_name(string(
                        map,
                        "activation_function",
                        "gelu_new",
                    ))?,
                    attention_layers: parse_attention_layers(map, layers, path)?,
                    window_size: int(map, &["window_size"], Some(0), path)?,
                    scale_attention: map
                        .get("scale_attn_weights")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    dropout: 0.0,
                }
            }
            "gpt_neo" => {
                let hidden = int(map, &["hidden_size"], Some(2048), path)?;
                let heads = int(map, &["num_heads"], Some(16), path)?;
                let layers = int(map, &["num_layers"], Some(24), path)?;
                Self {
                    layout: Layout::GptNeo,
                    vocab_size: int(map, &["vocab_size"], Some(GPT2_VOCAB_SIZE), path)?,
                    context_length: int(map, &["max_position_embeddings"], Some(2048), path)?,
                    hidden_size: hidden,
                    num_layers: layers,
                    num_heads: heads,
                    head_dim: if heads > 0 { hidden / heads } else { 0 },
                    intermediate_size: int(map, &["intermediate_size"], Some(4 * hidden), path)?,
                    layer_norm_eps: float(map, "layer_norm_epsilon", 1e-5, path)?,
                    activation: Activation::from_name(string(
                        map,
                        "activation_function",
                        "gelu_new",
                    ))?,
                    attention_layers: parse_attention_layers(map, layers, path)?,
                    window_size: int(map, &["window_size"], Some(256), path)?,
                    scale_attention: false,
                    dropout: 0.0,
                }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: model_type {other:?} is not a GPT model (expected openai-gpt, \
                     gpt2, gpt_neo or gpt3)",
                    path.display()
                )))
            }
        };
        config.validate().map_err(|e| match e {
            Error::InvalidInput(message) => Error::format(path, "GPT config", message),
            e => e,
        })?;
        Ok(config)
    }

    /// Returns the `config.json` transformers reads for this configuration.
    /// A `gpt2` layout with banded layers has no transformers class, so it is
    /// written with model type `gpt3`: transformers rejects that type instead
    /// of loading the model as dense.
    pub fn to_hf(&self) -> Value {
        let types: Vec<&str> = self
            .attention_layers
            .iter()
            .map(|k| match k {
                AttentionKind::Dense => "global",
                AttentionKind::Banded => "local",
            })
            .collect();
        let dropout = self.dropout;
        match self.layout {
            Layout::OpenAiGpt => json!({
                "model_type": "openai-gpt",
                "architectures": ["OpenAIGPTLMHeadModel"],
                "vocab_size": self.vocab_size,
                "n_positions": self.context_length,
                "n_embd": self.hidden_size,
                "n_layer": self.num_layers,
                "n_head": self.num_heads,
                "afn": match self.activation {
                    Activation::GeluTanh => "gelu",
                    other => other.name(),
                },
                "layer_norm_epsilon": self.layer_norm_eps,
                "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
            }),
            Layout::Gpt2 => {
                let banded = self.attention_layers.contains(&AttentionKind::Banded);
                let mut value = json!({
                    "model_type": if banded { "gpt3" } else { "gpt2" },
                    "architectures": ["GPT2LMHeadModel"],
                    "vocab_size": self.vocab_size,
                    "n_positions": self.context_length,
                    "n_embd": self.hidden_size,
                    "n_layer": self.num_layers,
                    "n_head": self.num_heads,
                    "n_inner": self.intermediate_size,
                    "activation_function": self.activation.name(),
                    "layer_norm_epsilon": self.layer_norm_eps,
                    "scale_attn_weights": self.scale_attention,
                    "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
                    "bos_token_id": self.vocab_size - 1,
                    "eos_token_id": self.vocab_size - 1,
                    "tie_word_embeddings": true,
                });
                if banded || self.head_dim * self.num_heads != self.hidden_size {
                    value["attention_layers"] = json!(types);
                    value["window_size"] = json!(self.window_size);
                    value["head_dim"] = json!(self.head_dim);
                }
                value
            }
            Layout::GptNeo => json!({
                "model_type": "gpt_neo",
                "architectures": ["GPTNeoForCausalLM"],
                "vocab_size": self.vocab_size,
                "max_position_embeddings": self.context_length,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "activation_function": self.activation.name(),
                "layer_norm_epsilon": self.layer_norm_eps,
                "attention_layers": types,
                "attention_types": types.iter().map(|t| json!([[t], 1])).collect::<Vec<_>>(),
                "window_size": self.window_size,
                "resid_dropout": dropout, "embed_dropout": dropout, "attention_dropout": dropout,
                "bos_token_id": self.vocab_size - 1,
                "eos_token_id": self.vocab_size - 1,
                "tie_word_embeddings": true,
            }),
        }
    }

    /// Checks that the sizes are positive and consistent.
    pub fn validate(&self) -> Result<()> {
        if self.num_heads > 0 && self.head_dim <= 0 && self.hidden_size % self.num_heads != 0 {
            return Err(Error::InvalidInput(format!(
                "hidden_size {} is not divisible into {} heads",
                self.hidden_size, self.num_heads
            )));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
        ];
        for (name, value) in positive {
            if value <= 0 {
                return Err(Error::InvalidInput(format!(
                    "{name} must be positive, got {value}"
                )));
            }
        }
        if self.layout != Layout::Gpt2 && self.head_dim * self.num_heads != self.hidden_size {
            return Err(Error::InvalidInput(format!(
                "hidden_size {} is not divisible into {} heads",
                self.hidden_size, self.num_heads
            )));
        }
        if self.layout == Layout::OpenAiGpt
            && (self.intermediate_size != 4 * self.hidden_size
                || self.attention_layers.contains(&AttentionKind::Banded))
        {
            return Err(Error::InvalidInput(format!(
                "the openai-gpt layout has dense layers and a feed-forward width of 4 x                  hidden_size ({}), got {} and {:?}",
                4 * self.hidden_size,
                self.intermediate_size,
                self.attention_layers
            )));
        }
        if self.attention_layers.len() as i64 != self.num_layers {
            return Err(Error::InvalidInput(format!(
                "{} attention layer types for {} layers",
                self.attention_layers.len(),
                self.num_layers
            )));
        }
        if self.attention_layers.contains(&AttentionKind::Banded) && self.window_size <= 0 {
            return Err(Error::InvalidInput(format!(
                "banded layers need a positive window_size, got {}",
                self.window_size
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidInput(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Returns the number of parameters, counting the tied output projection
    /// once. Saturates instead of overflowing.
    pub fn num_parameters(&self) -> i64 {
        // Saturating i128 arithmetic: exact for every real size, and no
        // overflow for absurd ones.
        let mul = |factors: &[i128]| factors.iter().fold(1i128, |a, &b| a.saturating_mul(b));
        let sum = |terms: &[i128]| terms.iter().fold(0i128, |a, &b| a.saturating_add(b));
        let (d, ff) = (
            i128::from(self.hidden_size),
            i128::from(self.intermediate_size),
        );
        let inner = mul(&[i128::from(self.num_heads), i128::from(self.head_dim)]);
        let attention = if self.layout == Layout::GptNeo {
            // Q, K, V without bias; the output projection with bias.
            sum(&[mul(&[4, d, inner]), d])
        } else {
            sum(&[mul(&[4, d, inner]), mul(&[3, inner]), d])
        };
        let mlp = sum(&[mul(&[2, d, ff]), ff, d]);
        let norms = mul(&[4, d]);
        let layer = sum(&[attention, mlp, norms]);
        let final_norm = if self.layout.post_norm() {
            0
        } else {
            mul(&[2, d])
        };
        let positions = sum(&[i128::from(self.vocab_size), i128::from(self.context_length)]);
        let total = sum(&[
            mul(&[layer, i128::from(self.num_layers)]),
            mul(&[positions, d]),
            final_norm,
        ]);
        i64::try_from(total.max(0)).unwrap_or(i64::MAX)
    }

    /// Counts the embedding parameters: the token table and the learned
    /// position table, `(vocab_size + context_length) * hidden_size`. The
    /// output projection reuses the token table, so it adds nothing.
    /// Saturates instead of overflowing.
    pub fn embedding_parameters(&self) -> i64 {
        let rows = i128::from(self.vocab_size) + i128::from(self.context_length);
        saturate(rows.saturating_mul(i128::from(self.hidden_size)))
    }

    /// Counts the parameters outside the embedding tables: the layers and the
    /// final norm, the `N` of Kaplan et al. (2020).
    pub fn non_embedding_parameters(&self) -> i64 {
        self.num_parameters()
            .saturating_sub(self.embedding_parameters())
            .max(0)
    }

    /// Returns the bytes of keys and values that a KV cache stores per token,
    /// `2 * num_layers * num_heads * head_dim * bytes_per_element`: 4 bytes
    /// per element in f32, 2 in bf16 or f16. Banded layers store the same
    /// per token, but only for their `window_size` most recent tokens.
    pub fn kv_cache_bytes_per_token(&self, bytes_per_element: i64) -> i64 {
        let factors = [
            2,
            i128::from(self.num_layers),
            i128::from(self.num_heads),
            i128::from(self.head_dim),
            i128::from(bytes_per_element),
        ];
        saturate(factors.iter().fold(1i128, |a, &b| a.saturating_mul(b)))
    }

    /// Estimates the forward FLOPs per token with Kaplan et al. (2020),
    /// section 2.1: `2 * N + 2 * n_layer * n_ctx * d_attn`, where `N` is
    /// [`Config::non_embedding_parameters`] and `d_attn = num_heads *
    /// head_dim`. A multiply-add counts as 2 FLOPs.
    ///
    /// `n_ctx` is the number of keys that the last position of a full context
    /// reads in each layer: `context_length` in dense layers, and
    /// `window_size` (at most `context_length`) in banded ones. The attention
    /// term counts 2 FLOPs per key and attention dimension, as Kaplan et al.
    /// do. That is the multiply-adds of the scores alone, or of the scores and
    /// the weighted values averaged over a full causal context in a dense
    /// layer. The estimate leaves out the output projection to the vocabulary
    /// (`2 * hidden_size * vocab_size` more), the softmax and the norms' other
    /// operations. Saturates instead of overflowing.
    pub fn forward_flops_per_token(&self) -> i64 {
        let d_attn = i128::from(self.num_heads).saturating_mul(i128::from(self.head_dim));
        let context = i128::from(self.context_length);
        let window = i128::from(self.window_size).min(context);
        let keys_read: i128 = self
            .attention_layers
            .iter()
            .map(|kind| match kind {
                AttentionKind::Dense => context,
                AttentionKind::Banded => window,
            })
            .fold(0i128, i128::saturating_add);
        let attention = keys_read.saturating_mul(d_attn).saturating_mul(2);
        let weights = i128::from(self.non_embedding_parameters()).saturating_mul(2);
        saturate(weights.saturating_add(attention))
    }

    fn published(
        layout: Layout,
        vocab: i64,
        context: i64,
        layers: i64,
        d: i64,
        heads: i64,
        head_dim: i64,
    ) -> Self {
        Self {
            layout,
            vocab_size: vocab,
            context_length: context,
            hidden_size: d,
            num_layers: layers,
            num_heads: heads,
            head_dim,
            intermediate_size: 4 * d,
            layer_norm_eps: 1e-5,
            activation: Activation::GeluTanh,
            attention_layers: vec![AttentionKind::Dense; layers as usize],
            window_size: 0,
            scale_attention: true,
            dropout: 0.0,
        }
    }

    fn gpt2(layers: i64, d: i64, heads: i64) -> Self {
        Self::published(
            Layout::Gpt2,
            GPT2_VOCAB_SIZE,
            1024,
            layers,
            d,
            heads,
            d / heads,
        )
    }

    /// GPT-3: the GPT-2 block with context 2048, dense layers alternating
    /// with banded ones (table 2.1 of Brown et al., 2020).
    fn gpt3(layers: i64, d: i64, heads: i64, head_dim: i64) -> Self {
        let mut config = Self::published(
            Layout::Gpt2,
            GPT2_VOCAB_SIZE,
            2048,
            layers,
            d,
            heads,
            head_dim,
        );
        config.attention_layers = (0..layers)
            .map(|i| {
                if i % 2 == 0 {
                    AttentionKind::Dense
                } else {
                    AttentionKind::Banded
                }
            })
            .collect();
        config.window_size = GPT3_WINDOW;
        config
    }

    /// GPT-1 (Radford et al., 2018): 12 post-norm layers of width 768, 12
    /// heads, 512 positions, a 40,478-token vocabulary.
    pub fn gpt1() -> Self {
        Self::published(Layout::OpenAiGpt, GPT1_VOCAB_SIZE, 512, 12, 768, 12, 64)
    }

    /// GPT-2 small, 124M parameters.
    pub fn gpt2_124m() -> Self {
        Self::gpt2(12, 768, 12)
    }

    /// GPT-2 medium, 355M parameters.
    pub fn gpt2_355m() -> Self {
        Self::gpt2(24, 1024, 16)
    }

    /// GPT-2 large, 774M parameters.
    pub fn gpt2_774m() -> Self {
        Self::gpt2(36, 1280, 20)
    }

    /// GPT-2 XL, 1.5B parameters (1558M).
    pub fn gpt2_1_5b() -> Self {
        Self::gpt2(48, 1600, 25)
    }

    /// GPT-3 Small, 125M parameters.
    pub fn gpt3_125m() -> Self {
        Self::gpt3(12, 768, 12, 64)
    }

    /// GPT-3 Medium, 350M parameters.
    pub fn gpt3_350m() -> Self {
        Self::gpt3(24, 1024, 16, 64)
    }

    /// GPT-3 Large, 760M parameters.
    pub fn gpt3_760m() -> Self {
        Self::gpt3(24, 1536, 16, 96)
    }

    /// GPT-3 XL, 1.3B parameters. Table 2.1 lists 24 heads of 128 in width
    /// 2048, which do not fit (24 x 128 = 3072, and 1.52B parameters); this
    /// keeps the width and the head size, so 16 heads, which gives the
    /// published count.
    pub fn gpt3_1_3b() -> Self {
        Self::gpt3(24, 2048, 16, 128)
    }

    /// GPT-3 2.7B.
    pub fn gpt3_2_7b() -> Self {
        Self::gpt3(32, 2560, 32, 80)
    }

    /// GPT-3 6.7B.
    pub fn gpt3_6_7b() -> Self {
        Self::gpt3(32, 4096, 32, 128)
    }

    /// GPT-3 13B: 40 heads of 128 in a stream of width 5140.
    pub fn gpt3_13b() -> Self {
        Self::gpt3(40, 5140, 40, 128)
    }

    /// GPT-3 175B, "GPT-3".
    pub fn gpt3_175b() -> Self {
        Self::gpt3(96, 12288, 96, 128)
    }

    /// Returns the transformer of DALL-E (Ramesh et al., 2021): 64 pre-norm layers of
    /// 62 heads of 64 (width 3968) over 256 text tokens followed by 1024 image
    /// tokens, so a context of 1280. The tied vocabulary of 24,832 tokens is
    /// the 16,384 BPE text tokens, the 256 padding tokens that DALL-E learns
    /// (one for each text position) and the 8192 codes of the dVAE.
    ///
    /// NOTE: this shape has one learned position table of 1280 rows for text
    /// and image positions, and dense causal attention in every layer.
    /// DALL-E's separate text and image position embeddings and its row,
    /// column and convolutional attention masks over image tokens are not
    /// modelled. The count is 12.20B parameters, 12.10B of them outside the
    /// embedding tables, against the "12 billion" of the paper.
    pub fn dall_e_12b() -> Self {
        let vocab = DALL_E_TEXT_VOCAB_SIZE + DALL_E_TEXT_POSITIONS + DALL_E_IMAGE_VOCAB_SIZE;
        let context = DALL_E_TEXT_POSITIONS + DALL_E_IMAGE_POSITIONS;
        Self::published(Layout::Gpt2, vocab, context, 64, 3968, 62, 64)
    }

    /// Returns every preset with its name.
    pub fn presets() -> Vec<(&'static str, Self)> {
        vec![
            ("gpt1", Self::gpt1()),
            ("gpt2-124m", Self::gpt2_124m()),
            ("gpt2-355m", Self::gpt2_355m()),
            ("gpt2-774m", Self::gpt2_774m()),
            ("gpt2-1.5b", Self::gpt2_1_5b()),
            ("gpt3-125m", Self::gpt3_125m()),
            ("gpt3-350m", Self::gpt3_350m()),
            ("gpt3-760m", Self::gpt3_760m()),
            ("gpt3-1.3b", Self::gpt3_1_3b()),
            ("gpt3-2.7b", Self::gpt3_2_7b()),
            ("gpt3-6.7b", Self::gpt3_6_7b()),
            ("gpt3-13b", Self::gpt3_13b()),
            ("gpt3-175b", Self::gpt3_175b()),
            ("dall-e-12b", Self::dall_e_12b()),
        ]
    }

    /// Looks a preset up by name.
    pub fn preset(name: &str) -> Result<Self> {
        let presets = Self::presets();
        presets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = presets.iter().map(|(n, _)| *n).collect();
                Error::InvalidInput(format!(
                    "unknown GPT preset {name:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}
