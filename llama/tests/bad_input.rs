//! Bad input to the Llama model and its loader: token ids outside the
//! vocabulary, sequences longer than the context, and broken model
//! directories. Each must return an error that names the value at fault.

use common::checkpoint;
use common::generation;
use common::sampling::{Sampler, SamplingConfig};
use llama::Llama;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn tiny() -> Llama {
    Llama::load(&tiny_dir(), Device::Cpu, Kind::Float).unwrap()
}

fn ids(values: &[i64]) -> Tensor {
    Tensor::from_slice(values).view([1, -1])
}

fn greedy() -> Sampler {
    Sampler::new(SamplingConfig {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap()
}

fn forward_error(model: &Llama, input_ids: &Tensor) -> String {
    let result = model.forward(input_ids, &mut model.new_cache());
    result.unwrap_err().to_string()
}

fn generate_error(model: &Llama, prompt: &[u32]) -> String {
    let result = generation::generate(model, prompt, 4, &mut greedy(), &[], |_| {
        Ok(ControlFlow::Continue(()))
    });
    result.unwrap_err().to_string()
}

fn load_error(dir: &Path) -> String {
    Llama::load(dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
}

fn assert_contains(message: &str, expected: &[&str]) {
    for text in expected {
        assert!(message.contains(text), "{text:?} missing from: {message}");
    }
}

/// Copies the tiny model directory into `dir/tiny`.
fn copy_tiny(dir: &Path) -> PathBuf {
    let copy = dir.join("tiny");
    std::fs::create_dir(&copy).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_dir().join(name), copy.join(name)).unwrap();
    }
    copy
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = checkpoint::read(&path).unwrap();
    edit(&mut tensors);
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    checkpoint::save(&path, &tensors, None).unwrap();
}

#[test]
fn forward_token_id_past_vocab() {
    let message = forward_error(&tiny(), &ids(&[1, 256, 3]));
    assert_contains(&message, &["token id 256", "256 tokens"]);
}

#[test]
fn forward_negative_token_id() {
    let message = forward_error(&tiny(), &ids(&[1, -1, 3]));
    assert_contains(&message, &["token id -1", "256 tokens"]);
}

#[test]
fn forward_empty_sequence() {
    let message = forward_error(&tiny(), &Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu)));
    assert_contains(&message, &["seq > 0", "[1, 0]"]);
}

#[test]
fn forward_sequence_longer_than_context() {
    let input_ids = Tensor::ones([1, 65], (Kind::Int64, Device::Cpu));
    let message = forward_error(&tiny(), &input_ids);
    assert_contains(&message, &["65 new positions", "64 positions"]);
}

#[test]
fn forward_cache_past_context() {
    let model = tiny();
    let mut cache = model.new_cache();
    let full = Tensor::ones([1, 64], (Kind::Int64, Device::Cpu));
    let logits = model.forward(&full, &mut cache).unwrap();
    assert_eq!(logits.size(), [1, 64, 256]);
    let message = model
        .forward(&ids(&[1]), &mut cache)
        .unwrap_err()
        .to_string();
    assert_contains(&message, &["64 cached", "1 new", "64 positions"]);
}

#[test]
fn generate_token_id_past_vocab() {
    let message = generate_error(&tiny(), &[1, 256]);
    assert_contains(&message, &["token id 256", "256 tokens"]);
}

#[test]
fn generate_wrapped_negative_token_id() {
    // Prompts are u32, so a -1 from a caller arrives as u32::MAX.
    let message = generate_error(&tiny(), &[1, u32::MAX]);
    assert_contains(&message, &[&format!("token id {}", u32::MAX), "256 tokens"]);
}

#[test]
fn generate_prompt_longer_than_context() {
    let message = generate_error(&tiny(), &[1; 65]);
    assert_contains(&message, &["65 tokens", "64", "shorten the prompt"]);
}

#[test]
fn generate_empty_prompt() {
    let message = generate_error(&tiny(), &[]);
    assert_contains(&message, &["prompt is empty"]);
}

#[test]
fn load_reshaped_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_weights(&model, |tensors| {
        let norm = tensors.get_mut("model.norm.weight").unwrap();
        *norm = norm.reshape([8, 8]);
    });
    let message = load_error(&model);
    assert_contains(&message, &["model.norm.weight", "[8, 8]", "[64]"]);
}

#[test]
fn load_config_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_config(&model, |config| config["intermediate_size"] = 128.into());
    let message = load_error(&model);
    assert_contains(
        &message,
        &[
            "model.layers.0.mlp.down_proj.weight",
            "[64, 160]",
            "[64, 128]",
            "config.json",
        ],
    );
}

#[test]
fn load_config_larger_than_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    // 6.4e12 weights: allocating them would exhaust memory.
    edit_config(&model, |config| {
        config["vocab_size"] = 100_000_000_000i64.into()
    });
    let message = load_error(&model);
    assert_contains(
        &message,
        &[
            "config.json",
            "vocab_size 100000000000",
            "model.safetensors",
        ],
    );
}

#[test]
fn load_config_parameter_count_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_config(&model, |config| {
        config["num_hidden_layers"] = i64::MAX.into();
        config["hidden_size"] = i64::MAX.into();
    });
    let message = load_error(&model);
    assert_contains(
        &message,
        &[
            &format!("num_hidden_layers {}", i64::MAX),
            "more parameters than an i64 counts",
        ],
    );
}

#[test]
fn load_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_weights(&model, |tensors| {
        tensors.remove("model.layers.1.self_attn.k_proj.weight");
    });
    let message = load_error(&model);
    assert_contains(
        &message,
        &["missing", "model.layers.1.self_attn.k_proj.weight"],
    );
}

#[test]
fn load_unexpected_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_weights(&model, |tensors| {
        tensors.insert(
            "model.extra.weight".into(),
            Tensor::zeros([4], tch::kind::FLOAT_CPU),
        );
    });
    let message = load_error(&model);
    assert_contains(&message, &["unexpected", "model.extra.weight"]);
}

#[test]
fn load_truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    let message = load_error(&model);
    assert_contains(&message, &["model.safetensors", "truncated"]);
}

#[test]
fn load_safetensors_shorter_than_length_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    std::fs::write(model.join("model.safetensors"), [1, 2, 3]).unwrap();
    let message = load_error(&model);
    assert_contains(&message, &["model.safetensors", "3 bytes", "truncated"]);
}

#[test]
fn load_header_length_past_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let header_len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&header_len.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    let message = load_error(&model);
    assert_contains(
        &message,
        &[
            "model.safetensors",
            &format!("header length {header_len}"),
            "exceeds",
        ],
    );
}

#[test]
fn load_malformed_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    std::fs::write(model.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    let message = load_error(&model);
    assert_contains(&message, &["config.json", "invalid", "line 1"]);
}

#[test]
fn load_config_missing_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_config(&model, |config| {
        config.as_object_mut().unwrap().remove("vocab_size");
    });
    let message = load_error(&model);
    assert_contains(&message, &["config.json", "vocab_size"]);
}

#[test]
fn load_heads_not_multiple_of_kv_heads() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_tiny(dir.path());
    edit_config(&model, |config| config["num_key_value_heads"] = 3.into());
    let message = load_error(&model);
    assert_contains(
        &message,
        &[
            "config.json",
            "num_attention_heads 8",
            "num_key_value_heads 3",
        ],
    );
}

#[test]
fn load_dir_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let message = load_error(dir.path());
    assert_contains(&message, &["config.json", "not found"]);
}

#[test]
fn load_huge_context_allocates_nothing_per_position() {
    // Rotary angles are computed per forward pass, so a context of 10^12
    // positions costs no memory until positions are used.
    let dir = tempfile::tempdir().unwrap();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny");
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(name), dir.path().join(name)).unwrap();
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = serde_json::json!(1_000_000_000_000i64);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let model = Llama::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let ids = Tensor::from_slice(&[3i64, 4, 5]).unsqueeze(0);
    let logits = model.forward(&ids, &mut model.new_cache()).unwrap();
    assert_eq!(logits.size(), [1, 3, 256]);
}
