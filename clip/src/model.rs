//! The two encoders, the projections into the joint space and the learned
//! temperature, with the variable names of transformers' `CLIPModel`.
//!
//! Both encoders are pre-norm transformers. The text encoder reads token and
//! learned position embeddings under a causal mask and takes the feature of
//! the end-of-text token after a final LayerNorm. The image encoder cuts the
//! image into patches with a strided convolution, prepends a learned class
//! token and adds learned position embeddings. A LayerNorm comes before the
//! layers (`pre_layrnorm`, spelled as in the checkpoints), and the feature
//! is the class token's after `post_layernorm`.

use crate::config::Config;
use common::nn::{layer_norm, linear, scaled_dot_product_attention, Activation, Mask};
use common::{Error, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The upper bound of the exponentiated temperature, `exp(logit_scale)`,
/// which CLIP clips at 100 to keep training stable.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// The standard deviation of the initial embeddings and projections.
const INIT_STD: f64 = 0.02;

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    fn new(path: nn::Path, width: i64, num_heads: i64) -> Self {
        Self {
            q_proj: linear(&path / "q_proj", width, width, true),
            k_proj: linear(&path / "k_proj", width, width, true),
            v_proj: linear(&path / "v_proj", width, width, true),
            out_proj: linear(&path / "out_proj", width, width, true),
            num_heads,
        }
    }

    /// Attends from `queries` (batch, q_seq, width) to `xs` (batch, seq,
    /// width). `queries` is `xs` itself except in the image encoder's last
    /// layer, where only the class token is needed.
    fn forward(&self, queries: &Tensor, xs: &Tensor, mask: &Mask) -> Result<Tensor> {
        let (batch, seq, width) = xs.size3()?;
        let q_seq = queries.size()[1];
        let head_dim = width / self.num_heads;
        let heads = |t: Tensor, len: i64| {
            t.view([batch, len, self.num_heads, head_dim])
                .transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(queries), q_seq);
        let k = heads(self.k_proj.forward(xs), seq);
        let v = heads(self.v_proj.forward(xs), seq);
        let out = scaled_dot_product_attention(&q, &k, &v, mask, None)?;
        let out = out.transpose(1, 2).reshape([batch, q_seq, width]);
        Ok(self.out_proj.forward(&out))
    }
}

#[derive(Debug)]
struct Layer {
    self_attn: Attention,
    layer_norm1: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    layer_norm2: nn::LayerNorm,
    activation: Activation,
}

impl Layer {
    fn new(path: nn::Path, width: i64, ff: i64, heads: i64, eps: f64, act: Activation) -> Self {
        let mlp = &path / "mlp";
        Self {
            self_attn: Attention::new(&path / "self_attn", width, heads),
            layer_norm1: layer_norm(&path / "layer_norm1", width, eps),
            fc1: linear(&mlp / "fc1", width, ff, true),
            fc2: linear(&mlp / "fc2", ff, width, true),
            layer_norm2: layer_norm(&path / "layer_norm2", width, eps),
            activation: act,
        }
    }

    /// Applies one pre-norm layer. With `first_only`, it computes and returns
    /// only the first position, which reads every position as keys and values.
    fn forward(&self, xs: &Tensor, mask: &Mask, first_only: bool) -> Result<Tensor> {
        let normed = self.layer_norm1.forward(xs);
        let (residual, queries) = if first_only {
            (xs.narrow(1, 0, 1), normed.narrow(1, 0, 1))
        } else {
            (xs.shallow_clone(), normed.shallow_clone())
        };
        let xs = residual + self.self_attn.forward(&queries, &normed, mask)?;
        let hidden = self
            .activation
            .forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)));
        Ok(xs + self.fc2.forward(&hidden))
    }
}

/// A stack of layers under `path / "layers"`.
#[derive(Debug)]
struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    fn new(
        path: nn::Path,
        n: i64,
        width: i64,
        ff: i64,
        heads: i64,
        eps: f64,
        act: Activation,
    ) -> Self {
        let layers = &path / "layers";
        Self {
            layers: (0..n)
                .map(|i| Layer::new(&layers / i, width, ff, heads, eps, act))
                .collect(),
        }
    }

    /// Runs every layer. With `first_only`, the last layer computes only the
    /// first position.
    fn forward(&self, xs: &Tensor, mask: &Mask, first_only: bool) -> Result<Tensor> {
        let mut xs = xs.shallow_clone();
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, mask, first_only && i == last)?;
        }
        Ok(xs)
    }
}

/// The causal text transformer (`text_model`).
#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
    encoder: Encoder,
    final_layer_norm: nn::LayerNorm,
    eos_token_id: i64,
    vocab_size: i64,
    context_length: i64,
}

/// Builds an embedding table drawn from `normal(0, INIT_STD)`.
fn embedding(path: nn::Path, n: i64, width: i64) -> nn::Embedding {
    let config = nn::EmbeddingConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
        ..Default::default()
    };
    nn::embedding(path, n, width, config)
}

impl TextTransformer {
    fn new(path: nn::Path, config: &Config) -> Result<Self> {
        let t = &config.text_config;
        let embeddings = &path / "embeddings";
        Ok(Self {
            token_embedding: embedding(
                &embeddings / "token_embedding",
                t.vocab_size,
                t.hidden_size,
            ),
            position_embedding: embedding(
                &embeddings / "position_embedding",
                t.max_position_embeddings,
                t.hidden_size,
            ),
            encoder: Encoder::new(
                &path / "encoder",
                t.num_hidden_layers,
                t.hidden_size,
                t.intermediate_size,
                t.num_attention_heads,
                t.layer_norm_eps,
                config.text_activation()?,
            ),
            final_layer_norm: layer_norm(
                &path / "final_layer_norm",
                t.hidden_size,
                t.layer_norm_eps,
            ),
            eos_token_id: t.eos_token_id,
            vocab_size: t.vocab_size,
            context_length: t.max_position_embeddings,
        })
    }

    /// Checks `ids` and returns the position of the first end-of-text token
    /// of each sequence.
    fn end_positions(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        let (batch, seq) = match size[..] {
            [batch, seq] if batch > 0 && seq > 0 => (batch, seq),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "token ids must have shape (batch, sequence) with both at least 1, got {size:?}"
                )))
            }
        };
        if ids.kind() != Kind::Int64 {
            return Err(Error::InvalidInput(format!(
                "token ids must be Int64, got {:?}",
                ids.kind()
            )));
        }

        if seq > self.context_length {
            return Err(Error::InvalidInput(format!(
                "sequences of {seq} tokens are longer than the context of {} positions: \
                 encode texts with a tokenizer whose context length is the model's \
                 text_config.max_position_embeddings",
                self.context_length
            )));
        }
        let (min, max) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if min < 0 || max >= self.vocab_size {
            let bad = if min < 0 { min } else { max };
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }

        let is_end = ids.eq(self.eos_token_id);
        let has_end = Vec::<bool>::try_from(is_end.any_dim(1, false)).expect("any is Bool");
        let missing: Vec<usize> = (0..batch as usize).filter(|&i| !has_end[i]).collect();
        if !missing.is_empty() {
            return Err(Error::InvalidInput(format!(
                "sequences {missing:?} have no end-of-text token (id {}), whose feature is \
                 the text's feature: encode texts with the CLIP tokenizer",
                self.eos_token_id
            )));
        }
        // argmax returns the first of equal maxima: the first end-of-text.
        Ok(is_end.to_kind(Kind::Uint8).argmax(1, false))
    }

    /// Returns the last hidden state (batch, seq, width) after the final
    /// LayerNorm, for every position of `ids`.
    pub fn hidden_states(&self, ids: &Tensor) -> Result<Tensor> {
        let _ = self.end_positions(ids)?;
        self.run(ids)
    }

    fn run(&self, ids: &Tensor) -> Result<Tensor> {
        let seq = ids.size()[1];
        let positions = Tensor::arange(seq, (Kind::Int64, ids.device()));
        let xs = self.token_embedding.forward(ids) + self.position_embedding.forward(&positions);
        let xs = self.encoder.forward(&xs, &Mask::Causal, false)?;
        Ok(self.final_layer_norm.forward(&xs))
    }

    /// Returns the pooled feature (batch, width): the final hidden state at
    /// the first end-of-text token of each sequence.
    ///
    /// Under the causal mask nothing after the last end-of-text token can
    /// reach the pooled features, so the sequences are cut after it.
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        let ends = self.end_positions(ids)?;
        let used = ends.max().int64_value(&[]) + 1;
        let hidden = self.run(&ids.narrow(1, 0, used))?;
        let batch = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        Ok(hidden.index(&[Some(batch), Some(ends)]))
    }
}

/// The vision transformer (`vision_model`).
#[derive(Debug)]
pub struct VisionTransformer {
    class_embedding: Tensor,
    patch_embedding: nn::Conv2D,
    position_embedding: nn::Embedding,
    pre_layrnorm: nn::LayerNorm,
    encoder: Encoder,
    post_layernorm: nn::LayerNorm,
    image_size: i64,
    num_channels: i64,
}

impl VisionTransformer {
    fn new(path: nn::Path, config: &Config) -> Result<Self> {
        let v = &config.vision_config;
        let embeddings = &path / "embeddings";
        let d = v.hidden_size;
        let conv = nn::ConvConfig {
            stride: v.patch_size,
            bias: false,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
            ..Default::default()
        };
        let positions = config.grid_size() * config.grid_size() + 1;
        Ok(Self {
            class_embedding: embeddings.var(
                "class_embedding",
                &[d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            ),
            patch_embedding: nn::conv2d(
                &embeddings / "patch_embedding",
                v.num_channels,
                d,
                v.patch_size,
                conv,
            ),
            position_embedding: embedding(&embeddings / "position_embedding", positions, d),
            pre_layrnorm: layer_norm(&path / "pre_layrnorm", d, v.layer_norm_eps),
            encoder: Encoder::new(
                &path / "encoder",
                v.num_hidden_layers,
                d,
                v.intermediate_size,
                v.num_attention_heads,
                v.layer_norm_eps,
                config.vision_activation()?,
            ),
            post_layernorm: layer_norm(&path / "post_layernorm", d, v.layer_norm_eps),
            image_size: v.image_size,
            num_channels: v.num_channels,
        })
    }

    /// Returns the pooled feature (batch, width): the class token's final
    /// hidden state after `post_layernorm`.
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let size = pixels.size();
        let (c, s) = (self.num_channels, self.image_size);
        if size.len() != 4 || size[0] < 1 || size[1..] != [c, s, s] {
            return Err(Error::InvalidInput(format!(
                "pixel values must have shape (batch, {c}, {s}, {s}), got {size:?}: \
                 preprocess images to {s} x {s} first"
            )));
        }
        if !matches!(
            pixels.kind(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            return Err(Error::InvalidInput(format!(
                "pixel values must be floating point, got {:?}",
                pixels.kind()
            )));
        }

        let pixels = pixels.to_kind(self.class_embedding.kind());
        let batch = size[0];
        // (batch, width, grid, grid) -> (batch, grid * grid, width)
        let patches = self
            .patch_embedding
            .forward(&pixels)
            .flatten(2, 3)
            .transpose(1, 2);
        let class = self
            .class_embedding
            .view([1, 1, -1])
            .expand([batch, 1, -1], false);
        let xs = Tensor::cat(&[class, patches], 1) + &self.position_embedding.ws;
        let xs = self.pre_layrnorm.forward(&xs);
        // Only the class token's output is used, so the last layer computes
        // just that position.
        let xs = self.encoder.forward(&xs, &Mask::None, true)?;
        Ok(self.post_layernorm.forward(&xs.select(1, 0)))
    }
}

/// CLIP: the text and image encoders, their projections into the joint
/// embedding space, and the learned temperature.
#[derive(Debug)]
pub struct ClipModel {
    pub text_model: TextTransformer,
    pub vision_model: VisionTransformer,
    text_projection: nn::Linear,
    visual_projection: nn::Linear,
    logit_scale: Tensor,
}

impl ClipModel {
    /// Builds the model with transformers' variable names under `path`,
    /// randomly initialised.
    pub fn new(path: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let projection = |name: &str, width: i64| {
            let init = nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
                bs_init: None,
                bias: false,
            };
            nn::linear(path / name, width, config.projection_dim, init)
        };
        Ok(Self {
            text_model: TextTransformer::new(path / "text_model", config)?,
            vision_model: VisionTransformer::new(path / "vision_model", config)?,
            text_projection: projection("text_projection", config.text_config.hidden_size),
            visual_projection: projection("visual_projection", config.vision_config.hidden_size),
            logit_scale: path.var(
                "logit_scale",
                &[],
                nn::Init::Const(config.logit_scale_init_value),
            ),
        })
    }

    /// Returns the text embeddings (batch, projection_dim), projected but
    /// not normalised, of token ids (batch, seq) that each contain the
    /// end-of-text token.
    pub fn encode_text(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.text_projection.forward(&self.text_model.pooled(ids)?))
    }

    /// Returns the image embeddings (batch, projection_dim), projected but
    /// not normalised, of preprocessed pixel values (batch, channels, size,
    /// size).
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self
            .visual_projection
            .forward(&self.vision_model.pooled(pixels)?))
    }

    /// Returns the device of the weights.
    pub fn device(&self) -> tch::Device {
        self.logit_scale.device()
    }

    /// Returns `exp(logit_scale)`, clipped at [`MAX_LOGIT_SCALE`].
    pub fn temperature_scale(&self) -> Tensor {
        self.logit_scale.exp().clamp_max(MAX_LOGIT_SCALE)
    }

    /// Returns the similarity logits of image embeddings (n_images, dim) and
    /// text embeddings (n_texts, dim): `(logits_per_image (n_images,
    /// n_texts), logits_per_text)`, the scaled cosine similarities.
    pub fn logits_from_embeddings(
        &self,
        image: &Tensor,
        text: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (i, t) = (image.size(), text.size());
        if i.len() != 2 || t.len() != 2 || i[1] != t[1] {
            return Err(Error::InvalidInput(format!(
                "image and text embeddings must be (n, dim) with the same dim, got {i:?} and {t:?}"
            )));
        }
        let per_image =
            normalize(image).f_matmul(&normalize(text).tr())? * self.temperature_scale();
        let per_text = per_image.tr();
        Ok((per_image, per_text))
    }

    /// Returns `(logits_per_image, logits_per_text)` for a batch of images
    /// and a batch of texts.
    pub fn logits(&self, pixels: &Tensor, ids: &Tensor) -> Result<(Tensor, Tensor)> {
        let image = self.encode_image(pixels)?;
        let text = self.encode_text(ids)?;
        self.logits_from_embeddings(&image, &text)
    }
}

/// Scales each row to unit Euclidean norm. A zero row stays zero.
pub fn normalize(xs: &Tensor) -> Tensor {
    xs / xs.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// CLIP's symmetric contrastive loss of `n` matching pairs: the mean of the
/// cross-entropy of each image against the `n` texts and of each text
/// against the `n` images, where pair `i` is the correct class of both.
///
/// `logits_per_image` must be square, `(n, n)` with `n` at least 1.
pub fn contrastive_loss(logits_per_image: &Tensor) -> Result<Tensor> {
    let size = logits_per_image.size();
    let n = match size[..] {
        [rows, columns] if rows == columns && rows > 0 => rows,
        _ => {
            return Err(Error::InvalidInput(format!(
                "the contrastive loss needs square logits (n, n) of n matching pairs, got \
                 {size:?}"
            )))
        }
    };
    let targets = Tensor::arange(n, (Kind::Int64, logits_per_image.device()));
    let image_loss = logits_per_image.cross_entropy_for_logits(&targets);
    let text_loss = logits_per_image.tr().cross_entropy_for_logits(&targets);
    Ok((image_loss + text_loss) / 2.0)
}
