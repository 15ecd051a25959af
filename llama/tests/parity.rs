//! The Llama model against transformers' `LlamaForCausalLM` on the fixture
//! written by `reference/llama_tiny.py`, and the decoding identities.

use common::checkpoint;
use common::tokenizer::Tokenizer;
use llama::{Cache, Config, Llama};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tiny() -> Llama {
    Llama::load(&fixtures().join("tiny"), Device::Cpu, Kind::Float).unwrap()
}

fn fixture_io() -> (Tensor, Tensor) {
    let mut io = checkpoint::read(&fixtures().join("tiny_io.safetensors")).unwrap();
    (
        io.remove("input_ids").unwrap(),
        io.remove("logits").unwrap(),
    )
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn logits_match_transformers() {
    let model = tiny();
    let (input_ids, expected) = fixture_io();
    let logits = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    assert_eq!(logits.size(), expected.size());
    let diff = max_abs_diff(&logits, &expected);
    assert!(diff < 1e-4, "max |logits - reference| = {diff}");
}

#[test]
fn gguf_conversion_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny");
    llama::convert::gguf_to_model_dir(&fixtures().join("tiny.gguf"), &out, false).unwrap();
    let model = Llama::load(&out, Device::Cpu, Kind::Float).unwrap();
    let (input_ids, expected) = fixture_io();
    let logits = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    let diff = max_abs_diff(&logits, &expected);
    assert!(diff < 1e-4, "max |logits - reference| = {diff}");

    let converted = Config::from_file(&out.join("config.json")).unwrap();
    let reference = Config::from_file(&fixtures().join("tiny/config.json")).unwrap();
    assert_eq!(converted.num_kv_heads, reference.num_kv_heads);
    assert_eq!(converted.rope_theta, reference.rope_theta);
    assert_eq!(converted.rms_norm_eps, reference.rms_norm_eps);

    let tokenizer = Tokenizer::from_dir(&out).unwrap();
    let ids = tokenizer.encode("<|im_start|>hi", false).unwrap();
    assert_eq!(ids[0], 1, "control token kept whole: {ids:?}");
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "<|im_start|>hi");
    assert!(tokenizer.chat_template().is_some());
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let model = tiny();
    let (input_ids, _) = fixture_io();
    let full = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    let mut cache = model.new_cache();
    let seq = input_ids.size()[1];
    for t in 0..seq {
        let step = model
            .forward(&input_ids.narrow(1, t, 1), &mut cache)
            .unwrap();
        let diff = max_abs_diff(&step, &full.narrow(1, t, 1));
        assert!(diff < 1e-5, "position {t}: max diff {diff}");
    }
    assert_eq!(cache.len(), seq);
}

#[test]
fn chunked_prefill_equals_full_forward() {
    let model = tiny();
    let (input_ids, _) = fixture_io();
    let full = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    let mut cache = Cache::new(model.config().num_layers);
    let mut pieces = Vec::new();
    for (start, len) in [(0, 5), (5, 4), (9, 1), (10, 2)] {
        pieces.push(
            model
                .forward(&input_ids.narrow(1, start, len), &mut cache)
                .unwrap(),
        );
    }
    let chunked = Tensor::cat(&pieces, 1);
    let diff = max_abs_diff(&chunked, &full);
    assert!(diff < 1e-5, "max diff {diff}");
}

#[test]
fn grouped_query_equals_multi_head_with_copied_kv_heads() {
    // Copy each KV head once per query head of its group: the multi-head
    // model then computes exactly what the grouped-query model computes.
    let gqa = tiny();
    let (input_ids, _) = fixture_io();
    let expected = gqa.forward(&input_ids, &mut gqa.new_cache()).unwrap();

    let mut config = gqa.config().clone();
    let group = config.num_heads / config.num_kv_heads;
    config.num_kv_heads = config.num_heads;
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mha = Llama::new(&vs.root(), &config).unwrap();
    let mut tensors = checkpoint::read(&fixtures().join("tiny/model.safetensors")).unwrap();
    let head_dim = config.head_dim;
    for (name, tensor) in tensors.iter_mut() {
        if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
            let cols = tensor.size()[1];
            *tensor = tensor
                .view([-1, 1, head_dim, cols])
                .expand([-1, group, head_dim, cols], false)
                .reshape([-1, cols]);
        }
    }
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        var.copy_(&tensors[&name]);
    }
    let logits = mha.forward(&input_ids, &mut mha.new_cache()).unwrap();
    let diff = max_abs_diff(&logits, &expected);
    assert!(diff < 1e-5, "max diff {diff}");
}

#[test]
fn bf16_weights_stay_close() {
    let model = Llama::load(&fixtures().join("tiny"), Device::Cpu, Kind::BFloat16).unwrap();
    let (input_ids, expected) = fixture_io();
    let logits = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    assert_eq!(logits.kind(), Kind::BFloat16);
    // bf16 keeps 8 bits of mantissa: expect agreement to about 1e-2 of the
    // logit scale, not 1e-4.
    let diff = max_abs_diff(&logits.to_kind(Kind::Float), &expected);
    assert!(diff < 0.1, "max diff {diff}");
}
