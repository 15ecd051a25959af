//! CLIP configurations: the `config.json` of Hugging Face `clip` checkpoints
//! and the published sizes.

use common::nn::Activation;
use common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The end-of-text id that Hugging Face configurations written before
/// transformers 4.31 carry in place of the real one. With it, transformers
/// pools at the largest id of each sequence; here it stands for the last id of
/// the vocabulary, CLIP's `<|endoftext|>`.
const LEGACY_EOS_TOKEN_ID: i64 = 2;

/// The text transformer (`text_config`), with transformers' field names and
/// defaults (those of ViT-B/32).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    /// The width of the feed-forward layer.
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// The context length: 77 in every OpenAI model.
    pub max_position_embeddings: i64,
    /// `quick_gelu` in OpenAI's models, `gelu` in many later ones.
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub bos_token_id: i64,
    /// The token whose feature is the text's feature.
    pub eos_token_id: i64,
    pub pad_token_id: i64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            bos_token_id: 49406,
            eos_token_id: 49407,
            pad_token_id: 1,
        }
    }
}

/// The vision transformer (`vision_config`), with transformers' field names
/// and defaults (those of ViT-B/32).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_channels: i64,
    /// The side of the square input images in pixels.
    pub image_size: i64,
    /// The side of the square patches, which is also the stride.
    pub patch_size: i64,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// A CLIP model's shape: the two encoders, the width of the shared embedding
/// space and the initial temperature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    /// The width of the joint embedding space.
    pub projection_dim: i64,
    /// The initial `logit_scale`, the logarithm of the inverse temperature:
    /// ln(1 / 0.07) = 2.6592.
    pub logit_scale_init_value: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self::vit_b_32()
    }
}

/// Counts the parameters of one pre-norm transformer layer of width `d`
/// with a feed-forward layer of width `ff`: four biased `d x d` projections,
/// two LayerNorms and the two feed-forward projections. Saturates instead of
/// overflowing.
fn layer_parameters(d: i128, ff: i128) -> i128 {
    let terms = [
        product(&[4, d, d]),
        product(&[4, d]),
        product(&[2, 2, d]),
        product(&[d, ff]),
        ff,
        product(&[ff, d]),
        d,
    ];
    terms.iter().fold(0, |a, &b| a.saturating_add(b))
}

/// Multiplies `factors`, saturating instead of overflowing.
fn product(factors: &[i128]) -> i128 {
    factors.iter().fold(1, |a, &b| a.saturating_mul(b))
}

/// The largest size accepted for any single field, so that the parameter
/// counts cannot overflow.
const MAX_SIZE: i64 = 1 << 31;

/// The largest model accepted, in parameters (400 GB in f32), far above
/// ViT-L/14's 0.43B.
const MAX_PARAMETERS: i128 = 100_000_000_000;

/// Converts a count that [`Config::validate`] bounds to `i64`.
fn to_i64(count: i128) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Config {
    /// ViT-B/32: a 12-layer, 768-wide vision transformer on 7 x 7 patches of
    /// 32 pixels, and the 12-layer, 512-wide text transformer (151.3M
    /// parameters).
    pub fn vit_b_32() -> Self {
        Self {
            text_config: TextConfig::default(),
            vision_config: VisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }

    /// ViT-B/16: ViT-B/32 on 14 x 14 patches of 16 pixels (149.6M
    /// parameters).
    pub fn vit_b_16() -> Self {
        let mut config = Self::vit_b_32();
        config.vision_config.patch_size = 16;
        config
    }

    /// ViT-L/14: a 24-layer, 1024-wide vision transformer on 16 x 16 patches
    /// of 14 pixels, and a 768-wide text transformer (427.6M parameters).
    pub fn vit_l_14() -> Self {
        Self {
            text_config: TextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                ..TextConfig::default()
            },
            vision_config: VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..VisionConfig::default()
            },
            projection_dim: 768,
            logit_scale_init_value: 2.6592,
        }
    }

    /// A small CLIP for MNIST's 28 x 28 digits with the CLIP vocabulary
    /// (7.77M parameters, 6.3M of them the token embedding). The vision
    /// transformer has 4 layers of width 128 on a 4 x 4 grid of 7-pixel
    /// patches. The text transformer has 3 layers of width 128 over 16
    /// positions, enough for short captions.
    pub fn mnist() -> Self {
        Self {
            text_config: TextConfig {
                hidden_size: 128,
                intermediate_size: 512,
                num_hidden_layers: 3,
                num_attention_heads: 4,
                max_position_embeddings: 16,
                hidden_act: "gelu".into(),
                ..TextConfig::default()
            },
            vision_config: VisionConfig {
                hidden_size: 128,
                intermediate_size: 512,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                image_size: 28,
                patch_size: 7,
                hidden_act: "gelu".into(),
                ..VisionConfig::default()
            },
            projection_dim: 128,
            logit_scale_init_value: 2.6592,
        }
    }

    /// The names [`Config::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &["vit-b-32", "vit-b-16", "vit-l-14", "mnist"];

    /// Returns a preset by name: `vit-b-32`, `vit-b-16`, `vit-l-14` or
    /// `mnist`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vit-b-32" => Ok(Self::vit_b_32()),
            "vit-b-16" => Ok(Self::vit_b_16()),
            "vit-l-14" => Ok(Self::vit_l_14()),
            "mnist" => Ok(Self::mnist()),
            other => Err(Error::InvalidInput(format!(
                "unknown CLIP preset {other:?}: use one of {}",
                Self::PRESETS.join(", ")
            ))),
        }
    }

    /// Reads a Hugging Face `config.json` and checks it.
    ///
    /// Missing fields take transformers' defaults. A configuration with the
    /// legacy end-of-text id 2 pools at the last id of the vocabulary, CLIP's
    /// `<|endoftext|>`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let invalid = |message: String| Error::format(path, "CLIP config.json", message);
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        match value.get("model_type").and_then(|t| t.as_str()) {
            None | Some("clip") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "model_type is {other:?}: this directory holds another kind of model, \
                     not CLIP"
                )))
            }
        }
        let mut config: Self = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        if config.text_config.eos_token_id == LEGACY_EOS_TOKEN_ID {
            config.text_config.eos_token_id = config.text_config.vocab_size - 1;
        }
        config
            .validate()
            .map_err(|e| Error::format(path, "CLIP config.json", e.to_string()))?;
        Ok(config)
    }

    /// Writes the configuration as a Hugging Face `config.json`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut value = serde_json::to_value(self).map_err(|e| {
            Error::InvalidInput(format!("cannot serialise the CLIP configuration: {e}"))
        })?;
        value["model_type"] = "clip".into();
        value["architectures"] = serde_json::json!(["CLIPModel"]);
        value["text_config"]["model_type"] = "clip_text_model".into();
        value["vision_config"]["model_type"] = "clip_vision_model".into();
        let text = serde_json::to_string_pretty(&value).expect("a JSON value serialises");
        common::checkpoint::write_atomic(path, text.as_bytes())
    }

    /// Checks that every size is positive, that the widths divide into
    /// heads and the images into patches, and that the activations and
    /// special ids are valid.
    pub fn validate(&self) -> Result<()> {
        let (t, v) = (&self.text_config, &self.vision_config);
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ];
        for (name, value) in positive {
            if !(1..=MAX_SIZE).contains(&value) {
                return Err(Error::InvalidInput(format!(
                    "{name} is {value}: it must be from 1 to {MAX_SIZE}"
                )));
            }
        }
        let total = self.count_text() + self.count_vision() + 1;
        if total > MAX_PARAMETERS {
            return Err(Error::InvalidInput(format!(
                "the configuration has {total} parameters, more than the {MAX_PARAMETERS} \
                 accepted: check its sizes"
            )));
        }
        for (name, width, heads) in [
            ("text_config", t.hidden_size, t.num_attention_heads),
            ("vision_config", v.hidden_size, v.num_attention_heads),
        ] {
            if width % heads != 0 {
                return Err(Error::InvalidInput(format!(
                    "{name}.hidden_size {width} is not a multiple of num_attention_heads {heads}"
                )));
            }
        }
        if v.image_size % v.patch_size != 0 {
            return Err(Error::InvalidInput(format!(
                "vision_config.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            )));
        }
        if !(0..t.vocab_size).contains(&t.eos_token_id) {
            return Err(Error::InvalidInput(format!(
                "text_config.eos_token_id {} is outside the vocabulary of {} tokens",
                t.eos_token_id, t.vocab_size
            )));
        }
        for (name, eps) in [
            ("text_config", t.layer_norm_eps),
            ("vision_config", v.layer_norm_eps),
        ] {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(Error::InvalidInput(format!(
                    "{name}.layer_norm_eps is {eps}: it must be positive"
                )));
            }
        }
        if !self.logit_scale_init_value.is_finite() {
            return Err(Error::InvalidInput(format!(
                "logit_scale_init_value is {}: it must be finite",
                self.logit_scale_init_value
            )));
        }
        self.text_activation()?;
        self.vision_activation()?;
        Ok(())
    }

    /// Returns the activation of the text transformer's feed-forward layers.
    pub fn text_activation(&self) -> Result<Activation> {
        Activation::from_name(&self.text_config.hidden_act)
    }

    /// Returns the activation of the vision transformer's feed-forward layers.
    pub fn vision_activation(&self) -> Result<Activation> {
        Activation::from_name(&self.vision_config.hidden_act)
    }

    /// Returns the number of patches along each side of an image.
    pub fn grid_size(&self) -> i64 {
        self.vision_config.image_size / self.vision_config.patch_size.max(1)
    }

    /// Counts the parameters of the text encoder and its projection: token and
    /// position embeddings, the layers, the final LayerNorm.
    pub fn text_parameters(&self) -> i64 {
        to_i64(self.count_text())
    }

    fn count_text(&self) -> i128 {
        let t = &self.text_config;
        let d = i128::from(t.hidden_size);
        (i128::from(t.vocab_size) + i128::from(t.max_position_embeddings)) * d
            + i128::from(t.num_hidden_layers) * layer_parameters(d, i128::from(t.intermediate_size))
            + 2 * d
            + d * i128::from(self.projection_dim)
    }

    /// Counts the parameters of the image encoder and its projection: the patch
    /// convolution (no bias), the class token and position embeddings, the
    /// LayerNorms before and after the layers, and the layers.
    pub fn vision_parameters(&self) -> i64 {
        to_i64(self.count_vision())
    }

    fn count_vision(&self) -> i128 {
        let v = &self.vision_config;
        let d = i128::from(v.hidden_size);
        let patch = i128::from(v.patch_size);
        let grid = i128::from(v.image_size) / patch.max(1);
        i128::from(v.num_channels) * patch * patch * d
            + d
            + (grid * grid + 1) * d
            + 2 * 2 * d
            + i128::from(v.num_hidden_layers) * layer_parameters(d, i128::from(v.intermediate_size))
            + d * i128::from(self.projection_dim)
    }

    /// Counts all parameters, including the learned temperature.
    pub fn num_parameters(&self) -> i64 {
        to_i64(self.count_text() + self.count_vision() + 1)
    }

    /// Counts the embedding parameters: the text encoder's token and
    /// position tables and the image encoder's position table. The patch
    /// convolution and the class token are not tables of tokens or
    /// positions, so they count as non-embedding parameters.
    pub fn embedding_parameters(&self) -> i64 {
        to_i64(self.count_embedding())
    }

    fn count_embedding(&self) -> i128 {
        let (t, v) = (&self.text_config, &self.vision_config);
        let grid = i128::from(self.grid_size());
        let text_rows = i128::from(t.vocab_size) + i128::from(t.max_position_embeddings);
        let vision_rows = product(&[grid, grid]).saturating_add(1);
        product(&[text_rows, i128::from(t.hidden_size)])
            .saturating_add(product(&[vision_rows, i128::from(v.hidden_size)]))
    }

    /// Counts the parameters outside the embedding tables.
    pub fn non_embedding_parameters(&self) -> i64 {
        to_i64(self.count_text() + self.count_vision() + 1 - self.count_embedding())
    }

    /// Estimates the forward FLOPs of the text encoder on one text of the
    /// full context (`max_position_embeddings` tokens, 77 in OpenAI's
    /// models), with Kaplan et al. (2020), section 2.1, for each token:
    /// `2 * N + 2 * n_layer * n_ctx * d_attn`. `N` is the layers' and the
    /// final LayerNorm's parameters, `n_ctx` the context and `d_attn` the
    /// width. The projection into the joint space runs once per text and adds
    /// `2 * hidden_size * projection_dim`. A multiply-add counts as 2 FLOPs.
    pub fn text_forward_flops(&self) -> i64 {
        to_i64(self.count_text_flops())
    }

    fn count_text_flops(&self) -> i128 {
        let t = &self.text_config;
        let d = i128::from(t.hidden_size);
        let layers = i128::from(t.num_hidden_layers);
        let tokens = i128::from(t.max_position_embeddings);
        let layer = layer_parameters(d, i128::from(t.intermediate_size));
        let per_token_weights = product(&[layers, layer]).saturating_add(2 * d);
        let attention = product(&[2, layers, tokens, d]);
        let per_token = product(&[2, per_token_weights]).saturating_add(attention);
        let projection = product(&[2, d, i128::from(self.projection_dim)]);
        product(&[tokens, per_token]).saturating_add(projection)
    }

    /// Estimates the forward FLOPs of the image encoder on one image of
    /// `image_size` pixels square. The patch convolution costs
    /// `2 * num_channels * patch_size^2 * hidden_size` per patch. Each of the
    /// `grid_size^2 + 1` tokens (the patches and the class token) costs
    /// `2 * N + 2 * n_layer * n_ctx * d_attn` as in Kaplan et al. (2020),
    /// section 2.1, with `N` the layers' and the first LayerNorm's parameters
    /// and `n_ctx` the number of tokens. The final LayerNorm and the
    /// projection run once per image. A multiply-add counts as 2 FLOPs.
    ///
    /// NOTE: every token attends to every token in this encoder, so the
    /// scores and the weighted values together cost twice Kaplan's attention
    /// term, which would add 2% to ViT-L/14's FLOPs and 0.5% to ViT-B/32's.
    pub fn vision_forward_flops(&self) -> i64 {
        to_i64(self.count_vision_flops())
    }

    fn count_vision_flops(&self) -> i128 {
        let v = &self.vision_config;
        let d = i128::from(v.hidden_size);
        let layers = i128::from(v.num_hidden_layers);
        let patch = i128::from(v.patch_size);
        let grid = i128::from(self.grid_size());
        let patches = product(&[grid, grid]);
        let tokens = patches.saturating_add(1);
        let patch_embedding = product(&[2, i128::from(v.num_channels), patch, patch, d, patches]);
        let layer = layer_parameters(d, i128::from(v.intermediate_size));
        let per_token_weights = product(&[layers, layer]).saturating_add(2 * d);
        let attention = product(&[2, layers, tokens, d]);
        let per_token = product(&[2, per_token_weights]).saturating_add(attention);
        let projection = product(&[2, d, i128::from(self.projection_dim)]);
        let pooled = product(&[2, 2, d]).saturating_add(projection);
        patch_embedding
            .saturating_add(product(&[tokens, per_token]))
            .saturating_add(pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in Config::PRESETS {
            Config::preset(name).unwrap().validate().unwrap();
        }
        let err = Config::preset("vit-h-14").unwrap_err().to_string();
        assert!(
            err.contains("vit-h-14") && err.contains("vit-b-32"),
            "{err}"
        );
    }

    #[test]
    fn indivisible_image_is_rejected() {
        let mut config = Config::vit_b_32();
        config.vision_config.image_size = 100;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("image_size 100") && err.contains("32"),
            "{err}"
        );
    }

    #[test]
    fn huge_sizes_are_rejected() {
        let mut config = Config::vit_b_32();
        config.vision_config.hidden_size = 1 << 40;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("vision_config.hidden_size"), "{err}");
        config.vision_config.hidden_size = 1 << 30;
        config.vision_config.num_attention_heads = 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("parameters"), "{err}");
    }

    #[test]
    fn unknown_activation_is_rejected() {
        let mut config = Config::mnist();
        config.text_config.hidden_act = "tanh".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("tanh"), "{err}");
    }
}
