//! The GPT models against transformers' `OpenAIGPTLMHeadModel`, `GPT2Model`,
//! `GPTNeoForCausalLM`, `OpenAIGPTDoubleHeadsModel` and
//! `OpenAIGPTForSequenceClassification` on the fixtures written by
//! `reference/gpt_tiny.py`, and the decoding identities.

use common::checkpoint;
use gpt::{Gpt, MultipleChoice, SequenceClassifier, GPT1_LM_COEF};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn io(name: &str) -> BTreeMap<String, Tensor> {
    checkpoint::read(&fixtures().join(format!("{name}_io.safetensors"))).unwrap()
}

fn load(name: &str) -> Gpt {
    Gpt::load(&fixtures().join(name), Device::Cpu, Kind::Float).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn assert_close(quantity: &str, a: &Tensor, b: &Tensor) {
    let diff = max_abs_diff(a, b);
    assert!(
        diff < 1e-4,
        "{quantity}: max |rust - transformers| = {diff}"
    );
}

fn check_language_model(name: &str) {
    let model = load(name);
    let io = io(name);
    let mut cache = model.new_cache();
    let hidden = model.hidden_states(&io["input_ids"], &mut cache).unwrap();
    assert_close(&format!("{name} hidden states"), &hidden, &io["hidden"]);
    assert_close(
        &format!("{name} logits"),
        &model.logits(&hidden),
        &io["logits"],
    );
}

#[test]
fn openai_gpt_matches_transformers() {
    check_language_model("openai_gpt");
}

#[test]
fn gpt2_base_checkpoint_matches_transformers() {
    check_language_model("gpt2");
}

#[test]
fn gpt_neo_alternating_local_attention_matches_transformers() {
    check_language_model("gpt_neo");
}

/// Decoding a prefix, then one token at a time, then a chunk gives the
/// logits of one full pass: the KV cache (windowed in banded layers) and the
/// position offsets are right.
fn check_cached_decoding(name: &str) {
    let model = load(name);
    let input_ids = io(name)["input_ids"].shallow_clone();
    let full = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    let mut cache = model.new_cache();
    let mut parts = vec![model
        .forward(&input_ids.narrow(1, 0, 5), &mut cache)
        .unwrap()];
    for i in 5..9 {
        parts.push(
            model
                .forward(&input_ids.narrow(1, i, 1), &mut cache)
                .unwrap(),
        );
    }
    parts.push(
        model
            .forward(&input_ids.narrow(1, 9, 3), &mut cache)
            .unwrap(),
    );
    assert_eq!(cache.len(), 12);
    let cached = Tensor::cat(&parts, 1);
    let diff = max_abs_diff(&cached, &full);
    assert!(
        diff < 1e-4,
        "{name}: cached and full logits differ by {diff}"
    );
}

#[test]
fn kv_cache_equals_full_pass_dense() {
    check_cached_decoding("gpt2");
    check_cached_decoding("openai_gpt");
}

#[test]
fn kv_cache_equals_full_pass_banded() {
    check_cached_decoding("gpt_neo");
}

#[test]
fn multiple_choice_head_matches_transformers() {
    let dir = fixtures().join("openai_gpt_double_heads");
    let (model, _vs) = MultipleChoice::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let io = io("openai_gpt_double_heads");
    let (mc_logits, lm_logits) = model
        .forward_t(&io["input_ids"], &io["mc_token_ids"], false)
        .unwrap();
    assert_close("mc_logits", &mc_logits, &io["mc_logits"]);
    assert_close("lm_logits", &lm_logits, &io["lm_logits"]);
    let loss = model
        .loss(
            &io["input_ids"],
            &io["mc_token_ids"],
            &io["mc_labels"],
            GPT1_LM_COEF,
            false,
        )
        .unwrap();
    assert_close("mc_loss", &loss.task, &io["mc_loss"]);
    assert_close("lm_loss", &loss.lm, &io["lm_loss"]);
    let total = &io["mc_loss"] + &io["lm_loss"] * GPT1_LM_COEF;
    assert_close("total loss", &loss.total, &total);
}

#[test]
fn classifier_pools_last_real_token_like_transformers() {
    let dir = fixtures().join("openai_gpt_classify");
    let (model, _vs) = SequenceClassifier::load(&dir, Device::Cpu, Kind::Float).unwrap();
    assert_eq!((model.num_labels(), model.pad_token_id()), (2, Some(0)));
    let io = io("openai_gpt_classify");
    let logits = model.forward(&io["input_ids"]).unwrap();
    assert_close("classification logits", &logits, &io["logits"]);
    let loss = model
        .loss(&io["input_ids"], &io["labels"], GPT1_LM_COEF, false)
        .unwrap();
    assert_close("classification loss", &loss.task, &io["loss"]);
}

#[test]
fn saved_checkpoint_keeps_conv1d_layout_and_reloads() {
    let dir = fixtures().join("gpt2");
    let (model, vs) = Gpt::load_with_var_store(&dir, Device::Cpu, Kind::Float).unwrap();
    let out = tempfile::tempdir().unwrap();
    gpt::save(&vs, model.config(), &model.config().to_hf(), out.path()).unwrap();

    // The saved tensors are the fixture's, under the head model's names, in
    // the fixture's (in, out) layout.
    let original = checkpoint::read(&dir.join("model.safetensors")).unwrap();
    let saved = checkpoint::read(&out.path().join("model.safetensors")).unwrap();
    assert_eq!(original.len(), saved.len());
    for (name, tensor) in &original {
        let copy = &saved[&format!("transformer.{name}")];
        assert_eq!(max_abs_diff(tensor, copy), 0.0, "{name}");
    }

    let reloaded = Gpt::load(out.path(), Device::Cpu, Kind::Float).unwrap();
    let input_ids = io("gpt2")["input_ids"].shallow_clone();
    let a = model.forward(&input_ids, &mut model.new_cache()).unwrap();
    let b = reloaded
        .forward(&input_ids, &mut reloaded.new_cache())
        .unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}
