//! The closed-form counts behind `cargo xtask compare`: parameter splits,
//! KV-cache sizes and forward FLOPs against the variables of small built
//! models and against published sizes, then the command itself.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use support::{assert_error, assert_success, xtask};
use tch::nn::VarStore;
use tch::Device;

/// Returns every variable of `vs` with its shape.
fn variables(vs: &VarStore) -> BTreeMap<String, Vec<i64>> {
    vs.variables()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.size()))
        .collect()
}

fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

/// Sums the sizes of the variables for which `keep` holds.
fn count_where(vars: &BTreeMap<String, Vec<i64>>, keep: impl Fn(&str) -> bool) -> i64 {
    vars.iter()
        .filter(|(name, _)| keep(name))
        .map(|(_, shape)| numel(shape))
        .sum()
}

/// True when a dot-separated component of `name` is one of `parts`.
fn has_component(name: &str, parts: &[&str]) -> bool {
    name.split('.').any(|part| parts.contains(&part))
}

fn assert_within(name: &str, count: i64, published: f64, tolerance: f64) {
    let ratio = count as f64 / published;
    assert!(
        (ratio - 1.0).abs() < tolerance,
        "{name}: {count} parameters, published {published:e} (ratio {ratio:.4})"
    );
}

// Parameter splits against built models.

fn tiny_gpt(layout: gpt::Layout) -> gpt::Config {
    let mut config = gpt::Config::gpt3_125m();
    config.layout = layout;
    config.vocab_size = 50;
    config.context_length = 16;
    config.hidden_size = 24;
    config.num_heads = 3;
    config.head_dim = 8;
    config.intermediate_size = 96;
    config.num_layers = 4;
    config.attention_layers = config.attention_layers[..4].to_vec();
    config.window_size = 4;
    config.scale_attention = layout != gpt::Layout::GptNeo;
    if layout == gpt::Layout::OpenAiGpt {
        config.attention_layers = vec![gpt::AttentionKind::Dense; 4];
    }
    config
}

#[test]
fn gpt_split_equals_built_model() {
    let tables = ["wte", "wpe", "tokens_embed", "positions_embed"];
    for layout in [
        gpt::Layout::OpenAiGpt,
        gpt::Layout::Gpt2,
        gpt::Layout::GptNeo,
    ] {
        let config = tiny_gpt(layout);
        let vs = VarStore::new(Device::Cpu);
        gpt::Gpt::new(&vs.root(), &config).unwrap();
        let vars = variables(&vs);
        let embedding = count_where(&vars, |name| has_component(name, &tables));
        let rest = count_where(&vars, |name| !has_component(name, &tables));
        assert_eq!(config.embedding_parameters(), embedding, "{layout:?}");
        assert_eq!(config.non_embedding_parameters(), rest, "{layout:?}");
        assert_eq!(
            config.num_parameters(),
            embedding + rest,
            "{layout:?}: {vars:?}"
        );

        // Kaplan's count with the built model's non-embedding parameters:
        // layers 0 and 2 are dense (16 keys), 1 and 3 banded (window 4) in
        // the GPT-2 and GPT-Neo layouts.
        let keys_read = if layout == gpt::Layout::OpenAiGpt {
            4 * 16
        } else {
            2 * 16 + 2 * 4
        };
        let d_attn = 3 * 8;
        assert_eq!(
            config.forward_flops_per_token(),
            2 * rest + 2 * keys_read * d_attn,
            "{layout:?}"
        );
        assert_eq!(config.kv_cache_bytes_per_token(4), 2 * 4 * 3 * 8 * 4);
    }
}

fn tiny_llama(tied: bool, kv_heads: i64) -> llama::Config {
    let mut config = llama::Config::smollm2_135m();
    config.hidden_size = 48;
    config.head_dim = 16;
    config.num_heads = 3;
    config.num_kv_heads = kv_heads;
    config.intermediate_size = 40;
    config.num_layers = 3;
    config.vocab_size = 100;
    config.max_position_embeddings = 32;
    config.tie_word_embeddings = tied;
    config
}

#[test]
fn llama_split_equals_built_model() {
    let tables = ["embed_tokens", "lm_head"];
    for (tied, kv_heads) in [(false, 3), (true, 1), (false, 1)] {
        let config = tiny_llama(tied, kv_heads);
        let vs = VarStore::new(Device::Cpu);
        llama::Llama::new(&vs.root(), &config).unwrap();
        let vars = variables(&vs);
        let embedding = count_where(&vars, |name| has_component(name, &tables));
        let rest = count_where(&vars, |name| !has_component(name, &tables));
        let case = format!("tied {tied}, {kv_heads} KV heads");
        assert_eq!(config.embedding_parameters(), embedding, "{case}");
        assert_eq!(config.non_embedding_parameters(), rest, "{case}");
        assert_eq!(config.num_parameters(), embedding + rest, "{case}");
        let expected_embedding = if tied { 100 * 48 } else { 2 * 100 * 48 };
        assert_eq!(embedding, expected_embedding, "{case}");

        let d_attn = 3 * 16;
        assert_eq!(
            config.forward_flops_per_token(),
            2 * rest + 2 * 3 * 32 * d_attn,
            "{case}"
        );
        assert_eq!(
            config.kv_cache_bytes_per_token(2),
            2 * 3 * kv_heads * 16 * 2,
            "{case}"
        );
    }
}

/// Returns a CLIP small enough to build in milliseconds, whose text and
/// image encoders differ in width and depth.
fn tiny_clip() -> clip::Config {
    let mut config = clip::Config::mnist();
    config.text_config.vocab_size = 300;
    config.text_config.eos_token_id = 299;
    config.text_config.hidden_size = 32;
    config.text_config.intermediate_size = 64;
    config.text_config.num_attention_heads = 2;
    config.text_config.max_position_embeddings = 12;
    config.vision_config.hidden_size = 48;
    config.vision_config.intermediate_size = 80;
    config.vision_config.num_hidden_layers = 2;
    config.vision_config.image_size = 30;
    config.vision_config.patch_size = 10;
    config.projection_dim = 24;
    config
}

#[test]
fn clip_split_and_flops_equal_built_model() {
    for config in [tiny_clip(), clip::Config::mnist()] {
        let model = clip::Clip::new(config.clone(), Device::Cpu).unwrap();
        let vars = variables(model.var_store());
        let tables = ["token_embedding", "position_embedding"];
        let embedding = count_where(&vars, |name| has_component(name, &tables));
        let rest = count_where(&vars, |name| !has_component(name, &tables));
        assert_eq!(config.embedding_parameters(), embedding, "{vars:?}");
        assert_eq!(config.non_embedding_parameters(), rest);

        // Text: every token passes through the layers and the final
        // LayerNorm, and the projection runs once.
        let (t, v) = (&config.text_config, &config.vision_config);
        let text_per_token = count_where(&vars, |name| {
            name.starts_with("text_model.encoder.")
                || name.starts_with("text_model.final_layer_norm.")
        });
        let text_once = count_where(&vars, |name| name.starts_with("text_projection."));
        let tokens = t.max_position_embeddings;
        let text_attention = 2 * t.num_hidden_layers * tokens * t.hidden_size;
        assert_eq!(
            config.text_forward_flops(),
            tokens * (2 * text_per_token + text_attention) + 2 * text_once
        );

        // Image: the patch convolution per patch, the layers and the first
        // LayerNorm per token, the last LayerNorm and the projection once.
        let patches = config.grid_size() * config.grid_size();
        let tokens = patches + 1;
        let patch = count_where(&vars, |name| name.contains("patch_embedding"));
        let image_per_token = count_where(&vars, |name| {
            name.starts_with("vision_model.encoder.")
                || name.starts_with("vision_model.pre_layrnorm.")
        });
        let image_once = count_where(&vars, |name| {
            name.starts_with("vision_model.post_layernorm.")
                || name.starts_with("visual_projection.")
        });
        let image_attention = 2 * v.num_hidden_layers * tokens * v.hidden_size;
        assert_eq!(
            config.vision_forward_flops(),
            2 * patch * patches + tokens * (2 * image_per_token + image_attention) + 2 * image_once
        );
    }
}

fn tiny_unet(learned_time: bool) -> diffusion::Config {
    use diffusion::{DownBlockType::*, TimeEmbedding, UpBlockType::*};
    let mut config = diffusion::Config {
        block_out_channels: vec![8, 16, 16],
        down_block_types: vec![DownBlock2D, AttnDownBlock2D, DownBlock2D],
        up_block_types: vec![UpBlock2D, AttnUpBlock2D, UpBlock2D],
        layers_per_block: 1,
        norm_num_groups: 4,
        attention_head_dim: Some(4),
        downsample_padding: 0,
        ..diffusion::Config::default()
    };
    if learned_time {
        config.time_embedding_type = TimeEmbedding::Learned;
        config.num_train_timesteps = Some(50);
        config.num_class_embeds = Some(10);
        config.resnet_time_scale_shift = diffusion::TimeScaleShift::ScaleShift;
        config.attention_head_dim = None;
        config.down_block_types = vec![AttnDownBlock2D, DownBlock2D, DownBlock2D];
    }
    config
}

#[test]
fn unet_split_equals_built_model() {
    for learned_time in [false, true] {
        let config = tiny_unet(learned_time);
        let vs = VarStore::new(Device::Cpu);
        diffusion::UNet2DModel::new(&vs.root(), &config).unwrap();
        let vars = variables(&vs);
        let tables = ["time_proj", "class_embedding"];
        let embedding = count_where(&vars, |name| has_component(name, &tables));
        let rest = count_where(&vars, |name| !has_component(name, &tables));
        assert_eq!(config.embedding_parameters(), embedding, "{vars:?}");
        assert_eq!(config.non_embedding_parameters(), rest);
        let expected = if learned_time { 50 * 8 + 10 * 32 } else { 0 };
        assert_eq!(embedding, expected);
    }
}

// FLOPs of the convolutional models against their built variables.

/// Counts a U-Net's forward multiply-adds from its variables' names and
/// shapes: the level in each name gives the resolution of its layer.
fn unet_multiply_adds_from_variables(
    vars: &BTreeMap<String, Vec<i64>>,
    levels: usize,
    side: i64,
) -> i64 {
    let pixels_at = |level: usize| (side >> level) * (side >> level);
    let mut total = 0;
    for (name, shape) in vars {
        let parts: Vec<&str> = name.split('.').collect();
        if shape.len() < 2 || has_component(name, &["time_proj", "class_embedding"]) {
            continue; // biases, norms and lookup tables
        }
        let per_sample = parts[0] == "time_embedding" || name.contains("time_emb_proj");
        let level = match parts[0] {
            "down_blocks" => {
                let level: usize = parts[1].parse().unwrap();
                level + usize::from(parts[2] == "downsamplers")
            }
            "up_blocks" => {
                let level = levels - 1 - parts[1].parse::<usize>().unwrap();
                level - usize::from(parts[2] == "upsamplers")
            }
            "mid_block" => levels - 1,
            _ => 0,
        };
        let pixels = if per_sample { 1 } else { pixels_at(level) };
        total += numel(shape) * pixels;
        if name.ends_with("to_q.weight") {
            // Q K^T and the weighted sum of V over every pair of pixels.
            total += 2 * pixels * pixels * shape[0];
        }
    }
    total
}

#[test]
fn unet_flops_equal_variable_walk() {
    let mut cases = vec![
        (tiny_unet(false), 16),
        (tiny_unet(true), 8),
        (diffusion::Config::mnist(), 32),
    ];
    let mut no_mid = tiny_unet(false);
    no_mid.mid_block_type = None;
    cases.push((no_mid, 16));
    for (config, side) in cases {
        let vs = VarStore::new(Device::Cpu);
        diffusion::UNet2DModel::new(&vs.root(), &config).unwrap();
        let levels = config.block_out_channels.len();
        let expected = 2 * unet_multiply_adds_from_variables(&variables(&vs), levels, side);
        assert_eq!(
            config.forward_flops(side, side).unwrap(),
            expected,
            "{config:?}"
        );
    }
    let cifar = diffusion::Config::ddpm_cifar10_32();
    assert_eq!(
        cifar.sample_forward_flops().unwrap(),
        cifar.forward_flops(32, 32).unwrap()
    );
}

#[test]
fn unet_flops_reject_bad_sizes() {
    let config = diffusion::Config::ddpm_cifar10_32();
    let err = config.forward_flops(30, 32).unwrap_err().to_string();
    assert!(err.contains("height 30"), "{err}");
    assert!(err.contains("factor 8"), "{err}");
    let err = config.forward_flops(32, 0).unwrap_err().to_string();
    assert!(err.contains("width 0"), "{err}");
    let mut unsized_config = config.clone();
    unsized_config.sample_size = None;
    let err = unsized_config
        .sample_forward_flops()
        .unwrap_err()
        .to_string();
    assert!(err.contains("sample_size"), "{err}");
    let mut invalid = config;
    invalid.block_out_channels.clear();
    assert!(invalid.forward_flops(32, 32).is_err());
}

/// Counts a dVAE stack's multiply-adds from its variables: `blocks.input`
/// runs at `input_side`, group `g` at `group_side(g)` and the output
/// convolution at `output_side`.
fn dvae_multiply_adds_from_variables(
    vars: &BTreeMap<String, Vec<i64>>,
    input_side: i64,
    group_side: impl Fn(i64) -> i64,
    output_side: i64,
) -> u64 {
    let mut total = 0;
    for (name, shape) in vars {
        if shape.len() != 4 {
            continue; // biases
        }
        let side = if name.starts_with("blocks.input.") {
            input_side
        } else if name.starts_with("blocks.output.") {
            output_side
        } else {
            let group = name.split('.').nth(1).unwrap();
            group_side(group.strip_prefix("group_").unwrap().parse().unwrap())
        };
        total += (numel(shape) * side * side) as u64;
    }
    total
}

#[test]
fn dvae_flops_equal_variable_walk() {
    let mut small = dvae::Config::mnist();
    small.n_blk_per_group = 2;
    small.image_size = 32;
    for config in [dvae::Config::mnist(), small] {
        let side = config.image_size;
        let grid = side / config.downsample_factor();

        let vs = VarStore::new(Device::Cpu);
        dvae::Encoder::new(&vs.root(), &config).unwrap();
        let encoder =
            dvae_multiply_adds_from_variables(&variables(&vs), side, |g| side >> (g - 1), grid);
        assert_eq!(config.encoder_flops(), 2 * encoder, "{config:?}");

        let vs = VarStore::new(Device::Cpu);
        dvae::Decoder::new(&vs.root(), &config).unwrap();
        let decoder =
            dvae_multiply_adds_from_variables(&variables(&vs), grid, |g| grid << (g - 1), side);
        assert_eq!(config.decoder_flops(), 2 * decoder, "{config:?}");
        assert_eq!(config.forward_flops(), 2 * (encoder + decoder));
    }
}

// Published sizes.

// GPT-1, GPT-2 and GPT-3 against their published sizes and transformers'
// counts: gpt/tests/presets.rs.

#[test]
fn dall_e_has_twelve_billion_parameters() {
    let config = gpt::Config::preset("dall-e-12b").unwrap();
    assert_eq!(config.num_layers, 64);
    assert_eq!(config.num_heads, 62);
    assert_eq!(config.head_dim, 64);
    assert_eq!(config.hidden_size, 3968);
    assert_eq!(config.context_length, 256 + 1024);
    assert_eq!(config.vocab_size, 16384 + 256 + 8192);
    // 64 layers of width 3968 hold 12.10B parameters, within 1% of the
    // "12 billion" of Ramesh et al. (2021). The 24,832 x 3968 vocabulary and 1280 x 3968
    // position tables add 0.10B, so the total of 12.20B is held to 2%.
    assert_within(
        "dall-e-12b non-embedding",
        config.non_embedding_parameters(),
        12e9,
        0.01,
    );
    assert_within("dall-e-12b", config.num_parameters(), 12e9, 0.02);
    assert_eq!(
        config.embedding_parameters(),
        (16384 + 256 + 8192 + 1280) * 3968
    );
}

#[test]
fn llama_presets_match_published_sizes() {
    // Llama 1: Touvron et al. (2023), table 2. Llama 2: the released
    // checkpoints hold 6.74B, 13.02B and 68.98B parameters.
    let published = [
        ("llama1-7b", 6.7e9),
        ("llama1-13b", 13.0e9),
        ("llama1-33b", 32.5e9),
        ("llama1-65b", 65.2e9),
        ("llama2-7b", 6.74e9),
        ("llama2-13b", 13.02e9),
        ("llama2-70b", 68.98e9),
    ];
    let presets: BTreeMap<&str, llama::Config> = llama::Config::presets().into_iter().collect();
    for (name, count) in published {
        assert_within(name, presets[name].num_parameters(), count, 0.01);
    }
}

#[test]
fn clip_unet_dvae_match_published_sizes() {
    // transformers' CLIPModel counts for openai/clip-vit-*.
    let clip = [
        ("vit-b-32", 151_277_313),
        ("vit-b-16", 149_620_737),
        ("vit-l-14", 427_616_513),
    ];
    for (name, count) in clip {
        let config = clip::Config::preset(name).unwrap();
        assert_eq!(config.num_parameters(), count, "{name}");
        assert_eq!(
            config.embedding_parameters() + config.non_embedding_parameters(),
            count,
            "{name}"
        );
    }
    // Ho et al. (2020): 35.7M for the CIFAR-10 model; diffusers counts
    // 35,746,307 for google/ddpm-cifar10-32.
    let unet = diffusion::Config::ddpm_cifar10_32();
    assert_within("ddpm-cifar10-32", unet.num_parameters(), 35.7e6, 0.01);
    assert_eq!(unet.num_parameters(), 35_746_307);
    assert_eq!(unet.embedding_parameters(), 0);
    // OpenAI's `dall_e` 0.1: Encoder() and Decoder() hold 53,786,240 and
    // 43,829,766 parameters.
    let dvae = dvae::Config::openai();
    assert_eq!(dvae.num_parameters(), 53_786_240 + 43_829_766);
}

#[test]
fn kv_cache_and_flops_of_known_presets() {
    let gpt2 = gpt::Config::gpt2_124m();
    // Kaplan et al.'s 85M non-embedding parameters of GPT-2 small.
    assert_eq!(gpt2.non_embedding_parameters(), 85_056_000);
    assert_eq!(gpt2.embedding_parameters(), (50257 + 1024) * 768);
    // 2 * 85,056,000 + 2 * 12 * 1024 * 768.
    assert_eq!(gpt2.forward_flops_per_token(), 188_986_368);
    assert_eq!(gpt2.kv_cache_bytes_per_token(4), 73_728);
    // GPT-3 Small: 6 dense layers read 2048 keys, 6 banded ones 256.
    assert_eq!(
        gpt::Config::gpt3_125m().forward_flops_per_token(),
        2 * 85_056_000 + 2 * (6 * 2048 + 6 * 256) * 768
    );
    assert_eq!(
        gpt::Config::preset("dall-e-12b")
            .unwrap()
            .kv_cache_bytes_per_token(4),
        2 * 64 * 62 * 64 * 4
    );

    let llama2_7b = llama::Config::llama2_7b();
    assert_eq!(llama2_7b.embedding_parameters(), 2 * 32_000 * 4096);
    assert_eq!(llama2_7b.kv_cache_bytes_per_token(2), 512 * 1024);
    // 2 * 6,476,271,616 + 2 * 32 * 4096 * 4096.
    assert_eq!(llama2_7b.forward_flops_per_token(), 14_026_285_056);
    // Grouped-query attention over 8 KV heads: 320 KiB per token in bf16.
    assert_eq!(
        llama::Config::llama2_70b().kv_cache_bytes_per_token(2),
        320 * 1024
    );
    let smollm2 = llama::Config::smollm2_135m();
    assert_eq!(smollm2.embedding_parameters(), 49_152 * 576);
    assert_eq!(smollm2.kv_cache_bytes_per_token(2), 2 * 30 * 3 * 64 * 2);

    // The image encoder of ViT-B/32 costs about 4.4 G multiply-adds.
    let vit = clip::Config::vit_b_32().vision_forward_flops() as f64;
    assert!((8.7e9..8.9e9).contains(&vit), "{vit:e}");
}

// The command line.

/// Returns the `(crate, preset)` pair of every preset, from the crates' lists.
fn every_preset() -> BTreeSet<(String, String)> {
    let mut names = BTreeSet::new();
    for (name, _) in gpt::Config::presets() {
        names.insert(("gpt".to_string(), name.to_string()));
    }
    for (name, _) in llama::Config::presets() {
        names.insert(("llama".to_string(), name.to_string()));
    }
    for name in clip::Config::PRESETS {
        names.insert(("clip".to_string(), name.to_string()));
    }
    for name in dvae::Config::PRESETS {
        names.insert(("dvae".to_string(), name.to_string()));
    }
    for name in diffusion::Config::PRESETS {
        names.insert(("diffusion".to_string(), name.to_string()));
    }
    names
}

fn compare_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["compare", "--json"];
    all.extend(args);
    let output = xtask(all);
    assert_success(&output);
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn table_lists_every_preset() {
    let output = xtask(["compare"]);
    assert_success(&output);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("| Crate"), "{stdout}");
    assert!(lines[1].starts_with("| ---"), "{stdout}");
    let rows: BTreeSet<(String, String)> = lines[2..]
        .iter()
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect();
    assert_eq!(rows, every_preset());
    assert_eq!(lines.len() - 2, every_preset().len());
}

#[test]
fn json_has_every_key() {
    let keys = [
        "crate",
        "preset",
        "total_parameters",
        "embedding_parameters",
        "non_embedding_parameters",
        "kv_cache_bytes_per_token_f32",
        "kv_cache_bytes_per_token_bf16",
        "kv_cache_bytes_per_token_f16",
        "forward_flops",
        "flops_per",
        "context_length",
        "attention",
        "norm",
        "activation",
        "position_encoding",
    ];
    let rows = compare_json(&[]);
    assert_eq!(rows.len(), every_preset().len());

    for row in &rows {
        let object = row.as_object().unwrap();
        let mut found: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = keys.to_vec();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "{row}");

        let total = row["total_parameters"].as_i64().unwrap();
        let embedding = row["embedding_parameters"].as_i64().unwrap();
        let rest = row["non_embedding_parameters"].as_i64().unwrap();
        assert_eq!(embedding + rest, total, "{row}");
        assert!(row["forward_flops"].as_i64().unwrap() > 0, "{row}");
        let decoder = matches!(row["crate"].as_str(), Some("gpt" | "llama"));
        assert_eq!(
            row["kv_cache_bytes_per_token_f32"].is_i64(),
            decoder,
            "{row}"
        );
    }

    let gpt2 = rows
        .iter()
        .find(|row| row["preset"] == "gpt2-124m")
        .unwrap();
    assert_eq!(gpt2["total_parameters"], 124_439_808);
    assert_eq!(gpt2["kv_cache_bytes_per_token_f32"], 73_728);
    assert_eq!(gpt2["kv_cache_bytes_per_token_bf16"], 36_864);
    assert_eq!(gpt2["forward_flops"], 188_986_368);
    assert_eq!(gpt2["context_length"], 1024);
    assert_eq!(gpt2["norm"], "LayerNorm, pre-norm");

    let unet = rows
        .iter()
        .find(|row| row["preset"] == "ddpm-cifar10-32")
        .unwrap();
    assert!(unet["context_length"].is_null());
    assert_eq!(unet["position_encoding"], "sinusoidal time embedding");
}

#[test]
fn filter_selects_crate_or_preset() {
    let names = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|row| {
                format!(
                    "{}/{}",
                    row["crate"].as_str().unwrap(),
                    row["preset"].as_str().unwrap()
                )
            })
            .collect()
    };
    let llama2 = compare_json(&["--filter", "LLAMA2"]);
    assert_eq!(
        names(&llama2),
        ["llama/llama2-7b", "llama/llama2-13b", "llama/llama2-70b"]
    );
    let clip = compare_json(&["--filter", "clip"]);
    assert_eq!(clip.len(), clip::Config::PRESETS.len());
    let mnist = compare_json(&["--filter", "mnist"]);
    assert_eq!(
        names(&mnist),
        ["clip/mnist", "dvae/mnist", "diffusion/mnist"]
    );
    let output = xtask(["compare", "--filter", "dall-e"]);
    assert_success(&output);
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("| dall-e-12b "), "{table}");
}

#[test]
fn unknown_filter_lists_presets() {
    let output = xtask(["compare", "--filter", "gpt-5"]);
    let stderr = assert_error(
        &output,
        &["--filter \"gpt-5\"", "matches no", "gpt/gpt2-124m"],
    );
    for (krate, preset) in every_preset() {
        assert!(stderr.contains(&format!("{krate}/{preset}")), "{stderr}");
    }
    assert!(output.stdout.is_empty());
}
