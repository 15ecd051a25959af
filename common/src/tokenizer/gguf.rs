//! Tokenizer files from the vocabulary stored in a GGUF file.
//!
//! llama.cpp stores the tokenizer as metadata (`tokenizer.ggml.*`). For the
//! byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`, as in
//! SmolLM2, GPT-2 and Llama 3) this rebuilds the `tokenizer.json` and
//! `tokenizer_config.json` that `transformers` 5 builds from the same file,
//! so that both give the same ids.

use super::bpe::{bytes_to_unicode, AddedToken, ByteLevelBpe, Normalizer, Split, Wrap};
use crate::gguf::{GgufFile, Value};
use crate::{Error, Result};
use serde_json::{json, Map};

/// The token type llama.cpp gives control tokens such as `<|im_end|>`.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// The token type of user-defined added tokens such as `<think>`.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The split before byte-level encoding of the Llama 3 family of
/// vocabularies (`tokenizer.ggml.pre` = `llama-bpe` and relatives).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings<'a>(gguf: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let values = gguf
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Unsupported(format!("the GGUF file has no {key} array")))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| Error::Unsupported(format!("{key}[{i}] is not a string")))
        })
        .collect()
}

fn token_name(tokens: &[&str], gguf: &GgufFile, key: &str) -> Option<String> {
    let id = gguf.get(key)?.as_u64()? as usize;
    tokens.get(id).map(|t| t.to_string())
}

/// Builds `(tokenizer.json, tokenizer_config.json)` from a GGUF file.
pub fn from_gguf(gguf: &GgufFile) -> Result<(serde_json::Value, serde_json::Value)> {
    let model = gguf
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::Unsupported("the GGUF file has no tokenizer (tokenizer.ggml.model)".into())
        })?;
    if model != "gpt2" {
        return Err(Error::Unsupported(format!(
            "GGUF tokenizer model {model:?} is not supported: only byte-level BPE (\"gpt2\") \
             vocabularies convert to tokenizer.json"
        )));
    }
    let tokens = strings(gguf, "tokenizer.ggml.tokens")?;
    // A vocabulary of single bytes has no merges, and writers omit the key.
    let merges = match gguf.get("tokenizer.ggml.merges") {
        Some(_) => strings(gguf, "tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let token_types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_array()
            .unwrap_or_default()
            .iter()
            .map(|t| t.as_i64().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };

    // Tokens are stored in the byte alphabet, except some that llama.cpp
    // writes as plain UTF-8: spell those in the byte alphabet.
    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        let spelled = if in_alphabet(token) {
            token.to_string()
        } else {
            token.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, json!(id));
    }
    let merges = merges
        .iter()
        .map(|m| m.split_once(' ').unwrap_or((m, "")))
        .collect();

    let mut added_tokens = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(&token_types).enumerate() {
        // A control token outside the byte alphabet is a mislabel that no
        // text can produce; transformers skips it as well.
        let special = *kind == TOKEN_TYPE_CONTROL && in_alphabet(token);
        if special || *kind == TOKEN_TYPE_USER_DEFINED {
            added_tokens.push(AddedToken {
                id,
                content: token,
                special,
            });
        }
    }

    let pre = gguf.get("tokenizer.ggml.pre").and_then(Value::as_str);
    let split = match pre {
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx") => {
            Split::Regex(LLAMA3_SPLIT)
        }
        // NOTE: other `tokenizer.ggml.pre` values (qwen2, tekken, ...) use
        // their own split regex; they get the GPT-2 split here, as SmolLM2's
        // "smollm" correctly does.
        _ => Split::Gpt2,
    };

    let flag = |key: &str| {
        gguf.get(key).and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(false);
    let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
    let bos = token_name(&tokens, gguf, "tokenizer.ggml.bos_token_id");
    let eos = token_name(&tokens, gguf, "tokenizer.ggml.eos_token_id");
    let with_id = |enabled: bool, token: &Option<String>| {
        let name = token.as_ref().filter(|_| enabled)?;
        let id = vocab.get(name).cloned().unwrap_or(json!(0));
        Some((name.clone(), id))
    };
    let tokenizer = ByteLevelBpe {
        bos: with_id(add_bos, &bos),
        eos: with_id(add_eos, &eos),
        vocab,
        merges,
        added_tokens,
        split,
        normalizer: Normalizer::None,
        wrap: Wrap::Template,
        end_of_word_suffix: "",
        unk_token: None,
    }
    .to_json();

    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    for (name, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(token) = token_name(&tokens, gguf, key) {
            config.insert(name.into(), json!(token));
        }
    }
    if let Some(template) = gguf.get("tokenizer.chat_template").and_then(Value::as_str) {
        config.insert("chat_template".into(), json!(template));
    }
    if let Some(context) = gguf
        .get("general.architecture")
        .and_then(Value::as_str)
        .and_then(|arch| gguf.get(&format!("{arch}.context_length")))
        .and_then(Value::as_u64)
    {
        config.insert("model_max_length".into(), json!(context));
    }
    Ok((tokenizer, serde_json::Value::Object(config)))
}
