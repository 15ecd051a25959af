//! Presets against transformers' parameter counts and the published sizes,
//! and the closed-form count against the variables of built models.

use gpt::{AttentionKind, Config, Gpt, Layout};
use std::path::Path;
use tch::{nn::VarStore, Device};

fn transformers_counts() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preset_parameters.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn presets_equal_transformers_counts() {
    let counts = transformers_counts();
    let mut compared = 0;
    for (name, config) in Config::presets() {
        // transformers cannot build GPT-3 13B: 40 heads of 128 do not fill
        // its width of 5140.
        let Some(expected) = counts.get(name).and_then(|v| v.as_i64()) else {
            assert_eq!(name, "gpt3-13b");
            continue;
        };
        assert_eq!(config.num_parameters(), expected, "{name}");
        compared += 1;
    }
    assert_eq!(compared, 13);
}

#[test]
fn presets_match_published_sizes() {
    // GPT-2's sizes are the names of the released checkpoints. GPT-3's are
    // table 2.1 of Brown et al. (2020), rounded: the shapes of the same table
    // give 355.9M for "350M", 1.316B for "1.3B" and 2.652B for "2.7B", so
    // those three are held to 2%, the others to 1% (and DALL-E's, below,
    // to 2%).
    let published = [
        ("gpt1", 117e6, 0.01),
        ("gpt2-124m", 124e6, 0.01),
        ("gpt2-355m", 355e6, 0.01),
        ("gpt2-774m", 774e6, 0.01),
        ("gpt2-1.5b", 1558e6, 0.01),
        ("gpt3-125m", 125e6, 0.01),
        ("gpt3-350m", 350e6, 0.02),
        ("gpt3-760m", 760e6, 0.01),
        ("gpt3-1.3b", 1.3e9, 0.02),
        ("gpt3-2.7b", 2.7e9, 0.02),
        ("gpt3-6.7b", 6.7e9, 0.01),
        ("gpt3-13b", 13.0e9, 0.01),
        ("gpt3-175b", 175.0e9, 0.01),
        // Ramesh et al. (2021) call it a "12-billion parameter" transformer:
        // its layers hold 12.10B, and the embedding tables bring the total
        // to 12.20B.
        ("dall-e-12b", 12.0e9, 0.02),
    ];
    let presets = Config::presets();
    assert_eq!(presets.len(), published.len());
    for (name, count, tolerance) in published {
        let config = Config::preset(name).unwrap();
        let ratio = config.num_parameters() as f64 / count;
        assert!(
            (ratio - 1.0).abs() < tolerance,
            "{name}: {} parameters, published {count:e} (ratio {ratio:.4})",
            config.num_parameters()
        );
    }
}

#[test]
fn gpt3_alternates_dense_and_banded_layers() {
    for (name, config) in Config::presets() {
        let banded = config
            .attention_layers
            .iter()
            .filter(|k| **k == AttentionKind::Banded)
            .count();
        if name.starts_with("gpt3") {
            assert_eq!(config.context_length, 2048, "{name}");
            assert_eq!(banded as i64 * 2, config.num_layers, "{name}");
            assert_eq!(config.attention_layers[0], AttentionKind::Dense, "{name}");
        } else {
            assert_eq!(banded, 0, "{name}");
        }
    }
    let gpt1 = Config::gpt1();
    assert_eq!(
        (
            gpt1.layout,
            gpt1.num_layers,
            gpt1.hidden_size,
            gpt1.num_heads,
            gpt1.context_length,
            gpt1.vocab_size
        ),
        (Layout::OpenAiGpt, 12, 768, 12, 512, 40478)
    );
}

fn tiny(layout: Layout, head_dim: i64) -> Config {
    let mut config = Config::gpt3_125m();
    config.layout = layout;
    config.vocab_size = 50;
    config.context_length = 16;
    config.hidden_size = 24;
    config.num_heads = 3;
    config.head_dim = head_dim;
    config.intermediate_size = 40;
    config.num_layers = 4;
    config.attention_layers = config.attention_layers[..4].to_vec();
    config.window_size = 4;
    config.scale_attention = layout != Layout::GptNeo;
    config
}

#[test]
fn closed_form_count_equals_built_model() {
    let mut gpt1 = tiny(Layout::OpenAiGpt, 8);
    gpt1.attention_layers = vec![AttentionKind::Dense; 4];
    gpt1.intermediate_size = 96;
    for config in [
        gpt1,
        tiny(Layout::Gpt2, 8),
        tiny(Layout::Gpt2, 10),
        tiny(Layout::GptNeo, 8),
    ] {
        let vs = VarStore::new(Device::Cpu);
        Gpt::new(&vs.root(), &config).unwrap();
        let built: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(config.num_parameters(), built, "{config:?}");
    }
}

#[test]
fn hf_config_round_trips() {
    for (name, config) in Config::presets() {
        let parsed = Config::from_hf(&config.to_hf(), Path::new("config.json")).unwrap();
        assert_eq!(parsed, config, "{name}");
    }
    for config in [
        tiny(Layout::OpenAiGpt, 8),
        tiny(Layout::Gpt2, 10),
        tiny(Layout::GptNeo, 8),
    ] {
        let mut config = config;
        if config.layout == Layout::OpenAiGpt {
            config.attention_layers = vec![AttentionKind::Dense; 4];
            config.window_size = 0;
            config.intermediate_size = 4 * config.hidden_size;
        }
        let parsed = Config::from_hf(&config.to_hf(), Path::new("config.json")).unwrap();
        assert_eq!(parsed, config);
    }
}
