//! The GPT decoder: learned token and position embeddings, blocks of masked
//! multi-head attention and a GELU feed-forward layer, and the output
//! projection tied to the token embedding.
//!
//! GPT-1 normalises after each residual addition (post-norm); GPT-2, GPT-3
//! and GPT-Neo normalise the input of each sub-layer and the final output
//! (pre-norm). Variables are named as in the Hugging Face checkpoints of each
//! family, under `transformer.` as in their language-model classes.

use crate::config::{AttentionKind, Config, Layout};
use common::generation::{check_input_ids, CausalLm};
use common::nn::{layer_norm, linear_normal, scaled_dot_product_attention, KvCache, Mask};
use common::{Error, Result};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The prefix of the decoder's variables in the head models.
pub const BASE_PREFIX: &str = "transformer.";

/// The standard deviation of the initial weights.
const INIT_STD: f64 = 0.02;

/// Returns the initial standard deviation of the projections that end a
/// residual branch. GPT-2 scales them by `1 / sqrt(2 * num_layers)` so that
/// the residual stream's variance does not grow with depth.
fn residual_std(c: &Config) -> f64 {
    INIT_STD / (2.0 * c.num_layers as f64).sqrt()
}

/// The decoding state of one batch of sequences: a KV cache per layer (a
/// banded layer keeps only its window) and the number of positions seen.
#[derive(Debug)]
pub struct Cache {
    layers: Vec<KvCache>,
    position: i64,
}

impl Cache {
    /// Returns the number of positions already processed.
    pub fn len(&self) -> i64 {
        self.position
    }

    /// True when no position has been processed.
    pub fn is_empty(&self) -> bool {
        self.position == 0
    }
}

#[derive(Debug)]
enum Projection {
    /// GPT-1 and GPT-2: one projection to queries, keys and values
    /// (`c_attn`), and `c_proj` back.
    Fused {
        c_attn: nn::Linear,
        c_proj: nn::Linear,
    },
    /// GPT-Neo: `q_proj`, `k_proj`, `v_proj` without bias, and `out_proj`.
    Separate {
        q_proj: nn::Linear,
        k_proj: nn::Linear,
        v_proj: nn::Linear,
        out_proj: nn::Linear,
    },
}

#[derive(Debug)]
struct Attention {
    projection: Projection,
    num_heads: i64,
    head_dim: i64,
    kind: AttentionKind,
    window: i64,
    scale: Option<f64>,
}

impl Attention {
    fn new(path: nn::Path, c: &Config, kind: AttentionKind) -> Self {
        let (d, inner) = (c.hidden_size, c.num_heads * c.head_dim);
        let residual = residual_std(c);
        let projection = match c.layout {
            Layout::OpenAiGpt | Layout::Gpt2 => Projection::Fused {
                c_attn: linear_normal(&path / "c_attn", d, 3 * inner, true, INIT_STD),
                c_proj: linear_normal(&path / "c_proj", inner, d, true, residual),
            },
            Layout::GptNeo => {
                let path = &path / "attention";
                Projection::Separate {
                    q_proj: linear_normal(&path / "q_proj", d, inner, false, INIT_STD),
                    k_proj: linear_normal(&path / "k_proj", d, inner, false, INIT_STD),
                    v_proj: linear_normal(&path / "v_proj", d, inner, false, INIT_STD),
                    out_proj: linear_normal(&path / "out_proj", inner, d, true, residual),
                }
            }
        };
        Self {
            projection,
            num_heads: c.num_heads,
            head_dim: c.head_dim,
            kind,
            window: c.window_size,
            scale: if c.scale_attention { None } else { Some(1.0) },
        }
    }

    fn new_cache(&self) -> KvCache {
        match self.kind {
            AttentionKind::Dense => KvCache::new(),
            // The next query reads the window minus its own position.
            AttentionKind::Banded => KvCache::with_window((self.window - 1).max(1)),
        }
    }

    fn forward(&self, xs: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (batch, seq, _) = xs.size3()?;
        let inner = self.num_heads * self.head_dim;
        let (q, k, v) = match &self.projection {
            Projection::Fused { c_attn, .. } => {
                let qkv = c_attn.forward(xs).f_split(inner, 2)?;
                let mut qkv = qkv.into_iter();
                match (qkv.next(), qkv.next(), qkv.next()) {
                    (Some(q), Some(k), Some(v)) => (q, k, v),
                    _ => unreachable!("a split of 3 * inner into inner-wide parts has 3 parts"),
                }
            }
            Projection::Separate {
                q_proj,
                k_proj,
                v_proj,
                ..
            } => (q_proj.forward(xs), k_proj.forward(xs), v_proj.forward(xs)),
        };
        // (batch, heads, seq, head_dim)
        let heads = |t: Tensor| {
            t.view([batch, seq, self.num_heads, self.head_dim])
                .transpose(1, 2)
        };
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        let mask = match self.kind {
            AttentionKind::Dense if seq == 1 => Mask::None,
            AttentionKind::Dense => Mask::Causal,
            AttentionKind::Banded => Mask::Banded {
                window: self.window,
            },
        };
        let ys = scaled_dot_product_attention(&q, &k, &v, &mask, self.scale)?;
        let ys = ys.transpose(1, 2).reshape([batch, seq, inner]);
        Ok(match &self.projection {
            Projection::Fused { c_proj, .. } => c_proj.forward(&ys),
            Projection::Separate { out_proj, .. } => out_proj.forward(&ys),
        })
    }
}

#[derive(Debug)]
struct Mlp {
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    activation: common::nn::Activation,
}

impl Mlp {
    fn new(path: nn::Path, c: &Config) -> Self {
        Self {
            c_fc: linear_normal(
                &path / "c_fc",
                c.hidden_size,
                c.intermediate_size,
                true,
                INIT_STD,
            ),
            c_proj: linear_normal(
                &path / "c_proj",
                c.intermediate_size,
                c.hidden_size,
                true,
                residual_std(c),
            ),
            activation: c.activation,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        self.c_proj
            .forward(&self.activation.forward(&self.c_fc.forward(xs)))
    }
}

#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    attn: Attention,
    ln_2: nn::LayerNorm,
    mlp: Mlp,
    post_norm: bool,
    dropout: f64,
}

impl Block {
    fn new(path: nn::Path, c: &Config, kind: AttentionKind) -> Self {
        let (d, eps) = (c.hidden_size, c.layer_norm_eps);
        Self {
            ln_1: layer_norm(&path / "ln_1", d, eps),
            attn: Attention::new(&path / "attn", c, kind),
            ln_2: layer_norm(&path / "ln_2", d, eps),
            mlp: Mlp::new(&path / "mlp", c),
            post_norm: c.layout.post_norm(),
            dropout: c.dropout,
        }
    }

    fn forward(&self, xs: &Tensor, cache: Option<&mut KvCache>, train: bool) -> Result<Tensor> {
        let drop = |t: Tensor| {
            if train && self.dropout > 0.0 {
                t.dropout(self.dropout, true)
            } else {
                t
            }
        };
        if self.post_norm {
            // GPT-1: n = LN(x + attn(x)), h = LN(n + mlp(n)).
            let n = self
                .ln_1
                .forward(&(xs + drop(self.attn.forward(xs, cache)?)));
            Ok(self.ln_2.forward(&(&n + drop(self.mlp.forward(&n)))))
        } else {
            let xs = xs + drop(self.attn.forward(&self.ln_1.forward(xs), cache)?);
            let mlp = drop(self.mlp.forward(&self.ln_2.forward(&xs)));
            Ok(xs + mlp)
        }
    }
}

/// A GPT decoder with its tied language-model head.
#[derive(Debug)]
pub struct Gpt {
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    /// None for the post-norm blocks of GPT-1.
    ln_f: Option<nn::LayerNorm>,
    config: Config,
    device: Device,
}

impl Gpt {
    /// Builds the decoder under `path / "transformer"`, randomly initialised
    /// as GPT-2 is: normal(0, 0.02) weights, zero biases, and the output
    /// projections of the residual branches scaled by `1 / sqrt(2 *
    /// num_layers)`.
    pub fn new(path: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let c = config;
        let root = path / "transformer";
        let (tokens, positions) = match c.layout {
            Layout::OpenAiGpt => ("tokens_embed", "positions_embed"),
            Layout::Gpt2 | Layout::GptNeo => ("wte", "wpe"),
        };
        let std = nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let embedding = |name: &str, n: i64| {
            let config = nn::EmbeddingConfig {
                ws_init: std,
                ..Default::default()
            };
            nn::embedding(&root / name, n, c.hidden_size, config)
        };
        let wte = embedding(tokens, c.vocab_size);
        let wpe = embedding(positions, c.context_length);
        let blocks = c
            .attention_layers
            .iter()
            .enumerate()
            .map(|(i, &kind)| Block::new(&root / "h" / i, c, kind))
            .collect();
        let ln_f = (!c.layout.post_norm())
            .then(|| layer_norm(&root / "ln_f", c.hidden_size, c.layer_norm_eps));
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            config: c.clone(),
            device: path.device(),
        })
    }

    /// Returns the configuration the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Returns the device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Creates an empty KV cache for this model.
    pub fn new_cache(&self) -> Cache {
        Cache {
            layers: self.blocks.iter().map(|b| b.attn.new_cache()).collect(),
            position: 0,
        }
    }

    /// Runs the decoder and returns the final hidden states, appending the
    /// positions to `cache` when one is given. `train` enables dropout.
    ///
    /// # Shapes
    /// - `input_ids`: `(batch, seq)` integer token ids
    /// - returns `(batch, seq, hidden_size)`
    pub fn hidden_states_t(
        &self,
        input_ids: &Tensor,
        mut cache: Option<&mut Cache>,
        train: bool,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.position);
        let c = &self.config;
        check_input_ids(input_ids, c.vocab_size, offset, c.context_length)?;
        let seq = input_ids.size()[1];
        let positions = Tensor::arange_start(offset, offset + seq, (Kind::Int64, self.device));
        let mut xs =
            self.wte.forward(&input_ids.f_to_kind(Kind::Int64)?) + self.wpe.forward(&positions);
        if train && self.config.dropout > 0.0 {
            xs = xs.dropout(self.config.dropout, true);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            xs = block.forward(&xs, layer_cache, train)?;
        }
        if let Some(cache) = cache {
            cache.position += seq;
        }
        Ok(match &self.ln_f {
            Some(ln_f) => ln_f.forward(&xs),
            None => xs,
        })
    }

    /// Runs the decoder at inference and appends the positions to `cache`.
    pub fn hidden_states(&self, input_ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        self.hidden_states_t(input_ids, Some(cache), false)
    }

    /// Projects hidden states onto the vocabulary with the token embedding.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.wte.ws.tr())
    }

    /// Returns the logits of every position, `(batch, seq, vocab_size)`, and
    /// appends the positions to `cache`.
    pub fn forward(&self, input_ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache)?;
        Ok(self.logits(&hidden))
    }

    /// Returns the mean next-token cross-entropy of `input_ids` from the
    /// logits of every position but the last, since each position predicts
    /// the next. Targets equal to `ignore_index` do not count.
    pub fn lm_loss(logits: &Tensor, input_ids: &Tensor, ignore_index: i64) -> Result<Tensor> {
        let seq = input_ids.size().last().copied().unwrap_or(0);
        if seq < 2 {
            return Err(Error::InvalidInput(format!(
                "a language-model loss needs at least 2 positions, got {seq}"
            )));
        }
        let vocab = logits.size().last().copied().unwrap_or(0);
        let predicted = logits.f_narrow(-2, 0, seq - 1)?.f_reshape([-1, vocab])?;
        let targets = input_ids.f_narrow(-1, 1, seq - 1)?.f_reshape([-1])?;
        Ok(predicted.f_cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::Mean,
            ignore_index,
            0.0,
        )?)
    }
}

impl CausalLm for Gpt {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        Gpt::new_cache(self)
    }

    fn last_logits(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.hidden_states(tokens, cache)?;
        let last = hidden.f_select(1, -1)?.f_select(0, 0)?;
        Ok(self.logits(&last))
    }

    fn context_length(&self) -> i64 {
        self.config.context_length
    }

    fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }

    fn device(&self) -> Device {
        Gpt::device(self)
    }
}
