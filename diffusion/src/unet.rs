//! The U-Net of DDPM (Ho et al., 2020), as `diffusers`' `UNet2DModel`
//! builds it, with its tensor names: a PixelCNN++-style U-Net of residual
//! blocks with GroupNorm and a projection of the time embedding, stride-2
//! convolutions down, nearest up-sampling and convolutions up, skip
//! connections concatenated at every residual block of the up half, and
//! self-attention at the configured levels and in the middle.

use crate::config::{Config, DownBlockType, TimeEmbedding, TimeScaleShift, UpBlockType};
use common::nn::{linear, scaled_dot_product_attention, silu, Mask};
use common::{Error, Result};
use tch::nn;
use tch::{Kind, Tensor};

/// The base of the sinusoidal embedding's geometric frequencies.
const MAX_PERIOD: f64 = 10_000.0;

/// Returns the sinusoidal embedding of `timesteps` `(batch,)`, `(batch,
/// dim)`: frequencies `exp(-ln(10000) * i / (dim / 2 - freq_shift))` for
/// `i < dim / 2`, sines then cosines (or cosines first with
/// `flip_sin_to_cos`), and a zero column when `dim` is odd.
pub fn timestep_embedding(
    timesteps: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    freq_shift: i64,
) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, timesteps.device()))
        * (-MAX_PERIOD.ln() / (half - freq_shift) as f64);
    let angles = timesteps.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
    let (sin, cos) = (angles.sin(), angles.cos());
    let embedding = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], 1)
    } else {
        Tensor::cat(&[sin, cos], 1)
    };
    if dim % 2 == 1 {
        embedding.pad([0, 1], "constant", 0.0)
    } else {
        embedding
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, kernel, config)
}

fn group_norm(p: nn::Path, groups: i64, channels: i64, eps: f64) -> nn::GroupNorm {
    let config = nn::GroupNormConfig {
        eps,
        ..Default::default()
    };
    nn::group_norm(p, groups, channels, config)
}

/// A residual block: `x + conv2(drop(act(norm2(conv1(act(norm1(x))) + t))))`
/// with the time embedding `t` projected per channel (or applied as a scale
/// and shift after `norm2`), a 1 x 1 shortcut where the width changes, and
/// the sum divided by `output_scale_factor`.
#[derive(Debug)]
struct ResnetBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    scale_shift: bool,
    dropout: f64,
    output_scale_factor: f64,
}

impl ResnetBlock {
    fn new(p: nn::Path, config: &Config, cin: i64, cout: i64, output_scale_factor: f64) -> Self {
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let scale_shift = config.resnet_time_scale_shift == TimeScaleShift::ScaleShift;
        let time_out = if scale_shift { 2 * cout } else { cout };
        Self {
            norm1: group_norm(&p / "norm1", groups, cin, eps),
            conv1: conv(&p / "conv1", cin, cout, 3, 1, 1),
            time_emb_proj: linear(
                &p / "time_emb_proj",
                config.time_embed_dim(),
                time_out,
                true,
            ),
            norm2: group_norm(&p / "norm2", groups, cout, eps),
            conv2: conv(&p / "conv2", cout, cout, 3, 1, 1),
            conv_shortcut: (cin != cout).then(|| conv(&p / "conv_shortcut", cin, cout, 1, 1, 0)),
            scale_shift,
            dropout: config.dropout,
            output_scale_factor,
        }
    }

    fn forward(&self, xs: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let hidden = silu(&xs.apply(&self.norm1)).apply(&self.conv1);
        let time = silu(temb)
            .apply(&self.time_emb_proj)
            .unsqueeze(-1)
            .unsqueeze(-1);
        let hidden = if self.scale_shift {
            let parts = time.chunk(2, 1);
            hidden.apply(&self.norm2) * (1.0 + &parts[0]) + &parts[1]
        } else {
            (hidden + time).apply(&self.norm2)
        };
        let hidden = silu(&hidden)
            .dropout(self.dropout, train)
            .apply(&self.conv2);
        let shortcut = match &self.conv_shortcut {
            Some(conv) => xs.apply(conv),
            None => xs.shallow_clone(),
        };
        let out = shortcut + hidden;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Multi-head self-attention over the pixels of a feature map, with a
/// residual connection: diffusers' `Attention` as the U-Net blocks build it.
#[derive(Debug)]
struct SelfAttention {
    group_norm: Option<nn::GroupNorm>,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    head_dim: i64,
    output_scale_factor: f64,
}

impl SelfAttention {
    fn new(
        p: nn::Path,
        config: &Config,
        channels: i64,
        groups: Option<i64>,
        output_scale_factor: f64,
    ) -> Self {
        let (heads, head_dim) = config.attention_heads(channels);
        let inner = heads * head_dim;
        Self {
            group_norm: groups.map(|g| group_norm(&p / "group_norm", g, channels, config.norm_eps)),
            to_q: linear(&p / "to_q", channels, inner, true),
            to_k: linear(&p / "to_k", channels, inner, true),
            to_v: linear(&p / "to_v", channels, inner, true),
            to_out: linear(&p / "to_out" / 0, inner, channels, true),
            heads,
            head_dim,
            output_scale_factor,
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = xs.size4()?;
        let pixels = height * width;
        let normed = match &self.group_norm {
            Some(norm) => xs.apply(norm),
            None => xs.shallow_clone(),
        };

        // (batch, channels, h, w) -> (batch, h * w, channels)
        let hidden = normed.view([batch, channels, pixels]).transpose(1, 2);
        let heads = |layer: &nn::Linear| {
            hidden
                .apply(layer)
                .view([batch, pixels, self.heads, self.head_dim])
                .transpose(1, 2)
        };
        let (q, k, v) = (heads(&self.to_q), heads(&self.to_k), heads(&self.to_v));
        let scale = (self.head_dim as f64).powf(-0.5);
        let attended = scaled_dot_product_attention(&q, &k, &v, &Mask::None, Some(scale))?;

        // (batch, heads, h * w, head_dim) -> (batch, channels, h, w)
        let out = attended
            .transpose(1, 2)
            .reshape([batch, pixels, self.heads * self.head_dim])
            .apply(&self.to_out)
            .transpose(1, 2)
            .reshape([batch, channels, height, width]);
        let out = out + xs;
        Ok(if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        })
    }
}

/// Residual blocks, each optionally followed by self-attention.
#[derive(Debug)]
struct Layers {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SelfAttention>,
}

impl Layers {
    fn layer(&self, i: usize, xs: &Tensor, temb: &Tensor, train: bool) -> Result<Tensor> {
        let hidden = self.resnets[i].forward(xs, temb, train);
        match self.attentions.get(i) {
            Some(attention) => attention.forward(&hidden),
            None => Ok(hidden),
        }
    }
}

#[derive(Debug)]
struct DownBlock {
    layers: Layers,
    downsampler: Option<nn::Conv2D>,
    /// Pads the right and bottom edges before the stride-2 convolution
    /// (`downsample_padding = 0`).
    pad_before_downsampling: bool,
}

#[derive(Debug)]
struct UpBlock {
    layers: Layers,
    upsampler: Option<nn::Conv2D>,
}

#[derive(Debug)]
struct MidBlock {
    first: ResnetBlock,
    attention: Option<SelfAttention>,
    second: ResnetBlock,
}

/// The denoising U-Net of `diffusers`' `UNet2DModel`.
///
/// Variables carry diffusers' tensor names (`conv_in.weight`,
/// `down_blocks.1.attentions.0.to_q.weight`, `mid_block.resnets.0.norm1.bias`,
/// `up_blocks.2.upsamplers.0.conv.weight`, ...), so the
/// `diffusion_pytorch_model.safetensors` of a diffusers model directory loads
/// by name.
#[derive(Debug)]
pub struct UNet2DModel {
    config: Config,
    conv_in: nn::Conv2D,
    time_table: Option<Tensor>,
    time_linear_1: nn::Linear,
    time_linear_2: nn::Linear,
    class_embedding: Option<nn::Embedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl UNet2DModel {
    /// Builds the U-Net under `p` after checking `config`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let levels = config.block_out_channels.len();
        let c0 = config.block_out_channels[0];
        let temb = config.time_embed_dim();
        let time_table = (config.time_embedding_type == TimeEmbedding::Learned).then(|| {
            let rows = config.num_train_timesteps.unwrap_or(1);
            nn::embedding(p / "time_proj", rows, c0, Default::default()).ws
        });
        let class_embedding = config
            .num_class_embeds
            .map(|n| nn::embedding(p / "class_embedding", n, temb, Default::default()));

        let mut down_blocks = Vec::with_capacity(levels);
        let mut out = c0;
        for (level, kind) in config.down_block_types.iter().enumerate() {
            let bp = p / "down_blocks" / level;
            let cin = out;
            out = config.block_out_channels[level];
            let mut layers = Layers {
                resnets: vec![],
                attentions: vec![],
            };
            for i in 0..config.layers_per_block {
                let layer_in = if i == 0 { cin } else { out };
                layers.resnets.push(ResnetBlock::new(
                    &bp / "resnets" / i,
                    config,
                    layer_in,
                    out,
                    1.0,
                ));
                if *kind == DownBlockType::AttnDownBlock2D {
                    let groups = Some(config.norm_num_groups);
                    layers.attentions.push(SelfAttention::new(
                        &bp / "attentions" / i,
                        config,
                        out,
                        groups,
                        1.0,
                    ));
                }
            }
            let padding = config.downsample_padding;
            let downsampler = (level + 1 < levels)
                .then(|| conv(&bp / "downsamplers" / 0 / "conv", out, out, 3, 2, padding));
            down_blocks.push(DownBlock {
                layers,
                downsampler,
                pad_before_downsampling: padding == 0,
            });
        }

        let mid_block = config.mid_block_type.map(|_| {
            let mp = p / "mid_block";
            let channels = config.block_out_channels[levels - 1];
            let scale = config.mid_block_scale_factor;
            MidBlock {
                first: ResnetBlock::new(&mp / "resnets" / 0, config, channels, channels, scale),
                attention: config.add_attention.then(|| {
                    SelfAttention::new(
                        &mp / "attentions" / 0,
                        config,
                        channels,
                        config.mid_attention_groups(),
                        scale,
                    )
                }),
                second: ResnetBlock::new(&mp / "resnets" / 1, config, channels, channels, scale),
            }
        });

        let reversed: Vec<i64> = config.block_out_channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut out = reversed[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let bp = p / "up_blocks" / i;
            let prev = out;
            out = reversed[i];
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let count = config.layers_per_block + 1;
            let mut layers = Layers {
                resnets: vec![],
                attentions: vec![],
            };
            for j in 0..count {
                let skip = if j == count - 1 { skip_in } else { out };
                let layer_in = if j == 0 { prev } else { out };
                layers.resnets.push(ResnetBlock::new(
                    &bp / "resnets" / j,
                    config,
                    layer_in + skip,
                    out,
                    1.0,
                ));
                if *kind == UpBlockType::AttnUpBlock2D {
                    let groups = Some(config.norm_num_groups);
                    layers.attentions.push(SelfAttention::new(
                        &bp / "attentions" / j,
                        config,
                        out,
                        groups,
                        1.0,
                    ));
                }
            }
            let upsampler =
                (i + 1 < levels).then(|| conv(&bp / "upsamplers" / 0 / "conv", out, out, 3, 1, 1));
            up_blocks.push(UpBlock { layers, upsampler });
        }

        Ok(Self {
            config: config.clone(),
            conv_in: conv(p / "conv_in", config.in_channels, c0, 3, 1, 1),
            time_table,
            time_linear_1: linear(p / "time_embedding" / "linear_1", c0, temb, true),
            time_linear_2: linear(p / "time_embedding" / "linear_2", temb, temb, true),
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(
                p / "conv_norm_out",
                config.norm_num_groups,
                c0,
                config.norm_eps,
            ),
            conv_out: conv(p / "conv_out", c0, config.out_channels, 3, 1, 1),
        })
    }

    /// The configuration the U-Net was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device of the weights.
    pub fn device(&self) -> tch::Device {
        self.conv_in.ws.device()
    }

    /// Checks the inputs of [`UNet2DModel::forward`] and returns the
    /// timesteps broadcast to `(batch,)`.
    fn check_inputs(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let size = sample.size();
        let config = &self.config;
        if size.len() != 4 || size[1] != config.in_channels {
            return Err(Error::InvalidInput(format!(
                "the U-Net expects samples (batch, {}, height, width) but got {size:?}",
                config.in_channels
            )));
        }
        let factor = config.downsampling_factor();
        if size[2] < factor || size[3] < factor || size[2] % factor != 0 || size[3] % factor != 0 {
            return Err(Error::InvalidInput(format!(
                "a {} x {} sample cannot pass through {} down-sampling levels: height and \
                 width must be positive multiples of {factor}",
                size[2],
                size[3],
                config.block_out_channels.len() - 1
            )));
        }
        if sample.kind() != Kind::Float && sample.kind() != Kind::Double {
            return Err(Error::InvalidInput(format!(
                "the U-Net expects floating-point samples, got {:?}",
                sample.kind()
            )));
        }
        let batch = size[0];
        let timesteps = match timesteps.size().as_slice() {
            [] => timesteps.expand([batch], false),
            [n] if *n == batch => timesteps.shallow_clone(),
            other => {
                return Err(Error::InvalidInput(format!(
                    "timesteps of shape {other:?} for a batch of {batch}: pass one timestep \
                     or one per sample"
                )))
            }
        };
        if self.time_table.is_some() {
            let rows = config.num_train_timesteps.unwrap_or(0);
            check_ids(&timesteps, rows, "timestep")?;
        }
        match (&self.class_embedding, class_labels) {
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "this U-Net is class-conditional: pass class labels".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::InvalidInput(
                    "class labels given to a U-Net without num_class_embeds".into(),
                ))
            }
            (Some(_), Some(labels)) => {
                if labels.size() != [batch] {
                    return Err(Error::InvalidInput(format!(
                        "class labels of shape {:?} for a batch of {batch}",
                        labels.size()
                    )));
                }
                check_ids(labels, config.num_class_embeds.unwrap_or(0), "class label")?;
            }
            (None, None) => {}
        }
        Ok(timesteps)
    }

    /// Predicts the noise (or `x_0` or `v`, as the model was trained) of
    /// `sample` `(batch, in_channels, height, width)` at `timesteps`, one
    /// per sample or one for the batch. Height and width must be multiples
    /// of 2^(levels - 1). `train` enables dropout.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with_labels(sample, timesteps, None, train)
    }

    /// [`UNet2DModel::forward`] for a class-conditional model, with class
    /// labels `(batch,)`.
    pub fn forward_with_labels(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let timesteps = self.check_inputs(sample, timesteps, class_labels)?;
        let config = &self.config;

        // 0. Centre inputs given in [0, 1].
        let sample = if config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };

        // 1. Time (and class) embedding, (batch, time_embed_dim).
        let projected = match &self.time_table {
            Some(table) => table.index_select(0, &timesteps.to_kind(Kind::Int64)),
            None => timestep_embedding(
                &timesteps,
                config.block_out_channels[0],
                config.flip_sin_to_cos,
                config.freq_shift,
            ),
        };
        let time = silu(&projected.to_kind(sample.kind()).apply(&self.time_linear_1))
            .apply(&self.time_linear_2);
        let temb = match (&self.class_embedding, class_labels) {
            (Some(table), Some(labels)) => time + labels.apply(table),
            _ => time,
        };

        // 2. Input convolution.
        let mut hidden = sample.apply(&self.conv_in);

        // 3. Down: keep every output for the skip connections.
        let mut skips = vec![hidden.shallow_clone()];
        for block in &self.down_blocks {
            for i in 0..block.layers.resnets.len() {
                hidden = block.layers.layer(i, &hidden, &temb, train)?;
                skips.push(hidden.shallow_clone());
            }
            if let Some(downsampler) = &block.downsampler {
                if block.pad_before_downsampling {
                    hidden = hidden.pad([0, 1, 0, 1], "constant", 0.0);
                }
                hidden = hidden.apply(downsampler);
                skips.push(hidden.shallow_clone());
            }
        }

        // 4. Middle.
        if let Some(mid) = &self.mid_block {
            hidden = mid.first.forward(&hidden, &temb, train);
            if let Some(attention) = &mid.attention {
                hidden = attention.forward(&hidden)?;
            }
            hidden = mid.second.forward(&hidden, &temb, train);
        }

        // 5. Up: concatenate the skips in reverse order, one per residual block.
        for block in &self.up_blocks {
            for i in 0..block.layers.resnets.len() {
                let skip = skips.pop().ok_or_else(|| {
                    Error::InvalidInput("the U-Net ran out of skip connections".into())
                })?;
                hidden = Tensor::cat(&[hidden, skip], 1);
                hidden = block.layers.layer(i, &hidden, &temb, train)?;
            }
            if let Some(upsampler) = &block.upsampler {
                let (height, width) = (hidden.size()[2], hidden.size()[3]);
                hidden = hidden
                    .upsample_nearest2d([2 * height, 2 * width], 2.0, 2.0)
                    .apply(upsampler);
            }
        }

        // 6. Output.
        Ok(silu(&hidden.apply(&self.conv_norm_out)).apply(&self.conv_out))
    }
}

/// Checks that every id in `ids` lies in `0..rows`, before an embedding
/// lookup that libtorch would abort on.
fn check_ids(ids: &Tensor, rows: i64, what: &str) -> Result<()> {
    if ids.numel() == 0 {
        return Ok(());
    }
    let (min, max) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
    if min < 0 || max >= rows {
        return Err(Error::InvalidInput(format!(
            "{what} {} is out of range: this U-Net has {rows}",
            if min < 0 { min } else { max }
        )));
    }
    Ok(())
}
