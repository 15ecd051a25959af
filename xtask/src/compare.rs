//! `cargo xtask compare`: every preset of every crate in one table, with its
//! parameter counts, KV-cache size, forward FLOPs and architecture.
//!
//! Every number comes from the closed-form counts of the crates' `Config`
//! types. Embedding parameters are the lookup tables, whose rows cost no
//! multiply-adds to read. They are the token and learned position tables,
//! the U-Net's learned time and class tables, and an untied output
//! projection to the vocabulary (the output embedding). A tied output
//! projection is the token table, counted once.
//!
//! Forward FLOPs count a multiply-add as 2. For transformers they follow
//! Kaplan et al. (2020), `2 * N + 2 * n_layer * n_ctx * d_attn` per token,
//! with `N` the non-embedding parameters and `n_ctx` the context length (the
//! window in banded layers). The U-Net and the dVAE are counted exactly,
//! layer by layer, at their native resolution.

use anyhow::{Context, Result};
use common::nn::Activation;
use serde::Serialize;
use std::process::ExitCode;

/// Arguments of `cargo xtask compare`.
#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array with one object per preset and exact integers,
    /// instead of a Markdown table with rounded numbers.
    #[arg(long)]
    json: bool,
    /// Keep only the presets whose crate or preset name contains TEXT,
    /// ignoring case.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

/// Bytes per element of an f32 KV cache.
const F32_BYTES: i64 = 4;
/// Bytes per element of a bf16 or f16 KV cache.
const HALF_BYTES: i64 = 2;

/// One preset's row. The field names are the keys of `--json`.
#[derive(Clone, Debug, Serialize)]
struct Row {
    #[serde(rename = "crate")]
    crate_name: &'static str,
    preset: String,
    total_parameters: i64,
    embedding_parameters: i64,
    non_embedding_parameters: i64,
    /// KV-cache bytes per token in f32, or `None` for encoders, the dVAE and
    /// U-Nets, which keep no KV cache.
    kv_cache_bytes_per_token_f32: Option<i64>,
    kv_cache_bytes_per_token_bf16: Option<i64>,
    kv_cache_bytes_per_token_f16: Option<i64>,
    forward_flops: i64,
    /// The unit of `forward_flops`: a token, or an image and a text.
    flops_per: String,
    /// The context in tokens (the text encoder's for CLIP), or `None` for the
    /// U-Net and the dVAE.
    context_length: Option<i64>,
    attention: String,
    norm: String,
    activation: String,
    position_encoding: String,
}

impl Row {
    /// Returns the f32, bf16 and f16 KV-cache columns of a decoder whose cache
    /// stores `bytes(bytes_per_element)` bytes per token.
    fn kv_columns(bytes: impl Fn(i64) -> i64) -> [Option<i64>; 3] {
        [
            Some(bytes(F32_BYTES)),
            Some(bytes(HALF_BYTES)),
            Some(bytes(HALF_BYTES)),
        ]
    }

    /// Returns `crate/preset`, the name listed when a filter matches nothing.
    fn name(&self) -> String {
        format!("{}/{}", self.crate_name, self.preset)
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let rows = filter_rows(all_rows()?, args.filter.as_deref())?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&rows).context("serialising the rows")?;
        json.push('\n');
        json
    } else {
        markdown(&rows)
    };
    crate::write_output(&mut std::io::stdout().lock(), &text)?;
    Ok(ExitCode::SUCCESS)
}

/// Keeps the rows whose crate or preset name contains `filter`, ignoring
/// case. A filter that keeps nothing is an error listing every name.
fn filter_rows(rows: Vec<Row>, filter: Option<&str>) -> Result<Vec<Row>> {
    let Some(filter) = filter else {
        return Ok(rows);
    };
    let needle = filter.to_lowercase();
    let names: Vec<String> = rows.iter().map(Row::name).collect();
    let kept: Vec<Row> = rows
        .into_iter()
        .filter(|row| {
            row.crate_name.to_lowercase().contains(&needle)
                || row.preset.to_lowercase().contains(&needle)
        })
        .collect();
    anyhow::ensure!(
        !kept.is_empty(),
        "--filter {filter:?} matches no crate or preset name: use part of a crate \
         or preset name among (crate/preset) {}",
        names.join(", ")
    );
    Ok(kept)
}

/// Returns a row for every preset of every crate.
fn all_rows() -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = gpt::Config::presets()
        .iter()
        .map(|(name, config)| gpt_row(name, config))
        .collect();
    rows.extend(
        llama::Config::presets()
            .iter()
            .map(|(name, config)| llama_row(name, config)),
    );
    for name in clip::Config::PRESETS {
        rows.push(clip_row(name, &clip::Config::preset(name)?));
    }
    for name in dvae::Config::PRESETS {
        rows.push(dvae_row(name, &dvae::Config::preset(name)?));
    }
    for name in diffusion::Config::PRESETS {
        rows.push(unet_row(name, &diffusion::Config::preset(name)?)?);
    }
    Ok(rows)
}

fn gpt_row(name: &str, config: &gpt::Config) -> Row {
    use gpt::AttentionKind::{Banded, Dense};
    let banded = config.attention_layers.contains(&Banded);
    let alternating = config
        .attention_layers
        .iter()
        .enumerate()
        .all(|(i, kind)| *kind == if i % 2 == 0 { Dense } else { Banded });
    let pattern = match (banded, alternating) {
        (false, _) => "dense causal".to_string(),
        (true, true) => format!(
            "alternating dense and banded (window {})",
            config.window_size
        ),
        (true, false) => format!("dense and banded (window {})", config.window_size),
    };
    let placement = if config.layout.post_norm() {
        "post-norm"
    } else {
        "pre-norm"
    };
    let [f32, bf16, f16] = Row::kv_columns(|bytes| config.kv_cache_bytes_per_token(bytes));
    Row {
        crate_name: "gpt",
        preset: name.to_string(),
        total_parameters: config.num_parameters(),
        embedding_parameters: config.embedding_parameters(),
        non_embedding_parameters: config.non_embedding_parameters(),
        kv_cache_bytes_per_token_f32: f32,
        kv_cache_bytes_per_token_bf16: bf16,
        kv_cache_bytes_per_token_f16: f16,
        forward_flops: config.forward_flops_per_token(),
        flops_per: "token".into(),
        context_length: Some(config.context_length),
        attention: format!("multi-head, {pattern}"),
        norm: format!("LayerNorm, {placement}"),
        activation: activation_name(config.activation).into(),
        position_encoding: "learned absolute".into(),
    }
}

fn llama_row(name: &str, config: &llama::Config) -> Row {
    let heads = match config.num_kv_heads {
        kv if kv == config.num_heads => "multi-head".to_string(),
        1 => "multi-query".to_string(),
        kv => format!("grouped-query ({kv} KV heads)"),
    };
    let [f32, bf16, f16] = Row::kv_columns(|bytes| config.kv_cache_bytes_per_token(bytes));
    Row {
        crate_name: "llama",
        preset: name.to_string(),
        total_parameters: config.num_parameters(),
        embedding_parameters: config.embedding_parameters(),
        non_embedding_parameters: config.non_embedding_parameters(),
        kv_cache_bytes_per_token_f32: f32,
        kv_cache_bytes_per_token_bf16: bf16,
        kv_cache_bytes_per_token_f16: f16,
        forward_flops: config.forward_flops_per_token(),
        flops_per: "token".into(),
        context_length: Some(config.max_position_embeddings),
        attention: format!("{heads}, dense causal"),
        norm: "RMSNorm, pre-norm".into(),
        activation: "SwiGLU".into(),
        position_encoding: "rotary".into(),
    }
}

fn clip_row(name: &str, config: &clip::Config) -> Row {
    let (text, vision) = (&config.text_config, &config.vision_config);
    let activation = match (config.text_activation(), config.vision_activation()) {
        (Ok(t), Ok(v)) if t == v => activation_name(t).to_string(),
        (Ok(t), Ok(v)) => format!("text {}, image {}", activation_name(t), activation_name(v)),
        _ => format!("text {}, image {}", text.hidden_act, vision.hidden_act),
    };
    let side = vision.image_size;
    Row {
        crate_name: "clip",
        preset: name.to_string(),
        total_parameters: config.num_parameters(),
        embedding_parameters: config.embedding_parameters(),
        non_embedding_parameters: config.non_embedding_parameters(),
        kv_cache_bytes_per_token_f32: None,
        kv_cache_bytes_per_token_bf16: None,
        kv_cache_bytes_per_token_f16: None,
        forward_flops: config
            .text_forward_flops()
            .saturating_add(config.vision_forward_flops()),
        flops_per: format!(
            "{side}x{side} image + {}-token text",
            text.max_position_embeddings
        ),
        context_length: Some(text.max_position_embeddings),
        attention: "multi-head; causal text, bidirectional image".into(),
        norm: "LayerNorm, pre-norm".into(),
        activation,
        position_encoding: "learned absolute".into(),
    }
}

fn dvae_row(name: &str, config: &dvae::Config) -> Row {
    let total = i64::try_from(config.num_parameters()).unwrap_or(i64::MAX);
    let side = config.image_size;
    Row {
        crate_name: "dvae",
        preset: name.to_string(),
        total_parameters: total,
        // The dVAE has no lookup tables: the decoder reads code
        // distributions through a 1 x 1 convolution.
        embedding_parameters: 0,
        non_embedding_parameters: total,
        kv_cache_bytes_per_token_f32: None,
        kv_cache_bytes_per_token_bf16: None,
        kv_cache_bytes_per_token_f16: None,
        forward_flops: i64::try_from(config.forward_flops()).unwrap_or(i64::MAX),
        flops_per: format!("{side}x{side} image, encoded and decoded"),
        context_length: None,
        attention: "none".into(),
        norm: "none".into(),
        activation: "ReLU".into(),
        position_encoding: "none".into(),
    }
}

fn unet_row(name: &str, config: &diffusion::Config) -> Result<Row> {
    use diffusion::TimeEmbedding;
    let flops = config
        .sample_forward_flops()
        .with_context(|| format!("counting the FLOPs of the U-Net preset {name}"))?;
    let (height, width) = config
        .sample_size
        .map(|size| size.height_width())
        .unwrap_or_default();
    let position_encoding = match config.time_embedding_type {
        TimeEmbedding::Positional => "sinusoidal time embedding",
        TimeEmbedding::Learned => "learned time embedding",
        TimeEmbedding::Fourier => "Fourier time features",
    };
    Ok(Row {
        crate_name: "diffusion",
        preset: name.to_string(),
        total_parameters: config.num_parameters(),
        embedding_parameters: config.embedding_parameters(),
        non_embedding_parameters: config.non_embedding_parameters(),
        kv_cache_bytes_per_token_f32: None,
        kv_cache_bytes_per_token_bf16: None,
        kv_cache_bytes_per_token_f16: None,
        forward_flops: flops,
        flops_per: format!("{height}x{width} image, one denoising step"),
        context_length: None,
        attention: unet_attention(config, height, width),
        norm: format!("GroupNorm ({} groups), pre-norm", config.norm_num_groups),
        activation: "SiLU".into(),
        position_encoding: position_encoding.into(),
    })
}

/// Describes where a U-Net has self-attention: the resolutions of the levels
/// and of the mid block, for samples of `height x width`, and the heads.
fn unet_attention(config: &diffusion::Config, height: i64, width: i64) -> String {
    use diffusion::{DownBlockType, UpBlockType};
    let levels = config.block_out_channels.len();
    let mut attention_levels: Vec<usize> = (0..levels)
        .filter(|&level| {
            config.down_block_types[level] == DownBlockType::AttnDownBlock2D
                || config.up_block_types[levels - 1 - level] == UpBlockType::AttnUpBlock2D
        })
        .collect();
    if config.mid_block_type.is_some() && config.add_attention {
        attention_levels.push(levels - 1);
    }
    attention_levels.dedup();
    if attention_levels.is_empty() {
        return "none".into();
    }

    let sides: Vec<String> = attention_levels
        .iter()
        .map(|level| format!("{}x{}", height >> level, width >> level))
        .collect();
    let heads = match config.attention_head_dim {
        None => "1 head".to_string(),
        Some(dim) => format!("heads of {dim}"),
    };
    format!("self-attention at {} ({heads})", sides.join(" and "))
}

fn activation_name(activation: Activation) -> &'static str {
    match activation {
        Activation::Gelu => "GELU",
        Activation::GeluTanh => "GELU (tanh)",
        Activation::QuickGelu => "QuickGELU",
        Activation::Relu => "ReLU",
        Activation::Silu => "SiLU",
    }
}

/// Formats `value` with 4 significant digits and the largest of `units`
/// (a divisor and its suffix, largest first) that fits.
fn short(value: i64, units: &[(f64, &str)]) -> String {
    let value = value as f64;
    let Some((divisor, suffix)) = units.iter().find(|(divisor, _)| value >= *divisor) else {
        return format!("{value}");
    };
    let scaled = value / divisor;
    let decimals = match scaled {
        x if x >= 100.0 => 1,
        x if x >= 10.0 => 2,
        _ => 3,
    };
    format!("{scaled:.decimals$}{suffix}")
}

fn count(value: i64) -> String {
    short(value, &[(1e9, "B"), (1e6, "M"), (1e3, "K")])
}

fn flops(value: i64) -> String {
    short(value, &[(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")])
}

/// Formats a byte count in KiB, with one decimal where it is not whole.
fn kib(bytes: Option<i64>) -> String {
    match bytes {
        None => "-".into(),
        Some(bytes) if bytes % 1024 == 0 => format!("{} KiB", bytes / 1024),
        Some(bytes) => format!("{:.1} KiB", bytes as f64 / 1024.0),
    }
}

/// Renders the rows as a Markdown table with padded columns, numbers
/// right-aligned.
fn markdown(rows: &[Row]) -> String {
    let header = [
        "Crate",
        "Preset",
        "Parameters",
        "Embedding",
        "Non-embedding",
        "KV/token f32",
        "KV/token bf16",
        "KV/token f16",
        "Forward FLOPs",
        "FLOPs per",
        "Context",
        "Attention",
        "Norm",
        "Activation",
        "Position encoding",
    ];
    let right_aligned = [2, 3, 4, 5, 6, 7, 8, 10];
    let cells: Vec<[String; 15]> = rows
        .iter()
        .map(|row| {
            [
                row.crate_name.to_string(),
                row.preset.clone(),
                count(row.total_parameters),
                count(row.embedding_parameters),
                count(row.non_embedding_parameters),
                kib(row.kv_cache_bytes_per_token_f32),
                kib(row.kv_cache_bytes_per_token_bf16),
                kib(row.kv_cache_bytes_per_token_f16),
                flops(row.forward_flops),
                row.flops_per.clone(),
                row.context_length.map_or("-".into(), |c| c.to_string()),
                row.attention.clone(),
                row.norm.clone(),
                row.activation.clone(),
                row.position_encoding.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            cells
                .iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |values: Vec<String>| format!("| {} |\n", values.join(" | "));
    let pad = |column: usize, text: &str| {
        let width = widths[column];
        if right_aligned.contains(&column) {
            format!("{text:>width$}")
        } else {
            format!("{text:<width$}")
        }
    };
    let mut out = line((0..header.len()).map(|c| pad(c, header[c])).collect());
    out += &line(
        (0..header.len())
            .map(|c| {
                let dashes = "-".repeat(widths[c] - 1);
                if right_aligned.contains(&c) {
                    format!("{dashes}:")
                } else {
                    format!("{dashes}-")
                }
            })
            .collect(),
    );
    for row in &cells {
        out += &line((0..header.len()).map(|c| pad(c, &row[c])).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keeps_four_digits() {
        assert_eq!(count(124_439_808), "124.4M");
        assert_eq!(count(12_198_084_352), "12.20B");
        assert_eq!(count(1_557_611_200), "1.558B");
        assert_eq!(count(512), "512");
        assert_eq!(count(0), "0");
        assert_eq!(flops(188_986_368), "189.0M");
    }

    #[test]
    fn kib_marks_missing_and_fractional_sizes() {
        assert_eq!(kib(None), "-");
        assert_eq!(kib(Some(73_728)), "72 KiB");
        assert_eq!(kib(Some(23_040)), "22.5 KiB");
    }
}
