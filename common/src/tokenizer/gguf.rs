//! Tokenizer files from the vocabulary stored in a GGUF file.
//!
//! llama.cpp stores the tokenizer as metadata (`tokenizer.ggml.*`). For the
//! byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`, as in
//! SmolLM2, GPT-2 and Llama 3) this rebuilds the `tokenizer.json` and
//! `tokenizer_config.json` that `transformers` 5 builds from the same file,
//! so that both give the same ids.

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

/// The GPT-2 map from bytes to printable characters that byte-level BPE
/// vocabularies are written in.
pub(crate) fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[byte as usize] = if printable {
            byte as char
        } else {
            let c = char::from_u32(next).expect("code points 256..324 are characters");
            next += 1;
            c
        };
    }
    table
}

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
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap_or((m, ""));
            json!([a, b])
        })
        .collect();

    let mut added = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(&token_types).enumerate() {
        // A control token outside the byte alphabet is a mislabel that no
        // text can produce; transformers skips it as well.
        let special = *kind == TOKEN_TYPE_CONTROL && in_alphabet(token);
        if special || *kind == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": !special, "special": special,
            }));
        }
    }

    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
    });
    let pre = gguf.get("tokenizer.ggml.pre").and_then(Value::as_str);
    let pre_tokenizer = match pre {
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx") => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        }),
        // NOTE: other `tokenizer.ggml.pre` values (qwen2, tekken, ...) use
        // their own split regex; they get the GPT-2 split here, as SmolLM2's
        // "smollm" correctly does.
        _ => byte_level.clone(),
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
    let special_piece = |token: &Option<String>| {
        let token = token.as_deref().unwrap_or_default();
        json!({"SpecialToken": {"id": token, "type_id": 0}})
    };
    let mut single = Vec::new();
    let mut special_tokens = Map::new();
    for (enabled, token) in [(add_bos, &bos), (add_eos, &eos)] {
        if let (true, Some(name)) = (enabled, token) {
            let id = vocab.get(name).cloned().unwrap_or(json!(0));
            special_tokens.insert(
                name.clone(),
                json!({"id": name, "ids": [id], "tokens": [name]}),
            );
        }
    }
    if add_bos && bos.is_some() {
        single.push(special_piece(&bos));
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    if add_eos && eos.is_some() {
        single.push(special_piece(&eos));
    }
    let mut pair = single.clone();
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": special_tokens,
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let table = bytes_to_unicode();
        assert_eq!(table[b'A' as usize], 'A');
        assert_eq!(table[b' ' as usize], '\u{120}');
        assert_eq!(table[b'\n' as usize], '\u{10a}');
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
