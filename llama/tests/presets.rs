//! Presets against the published parameter counts, and the closed-form
//! count against the variables of a built model.

use llama::{Config, Llama};
use tch::{nn::VarStore, Device};

fn assert_within_percent(name: &str, count: i64, published: f64) {
    let ratio = count as f64 / published;
    assert!(
        (ratio - 1.0).abs() < 0.01,
        "{name}: {count} parameters, published {published:e} (ratio {ratio:.4})"
    );
}

#[test]
fn presets_match_published_sizes() {
    // Llama 1: table 2 of Touvron et al. (2023) gives 6.7B, 13.0B, 32.5B and
    // 65.2B. Llama 2 reports rounded sizes; the released checkpoints hold
    // 6.74B, 13.02B and 68.98B parameters.
    let published = [
        ("llama1-7b", Config::llama1_7b(), 6.7e9),
        ("llama1-13b", Config::llama1_13b(), 13.0e9),
        ("llama1-33b", Config::llama1_33b(), 32.5e9),
        ("llama1-65b", Config::llama1_65b(), 65.2e9),
        ("llama2-7b", Config::llama2_7b(), 6.74e9),
        ("llama2-13b", Config::llama2_13b(), 13.02e9),
        ("llama2-70b", Config::llama2_70b(), 68.98e9),
        ("smollm2-135m", Config::smollm2_135m(), 134.5e6),
    ];
    for (name, config, count) in published {
        assert_within_percent(name, config.num_parameters(), count);
    }
}

#[test]
fn llama2_70b_uses_grouped_query_attention() {
    let config = Config::llama2_70b();
    assert_eq!(config.num_heads / config.num_kv_heads, 8);
}

#[test]
fn closed_form_count_equals_variables() {
    for tied in [false, true] {
        let mut config = Config::smollm2_135m();
        config.hidden_size = 48;
        config.head_dim = 16;
        config.num_heads = 3;
        config.num_kv_heads = 1;
        config.intermediate_size = 40;
        config.num_layers = 3;
        config.vocab_size = 100;
        config.max_position_embeddings = 32;
        config.tie_word_embeddings = tied;
        let vs = VarStore::new(Device::Cpu);
        let _model = Llama::new(&vs.root(), &config).unwrap();
        let counted: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(counted, config.num_parameters(), "tied: {tied}");
    }
}
