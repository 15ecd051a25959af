//! The configuration of [`crate::UNet2DModel`]: the `config.json` of
//! `diffusers`' `UNet2DModel` (field names and defaults of diffusers 0.42),
//! checked once into the shape the model is built from.

use common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `_class_name` that diffusers writes for this model.
pub const CLASS_NAME: &str = "UNet2DModel";

/// The largest channel count, layer count or side accepted, far above any
/// published U-Net and small enough that parameter counts cannot overflow.
const MAX_SIZE: i64 = 1 << 16;

/// The side of the square samples a U-Net was trained on: diffusers stores
/// an integer, a `[height, width]` pair or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(i64),
    Rectangle([i64; 2]),
}

impl SampleSize {
    /// Returns `(height, width)`.
    pub fn height_width(self) -> (i64, i64) {
        match self {
            SampleSize::Square(side) => (side, side),
            SampleSize::Rectangle([height, width]) => (height, width),
        }
    }
}

/// The encoding of a timestep that feeds the time-embedding MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeEmbedding {
    /// The sinusoidal embedding of the Transformer, as DDPM uses it.
    Positional,
    /// A learned table with a row per training timestep (`time_proj.weight`).
    Learned,
    /// Gaussian Fourier features (score-based models); not supported.
    Fourier,
}

/// The way the time embedding enters a residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeScaleShift {
    /// Added to the activations before the second GroupNorm (DDPM).
    Default,
    /// A scale and a shift applied after the second GroupNorm (improved
    /// DDPM, Nichol and Dhariwal).
    ScaleShift,
}

/// A down block of the encoder half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// Residual blocks, then a stride-2 convolution.
    DownBlock2D,
    /// Residual blocks each followed by self-attention, then a stride-2
    /// convolution.
    AttnDownBlock2D,
}

/// An up block of the decoder half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// Residual blocks on the concatenated skip connections, then nearest
    /// up-sampling and a convolution.
    UpBlock2D,
    /// The same with self-attention after each residual block.
    AttnUpBlock2D,
}

/// The middle block between the two halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    /// A residual block, self-attention, and a second residual block.
    UNetMidBlock2D,
}

/// The `config.json` of a diffusers `UNet2DModel`.
///
/// Fields and defaults are those of diffusers 0.42. Keys this crate does not
/// use (`_class_name`, `_diffusers_version`, ...) are ignored. A value that
/// changes the architecture in a way this crate does not implement is an
/// error from [`Config::validate`], never silently dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub sample_size: Option<SampleSize>,
    pub in_channels: i64,
    pub out_channels: i64,
    /// Maps inputs from `[0, 1]` to `[-1, 1]` inside the model.
    pub center_input_sample: bool,
    pub time_embedding_type: TimeEmbedding,
    /// Width of the time embedding; `4 * block_out_channels[0]` when unset.
    pub time_embedding_dim: Option<i64>,
    /// The `downscale_freq_shift` of the sinusoidal embedding: frequencies
    /// are `exp(-ln(10000) * i / (half - freq_shift))`.
    pub freq_shift: i64,
    /// Puts the cosines before the sines in the sinusoidal embedding.
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<DownBlockType>,
    pub mid_block_type: Option<MidBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<i64>,
    /// Residual blocks per down block; up blocks have one more.
    pub layers_per_block: i64,
    pub mid_block_scale_factor: f64,
    /// Padding of the stride-2 down-sampling convolution; 0 pads the right
    /// and bottom edges by one instead.
    pub downsample_padding: i64,
    pub downsample_type: String,
    pub upsample_type: String,
    pub dropout: f64,
    pub act_fn: String,
    /// Width of an attention head; one head spans all channels when unset.
    pub attention_head_dim: Option<i64>,
    pub norm_num_groups: i64,
    /// Groups of the mid block's attention GroupNorm; when unset, the
    /// attention has a GroupNorm of `norm_num_groups` groups only with the
    /// default time scale-shift.
    pub attn_norm_num_groups: Option<i64>,
    /// The GroupNorm epsilon of every block and of the output norm.
    pub norm_eps: f64,
    pub resnet_time_scale_shift: TimeScaleShift,
    /// Adds self-attention to the mid block.
    pub add_attention: bool,
    pub class_embed_type: Option<String>,
    /// Number of classes of a class-conditional model (`class_embedding`).
    pub num_class_embeds: Option<i64>,
    /// Rows of the learned time embedding.
    pub num_train_timesteps: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: TimeEmbedding::Positional,
            time_embedding_dim: None,
            freq_shift: 0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                DownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D, AttnUpBlock2D, UpBlock2D],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

impl Config {
    /// The U-Net of `google/ddpm-cifar10-32`, the CIFAR-10 model of Ho et
    /// al. (2020) as diffusers publishes it: four resolutions of 128, 256,
    /// 256 and 256 channels, self-attention at 16 x 16, 35,746,307
    /// parameters.
    pub fn ddpm_cifar10_32() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: Some(SampleSize::Square(32)),
            block_out_channels: vec![128, 256, 256, 256],
            down_block_types: vec![DownBlock2D, AttnDownBlock2D, DownBlock2D, DownBlock2D],
            up_block_types: vec![UpBlock2D, UpBlock2D, AttnUpBlock2D, UpBlock2D],
            attention_head_dim: None,
            downsample_padding: 0,
            flip_sin_to_cos: false,
            freq_shift: 1,
            norm_eps: 1e-6,
            ..Self::default()
        }
    }

    /// A U-Net for 32 x 32 single-channel digits that trains on two CPU
    /// cores, with 2,737,905 parameters. Its four levels have 16, 32, 64
    /// and 128 channels at 32 x 32, 16 x 16, 8 x 8 and 4 x 4, one residual
    /// block each on the way down and two on the way up. Self-attention runs
    /// at 8 x 8, 4 x 4 and in the middle. Most of the parameters sit at the
    /// two coarsest levels, where a convolution costs a sixteenth of its
    /// cost at full resolution. Beside a three-level U-Net of 16, 32 and 64
    /// channels, the fourth level adds 35% to the FLOPs and quadruples the
    /// parameters.
    pub fn mnist() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            sample_size: Some(SampleSize::Square(32)),
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![16, 32, 64, 128],
            down_block_types: vec![DownBlock2D, DownBlock2D, AttnDownBlock2D, AttnDownBlock2D],
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D, UpBlock2D, UpBlock2D],
            layers_per_block: 1,
            attention_head_dim: None,
            norm_num_groups: 8,
            norm_eps: 1e-6,
            ..Self::default()
        }
    }

    /// The names [`Config::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &["ddpm-cifar10-32", "mnist"];

    /// Returns the preset of a name: `ddpm-cifar10-32` or `mnist`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "ddpm-cifar10-32" => Ok(Self::ddpm_cifar10_32()),
            "mnist" => Ok(Self::mnist()),
            _ => Err(Error::InvalidInput(format!(
                "unknown U-Net preset {name:?}: expected ddpm-cifar10-32 or mnist"
            ))),
        }
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, "UNet2DModel config", e.to_string()))?;
        if !value.is_object() {
            return Err(Error::format(
                path,
                "UNet2DModel config",
                "the file must hold a JSON object of config fields".to_string(),
            ));
        }
        if let Some(class) = value.get("_class_name").and_then(|c| c.as_str()) {
            if class != CLASS_NAME {
                return Err(Error::format(
                    path,
                    "UNet2DModel config",
                    format!("_class_name is {class:?}, not {CLASS_NAME:?}"),
                ));
            }
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| Error::format(path, "UNet2DModel config", e.to_string()))?;
        config
            .validate()
            .map_err(|e| Error::format(path, "UNet2DModel config", e.to_string()))?;
        Ok(config)
    }

    /// Writes `config.json` with the `_class_name` diffusers expects, so that
    /// `UNet2DModel.from_pretrained` reads the directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise the U-Net config: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            map.insert("_class_name".into(), CLASS_NAME.into());
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise the U-Net config: {e}")))?;
        common::checkpoint::write_atomic(path, text.as_bytes())
    }

    /// Checks that the configuration describes a U-Net this crate builds:
    /// sizes in range, matching block lists, channel counts divisible by the
    /// GroupNorm groups, and only implemented block and embedding types.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidInput(message));
        let levels = self.block_out_channels.len();
        if levels == 0 {
            return invalid("block_out_channels is empty: a U-Net needs at least one level".into());
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return invalid(format!(
                "{} down blocks, {} up blocks and {} block_out_channels: the three lists \
                 must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len(),
                levels
            ));
        }
        for (name, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
        ]
        .into_iter()
        .chain(
            self.block_out_channels
                .iter()
                .map(|&c| ("block_out_channels", c)),
        ) {
            if !(1..=MAX_SIZE).contains(&value) {
                return invalid(format!("{name} is {value}: it must be in 1..={MAX_SIZE}"));
            }
        }
        if levels > 16 {
            return invalid(format!("{levels} levels: at most 16 are supported"));
        }
        for &channels in &self.block_out_channels {
            if channels % self.norm_num_groups != 0 {
                return invalid(format!(
                    "block_out_channels {channels} is not divisible by norm_num_groups {}",
                    self.norm_num_groups
                ));
            }
        }
        if let Some(groups) = self.attn_norm_num_groups {
            let channels = self.block_out_channels[levels - 1];
            if groups < 1 || channels % groups != 0 {
                return invalid(format!(
                    "attn_norm_num_groups {groups} does not divide the mid block's {channels} channels"
                ));
            }
        }
        if let Some(dim) = self.time_embedding_dim {
            if !(1..=MAX_SIZE).contains(&dim) {
                return invalid(format!(
                    "time_embedding_dim is {dim}: it must be in 1..={MAX_SIZE}"
                ));
            }
        }
        if let Some(head_dim) = self.attention_head_dim {
            if head_dim < 1 {
                return invalid(format!(
                    "attention_head_dim is {head_dim}: it must be positive"
                ));
            }
            for (level, &channels) in self.block_out_channels.iter().enumerate() {
                if self.attention_at(level) && channels < head_dim {
                    return invalid(format!(
                        "attention_head_dim {head_dim} is wider than the {channels} channels \
                         of level {level}, which would leave no attention head"
                    ));
                }
            }
        }
        self.validate_values()?;
        self.validate_supported()
    }

    /// Checks the floating-point and padding values.
    fn validate_values(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidInput(message));
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid(format!("dropout is {}: it must be in [0, 1)", self.dropout));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return invalid(format!(
                "norm_eps is {}: it must be positive",
                self.norm_eps
            ));
        }
        if !(self.mid_block_scale_factor > 0.0 && self.mid_block_scale_factor.is_finite()) {
            return invalid(format!(
                "mid_block_scale_factor is {}: it must be positive",
                self.mid_block_scale_factor
            ));
        }
        if !(0..=1).contains(&self.downsample_padding) {
            return invalid(format!(
                "downsample_padding is {}: it must be 0 or 1",
                self.downsample_padding
            ));
        }
        Ok(())
    }

    /// Checks that the activation, the resampling, the time embedding and
    /// the class conditioning are kinds this crate implements.
    fn validate_supported(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidInput(message));
        let unsupported = |message: String| Err(Error::Unsupported(message));
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return unsupported(format!(
                "act_fn {:?} is not supported: only silu (swish) is implemented",
                self.act_fn
            ));
        }
        for (name, kind) in [
            ("downsample_type", &self.downsample_type),
            ("upsample_type", &self.upsample_type),
        ] {
            if kind != "conv" {
                return unsupported(format!(
                    "{name} {kind:?} is not supported: only \"conv\" is implemented"
                ));
            }
        }
        match self.time_embedding_type {
            TimeEmbedding::Positional => {
                if self.block_out_channels[0] < 2 {
                    return invalid(
                        "the sinusoidal time embedding needs block_out_channels[0] >= 2".into(),
                    );
                }
                if self.block_out_channels[0] / 2 == self.freq_shift {
                    return invalid(format!(
                        "freq_shift {} equals half of block_out_channels[0], which divides by zero",
                        self.freq_shift
                    ));
                }
            }
            TimeEmbedding::Learned => match self.num_train_timesteps {
                Some(rows) if (1..=MAX_SIZE).contains(&rows) => {}
                rows => {
                    return invalid(format!(
                        "num_train_timesteps is {rows:?}: the learned time embedding needs \
                         a row count in 1..={MAX_SIZE}"
                    ))
                }
            },
            TimeEmbedding::Fourier => {
                return unsupported(
                    "time_embedding_type \"fourier\" (score-based models) is not supported: \
                     use \"positional\" or \"learned\""
                        .into(),
                )
            }
        }
        if let Some(kind) = &self.class_embed_type {
            return unsupported(format!(
                "class_embed_type {kind:?} is not supported: only a class table \
                 (num_class_embeds with no class_embed_type) is implemented"
            ));
        }
        if let Some(classes) = self.num_class_embeds {
            if !(1..=MAX_SIZE).contains(&classes) {
                return invalid(format!(
                    "num_class_embeds is {classes}: it must be in 1..={MAX_SIZE}"
                ));
            }
        }
        Ok(())
    }

    /// Returns the width of the time embedding.
    pub fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Returns how many times the down blocks halve the sample: every level
    /// but the last.
    pub fn downsampling_factor(&self) -> i64 {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Returns whether the down block of `level` (and the matching up
    /// block) has self-attention.
    fn attention_at(&self, level: usize) -> bool {
        self.down_block_types[level] == DownBlockType::AttnDownBlock2D
            || self.up_block_types[self.block_out_channels.len() - 1 - level]
                == UpBlockType::AttnUpBlock2D
    }

    /// Returns the number of heads and the head width of self-attention
    /// over `channels` channels, as diffusers' `Attention` derives them.
    pub(crate) fn attention_heads(&self, channels: i64) -> (i64, i64) {
        let head_dim = self.attention_head_dim.unwrap_or(channels);
        (channels / head_dim, head_dim)
    }

    /// Returns the number of parameters, in closed form.
    pub fn num_parameters(&self) -> i64 {
        let conv = |cin: i64, cout: i64, k: i64| cin * cout * k * k + cout;
        let linear = |cin: i64, cout: i64| cin * cout + cout;
        let norm = |c: i64| 2 * c;
        let temb = self.time_embed_dim();
        let time_factor = match self.resnet_time_scale_shift {
            TimeScaleShift::Default => 1,
            TimeScaleShift::ScaleShift => 2,
        };
        let resnet = |cin: i64, cout: i64| {
            let shortcut = if cin != cout { conv(cin, cout, 1) } else { 0 };
            norm(cin)
                + conv(cin, cout, 3)
                + linear(temb, time_factor * cout)
                + norm(cout)
                + conv(cout, cout, 3)
                + shortcut
        };
        let attention = |channels: i64, group_norm: bool| {
            let (heads, head_dim) = self.attention_heads(channels);
            let inner = heads * head_dim;
            3 * linear(channels, inner)
                + linear(inner, channels)
                + if group_norm { norm(channels) } else { 0 }
        };

        let c0 = self.block_out_channels[0];
        let mut total = conv(self.in_channels, c0, 3);
        total += match self.time_embedding_type {
            TimeEmbedding::Learned => self.num_train_timesteps.unwrap_or(0) * c0,
            _ => 0,
        };
        total += linear(c0, temb) + linear(temb, temb);
        total += self.num_class_embeds.map_or(0, |n| n * temb);

        let levels = self.block_out_channels.len();
        let mut out = c0;
        for (level, kind) in self.down_block_types.iter().enumerate() {
            let cin = out;
            out = self.block_out_channels[level];
            for layer in 0..self.layers_per_block {
                total += resnet(if layer == 0 { cin } else { out }, out);
                if *kind == DownBlockType::AttnDownBlock2D {
                    total += attention(out, true);
                }
            }
            if level + 1 < levels {
                total += conv(out, out, 3);
            }
        }

        if self.mid_block_type.is_some() {
            let channels = self.block_out_channels[levels - 1];
            total += 2 * resnet(channels, channels);
            if self.add_attention {
                total += attention(channels, self.mid_attention_groups().is_some());
            }
        }

        let reversed: Vec<i64> = self.block_out_channels.iter().rev().copied().collect();
        let mut out = reversed[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let prev = out;
            out = reversed[i];
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let layers = self.layers_per_block + 1;
            for layer in 0..layers {
                let skip = if layer == layers - 1 { skip_in } else { out };
                let cin = if layer == 0 { prev } else { out };
                total += resnet(cin + skip, out);
                if *kind == UpBlockType::AttnUpBlock2D {
                    total += attention(out, true);
                }
            }
            if i + 1 < levels {
                total += conv(out, out, 3);
            }
        }

        total + norm(c0) + conv(c0, self.out_channels, 3)
    }

    /// Counts the embedding parameters: the lookup tables of a learned time
    /// embedding (`num_train_timesteps` rows) and of the class labels
    /// (`num_class_embeds` rows). The sinusoidal time embedding has none.
    pub fn embedding_parameters(&self) -> i64 {
        let c0 = self.block_out_channels.first().copied().unwrap_or(0);
        let temb = self.time_embedding_dim.unwrap_or(c0.saturating_mul(4));
        let time = match self.time_embedding_type {
            TimeEmbedding::Learned => self.num_train_timesteps.unwrap_or(0).saturating_mul(c0),
            _ => 0,
        };
        let classes = self.num_class_embeds.unwrap_or(0).saturating_mul(temb);
        time.saturating_add(classes)
    }

    /// Counts the parameters outside the embedding tables. Like
    /// [`Config::num_parameters`], it panics on an empty `block_out_channels`,
    /// which [`Config::validate`] rejects.
    pub fn non_embedding_parameters(&self) -> i64 {
        self.num_parameters()
            .saturating_sub(self.embedding_parameters())
    }

    /// Counts the forward FLOPs of one denoising step on one sample of
    /// `height x width` pixels: 2 FLOPs per multiply-add of every
    /// convolution, every linear layer and the attention products `Q K^T`
    /// and `softmax(Q K^T) V`, at the resolution of each block.
    ///
    /// Level `l` (from 0) runs at `height / 2^l x width / 2^l`, the mid block
    /// at the last level's resolution, a down-sampling convolution at its
    /// output's resolution and an up-sampling one at the doubled resolution.
    /// Self-attention over `P` pixels with `heads * head_dim = inner` costs
    /// `P * 4 * channels * inner` multiply-adds in its projections and
    /// `2 * P^2 * inner` in its products. The time-embedding MLP and the
    /// residual blocks' time projections run once per sample. Biases,
    /// GroupNorm, SiLU, softmax, the lookups and the additions are not
    /// counted.
    ///
    /// Returns an error when the configuration is invalid, or when a side is
    /// not a positive multiple of [`Config::downsampling_factor`] (which the
    /// model rejects too) or the count passes `i64::MAX`.
    pub fn forward_flops(&self, height: i64, width: i64) -> Result<i64> {
        self.validate()?;
        let factor = self.downsampling_factor();
        for (name, side) in [("height", height), ("width", width)] {
            if !(1..=MAX_SIZE).contains(&side) || side % factor != 0 {
                return Err(Error::InvalidInput(format!(
                    "sample {name} {side} is invalid: it must be a positive multiple of the \
                     down-sampling factor {factor}, at most {MAX_SIZE}"
                )));
            }
        }
        let flops = 2 * self.forward_multiply_adds(height, width);
        i64::try_from(flops).map_err(|_| {
            Error::InvalidInput(format!(
                "a {height} x {width} sample needs {flops} FLOPs, which overflows an i64: \
                 use a smaller sample"
            ))
        })
    }

    /// Counts the forward FLOPs at the configuration's `sample_size`, the
    /// resolution the U-Net was trained at. Returns an error when
    /// `sample_size` is unset, or as [`Config::forward_flops`] does.
    pub fn sample_forward_flops(&self) -> Result<i64> {
        let Some(size) = self.sample_size else {
            return Err(Error::InvalidInput(
                "sample_size is unset: pass the sample's height and width to forward_flops".into(),
            ));
        };
        let (height, width) = size.height_width();
        self.forward_flops(height, width)
    }

    /// Walks the blocks as [`Config::num_parameters`] does, counting the
    /// multiply-adds of [`Config::forward_flops`]. It expects a validated
    /// configuration and sides that are multiples of the down-sampling factor
    /// of at most `MAX_SIZE`, which keep every product far below `i128::MAX`.
    fn forward_multiply_adds(&self, height: i64, width: i64) -> i128 {
        let pixels = |level: usize| i128::from((height >> level) * (width >> level));
        let conv =
            |cin: i64, cout: i64, k: i64, pixels: i128| i128::from(cin * cout * k * k) * pixels;
        let temb = self.time_embed_dim();
        let time_factor = match self.resnet_time_scale_shift {
            TimeScaleShift::Default => 1,
            TimeScaleShift::ScaleShift => 2,
        };
        let resnet = |cin: i64, cout: i64, pixels: i128| {
            let shortcut = if cin != cout {
                conv(cin, cout, 1, pixels)
            } else {
                0
            };
            conv(cin, cout, 3, pixels)
                + i128::from(temb * time_factor * cout)
                + conv(cout, cout, 3, pixels)
                + shortcut
        };
        let attention = |channels: i64, pixels: i128| {
            let (heads, head_dim) = self.attention_heads(channels);
            let inner = i128::from(heads * head_dim);
            pixels * 4 * i128::from(channels) * inner + 2 * pixels * pixels * inner
        };

        let levels = self.block_out_channels.len();
        let c0 = self.block_out_channels[0];
        let mut total = conv(self.in_channels, c0, 3, pixels(0));
        total += i128::from(c0 * temb + temb * temb);

        let mut out = c0;
        for (level, kind) in self.down_block_types.iter().enumerate() {
            let cin = out;
            out = self.block_out_channels[level];
            for layer in 0..self.layers_per_block {
                total += resnet(if layer == 0 { cin } else { out }, out, pixels(level));
                if *kind == DownBlockType::AttnDownBlock2D {
                    total += attention(out, pixels(level));
                }
            }
            if level + 1 < levels {
                total += conv(out, out, 3, pixels(level + 1));
            }
        }

        if self.mid_block_type.is_some() {
            let channels = self.block_out_channels[levels - 1];
            total += 2 * resnet(channels, channels, pixels(levels - 1));
            if self.add_attention {
                total += attention(channels, pixels(levels - 1));
            }
        }

        let reversed: Vec<i64> = self.block_out_channels.iter().rev().copied().collect();
        let mut out = reversed[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let level = levels - 1 - i;
            let prev = out;
            out = reversed[i];
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let layers = self.layers_per_block + 1;
            for layer in 0..layers {
                let skip = if layer == layers - 1 { skip_in } else { out };
                let cin = if layer == 0 { prev } else { out };
                total += resnet(cin + skip, out, pixels(level));
                if *kind == UpBlockType::AttnUpBlock2D {
                    total += attention(out, pixels(level));
                }
            }
            if level > 0 {
                total += conv(out, out, 3, pixels(level - 1));
            }
        }

        total + conv(c0, self.out_channels, 3, pixels(0))
    }

    /// Returns the GroupNorm groups of the mid block's attention, or `None`
    /// when it has no GroupNorm.
    pub(crate) fn mid_attention_groups(&self) -> Option<i64> {
        self.attn_norm_num_groups
            .or(match self.resnet_time_scale_shift {
                TimeScaleShift::Default => Some(self.norm_num_groups),
                TimeScaleShift::ScaleShift => None,
            })
    }
}
