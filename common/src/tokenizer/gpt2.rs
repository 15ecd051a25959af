//! GPT-2's tokenizer from the files OpenAI published with the model:
//! `encoder.json` (token to id) and `vocab.bpe` (the merges), which the
//! Hugging Face `gpt2` checkpoint calls `vocab.json` and `merges.txt`.
//!
//! The result is what transformers 5.25 builds for `GPT2Tokenizer`: GPT-2's
//! split without a prefix space, byte-level BPE, no tokens added around a
//! sequence, and `<|endoftext|>` as a special token matched inside text.

use super::bpe::{bytes_to_unicode, AddedToken, ByteLevelBpe, Normalizer, Split, Wrap};
use super::chars::END_OF_TEXT;
use crate::{Error, Result};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The context length (`n_positions`) of every published GPT-2 size.
const CONTEXT_LENGTH: u64 = 1024;

const VOCAB_FORMAT: &str = "GPT-2 vocabulary";
const MERGES_FORMAT: &str = "GPT-2 merges";

/// Builds `(tokenizer.json, tokenizer_config.json)` from GPT-2's
/// `encoder.json` and `vocab.bpe`.
///
/// The vocabulary must be a JSON object of token to id, with the ids `0..N`
/// used once each, `<|endoftext|>` and a token for every byte. Each merge
/// must be two tokens whose parts and result are in the vocabulary. Errors
/// name the file and the line or token at fault.
pub fn gpt2_from_files(encoder: &Path, merges: &Path) -> Result<(Value, Value)> {
    let vocab = read_vocab(encoder)?;
    let end_of_text = vocab
        .get(END_OF_TEXT)
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            let message = format!("the vocabulary has no {END_OF_TEXT} token");
            Error::format(encoder, VOCAB_FORMAT, message)
        })?;
    let merges_text = std::fs::read_to_string(merges).map_err(|e| Error::io(merges, e))?;
    let merges = parse_merges(merges, &merges_text, &vocab, encoder)?;

    let tokenizer = ByteLevelBpe {
        vocab,
        merges,
        added_tokens: vec![AddedToken {
            id: end_of_text as usize,
            content: END_OF_TEXT,
            special: true,
        }],
        split: Split::Gpt2,
        bos: None,
        eos: None,
        normalizer: Normalizer::None,
        wrap: Wrap::Template,
        end_of_word_suffix: "",
        unk_token: None,
    }
    .to_json();

    // The keys that transformers 5.25 saves for GPT2Tokenizer, less its
    // loader bookkeeping (`backend`, `is_local`), and GPT-2's context length
    // in place of transformers' default of no limit.
    let config = json!({
        "add_prefix_space": false,
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": null,
        "errors": "replace",
        "model_max_length": CONTEXT_LENGTH,
        "tokenizer_class": "GPT2Tokenizer",
    });
    Ok((tokenizer, config))
}

/// Reads `encoder.json` into the vocabulary map of `tokenizer.json`.
fn read_vocab(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let invalid = |message: String| Error::format(path, VOCAB_FORMAT, message);
    let Entries(entries) = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;

    // With N tokens and every id below N used once, the ids are 0..N, which
    // `Tokenizer::vocab_size` and the id checks of `decode` rely on.
    let size = entries.len();
    let mut token_of_id: Vec<Option<&str>> = vec![None; size];
    for (token, id) in &entries {
        let index = id.as_u64().filter(|&i| i < size as u64).ok_or_else(|| {
            invalid(format!(
                "token {token:?} has id {id}, but ids must be integers from 0 to {} \
                 ({size} tokens)",
                size.saturating_sub(1)
            ))
        })?;
        let slot = &mut token_of_id[index as usize];
        if let Some(other) = slot {
            return Err(invalid(format!(
                "tokens {other:?} and {token:?} both have id {index}"
            )));
        }
        *slot = Some(token);
    }

    let vocab: Map<String, Value> = entries.into_iter().collect();
    // Without a token for each byte, text with that byte would not encode.
    for (byte, c) in bytes_to_unicode().iter().enumerate() {
        if !vocab.contains_key(&c.to_string()) {
            return Err(invalid(format!(
                "the vocabulary has no token {c:?} for byte 0x{byte:02x}"
            )));
        }
    }
    Ok(vocab)
}

/// Parses `vocab.bpe`: an optional `#version` line, then one merge per line,
/// two tokens separated by a space, in the order they apply.
fn parse_merges<'a>(
    path: &Path,
    text: &'a str,
    vocab: &Map<String, Value>,
    vocab_path: &Path,
) -> Result<Vec<(&'a str, &'a str)>> {
    let mut merges = Vec::new();
    let mut line_of_merge: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let invalid = |message: String| {
            Error::format(path, MERGES_FORMAT, format!("line {number}: {message}"))
        };
        if number == 1 && line.starts_with("#version") {
            continue;
        }
        let (left, right) = match line.split(' ').collect::<Vec<_>>()[..] {
            [left, right] if !left.is_empty() && !right.is_empty() => (left, right),
            _ => {
                return Err(invalid(format!(
                    "expected two tokens separated by one space, found {line:?}"
                )))
            }
        };
        for token in [left, right, &format!("{left}{right}")] {
            if !vocab.contains_key(token) {
                return Err(invalid(format!(
                    "the merge {line:?} needs the token {token:?}, which is not in the \
                     vocabulary {}",
                    vocab_path.display()
                )));
            }
        }
        if let Some(first) = line_of_merge.insert((left, right), number) {
            return Err(invalid(format!("the merge {line:?} repeats line {first}")));
        }
        merges.push((left, right));
    }
    Ok(merges)
}

/// The entries of a JSON object in file order. Deserialization fails on a
/// value that is not an object and on a repeated key, which
/// `serde_json::Value` would silently overwrite.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object that maps each token to its id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        while let Some((token, id)) = map.next_entry::<String, Value>()? {
            if !seen.insert(token.clone()) {
                return Err(A::Error::custom(format!("token {token:?} appears twice")));
            }
            entries.push((token, id));
        }
        Ok(Entries(entries))
    }
}
