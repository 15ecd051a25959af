//! The Llama decoder: pre-norm blocks of grouped-query attention with rotary
//! positions and a SwiGLU feed-forward layer, each normalised by RMSNorm.
//!
//! Variables are named as in the Hugging Face `LlamaForCausalLM` checkpoints
//! (`model.layers.0.self_attn.q_proj.weight`), so loading is a name lookup.

use crate::config::Config;
use common::generation::{check_input_ids, CausalLm};
use common::nn::{
    linear, scaled_dot_product_attention, swiglu, KvCache, Mask, RmsNorm, RotaryAngles,
    RotaryEmbedding,
};
use common::Result;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The decoding state of one sequence batch: a KV cache per layer.
#[derive(Debug)]
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    /// Creates an empty cache for a model of `num_layers` layers.
    pub fn new(num_layers: i64) -> Self {
        Self {
            layers: (0..num_layers).map(|_| KvCache::new()).collect(),
        }
    }

    /// Returns the number of positions already processed.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, KvCache::len)
    }

    /// True when no position has been processed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the memory of the cached keys and values of every layer in
    /// bytes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(KvCache::bytes).sum()
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(path: nn::Path, c: &Config) -> Self {
        let (d, bias) = (c.hidden_size, c.attention_bias);
        let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        Self {
            q_proj: linear(&path / "q_proj", d, q, bias),
            k_proj: linear(&path / "k_proj", d, kv, bias),
            v_proj: linear(&path / "v_proj", d, kv, bias),
            o_proj: linear(&path / "o_proj", q, d, bias),
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        }
    }

    fn forward(&self, xs: &Tensor, rotary: &RotaryAngles, cache: &mut KvCache) -> Result<Tensor> {
        let (batch, seq, _) = xs.size3()?;
        let heads = |proj: &nn::Linear, n: i64| {
            proj.forward(xs)
                .view([batch, seq, n, self.head_dim])
                .transpose(1, 2)
        };

        // (batch, heads, seq, head_dim), rotated to their positions
        let q = rotary.apply(&heads(&self.q_proj, self.num_heads))?;
        let k = rotary.apply(&heads(&self.k_proj, self.num_kv_heads))?;
        let v = heads(&self.v_proj, self.num_kv_heads);

        let (k, v) = cache.append(&k, &v)?;
        let mask = if seq == 1 { Mask::None } else { Mask::Causal };
        let ys = scaled_dot_product_attention(&q, &k, &v, &mask, None)?;

        // (batch, seq, heads * head_dim)
        let ys = ys
            .transpose(1, 2)
            .reshape([batch, seq, self.num_heads * self.head_dim]);
        Ok(self.o_proj.forward(&ys))
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: nn::Linear,
    up_proj: nn::Linear,
    down_proj: nn::Linear,
}

impl Mlp {
    fn new(path: nn::Path, c: &Config) -> Self {
        let (d, ff, bias) = (c.hidden_size, c.intermediate_size, c.mlp_bias);
        Self {
            gate_proj: linear(&path / "gate_proj", d, ff, bias),
            up_proj: linear(&path / "up_proj", d, ff, bias),
            down_proj: linear(&path / "down_proj", ff, d, bias),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let gated = swiglu(&self.gate_proj.forward(xs), &self.up_proj.forward(xs));
        self.down_proj.forward(&gated)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, c: &Config) -> Self {
        let (d, eps) = (c.hidden_size, c.rms_norm_eps);
        Self {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", d, eps),
            self_attn: Attention::new(&path / "self_attn", c),
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", d, eps),
            mlp: Mlp::new(&path / "mlp", c),
        }
    }

    fn forward(&self, xs: &Tensor, rotary: &RotaryAngles, cache: &mut KvCache) -> Result<Tensor> {
        let normed = self.input_layernorm.forward(xs);
        let attn = self.self_attn.forward(&normed, rotary, cache)?;
        let xs = xs + attn;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs));
        Ok(xs + mlp)
    }
}

/// A Llama-architecture causal language model (`LlamaForCausalLM`).
#[derive(Debug)]
pub struct Llama {
    embed_tokens: nn::Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// None when the output projection is tied to `embed_tokens`.
    lm_head: Option<nn::Linear>,
    rotary: RotaryEmbedding,
    config: Config,
    device: Device,
}

impl Llama {
    /// Builds the model with its variables under `path`, randomly initialised.
    pub fn new(path: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let c = config;
        let model = path / "model";
        let embed_tokens = nn::embedding(
            &model / "embed_tokens",
            c.vocab_size,
            c.hidden_size,
            Default::default(),
        );
        let layers = (0..c.num_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, c))
            .collect();
        let norm = RmsNorm::new(&model / "norm", c.hidden_size, c.rms_norm_eps);
        let lm_head = (!c.tie_word_embeddings)
            .then(|| linear(path / "lm_head", c.hidden_size, c.vocab_size, false));
        let rotary = RotaryEmbedding::new(c.head_dim, c.rope_theta, path.device())?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            config: c.clone(),
            device: path.device(),
        })
    }

    /// Returns the configuration the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates an empty KV cache for this model.
    pub fn new_cache(&self) -> Cache {
        Cache::new(self.config.num_layers)
    }

    /// Runs the decoder and returns the hidden states after the final norm.
    ///
    /// # Shapes
    /// - `input_ids`: `(batch, seq)` integer token ids
    /// - returns `(batch, seq, hidden_size)`
    pub fn hidden_states(&self, input_ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let c = &self.config;
        check_input_ids(
            input_ids,
            c.vocab_size,
            cache.len(),
            c.max_position_embeddings,
        )?;
        let mut xs = self
            .embed_tokens
            .forward(&input_ids.f_to_kind(Kind::Int64)?);
        let angles = self
            .rotary
            .angles(cache.len(), input_ids.size()[1], xs.kind())?;
        for (layer, layer_cache) in self.layers.iter().zip(&mut cache.layers) {
            xs = layer.forward(&xs, &angles, layer_cache)?;
        }
        Ok(self.norm.forward(&xs))
    }

    /// Projects hidden states onto the vocabulary.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.matmul(&self.embed_tokens.ws.tr()),
        }
    }

    /// Returns the logits of every position, `(batch, seq, vocab_size)`, and
    /// appends the positions to `cache`.
    pub fn forward(&self, input_ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache)?;
        Ok(self.logits(&hidden))
    }
}

impl CausalLm for Llama {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        Llama::new_cache(self)
    }

    fn last_logits(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let hidden = self.hidden_states(tokens, cache)?;
        let last = hidden.f_select(1, -1)?.f_select(0, 0)?;
        Ok(self.logits(&last))
    }

    fn context_length(&self) -> i64 {
        self.config.max_position_embeddings
    }

    fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }

    fn device(&self) -> Device {
        self.device
    }
}
