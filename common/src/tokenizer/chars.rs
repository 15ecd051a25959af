//! Character-level tokenizers: one token per character of a corpus, plus
//! `<|endoftext|>` between documents.

use crate::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The token that separates documents.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Builds `(tokenizer.json, tokenizer_config.json)` of a character-level
/// tokenizer over the distinct characters of `texts`, in code-point order,
/// followed by [`END_OF_TEXT`]. Characters outside the corpus have no id.
pub fn char_level(texts: &[&str]) -> Result<(Value, Value)> {
    let chars: BTreeSet<char> = texts.iter().flat_map(|t| t.chars()).collect();
    if chars.is_empty() {
        return Err(Error::InvalidInput(
            "a character-level vocabulary needs at least one character of text".into(),
        ));
    }
    let mut vocab = Map::new();
    for (id, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), json!(id));
    }
    let end = chars.len();
    vocab.insert(END_OF_TEXT.into(), json!(end));
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": end, "content": END_OF_TEXT, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true,
        }],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        // A BPE model without merges splits text into its characters.
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": [],
        },
    });
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "model_max_length": 1_000_000_000_000_000_000i64,
    });
    Ok((tokenizer, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    fn tokenizer(texts: &[&str]) -> Tokenizer {
        let (json, config) = char_level(texts).unwrap();
        let raw = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        Tokenizer::new(raw, config)
    }

    #[test]
    fn one_token_per_character_and_exact_decoding() {
        let text = "To be, or not to be:\n  that is the question. Ægir é";
        let t = tokenizer(&[text]);
        let ids = t.encode(text, false).unwrap();
        assert_eq!(ids.len(), text.chars().count());
        assert_eq!(t.decode(&ids, false).unwrap(), text);
        assert_eq!(
            t.vocab_size(),
            text.chars().collect::<BTreeSet<_>>().len() + 1
        );
    }

    #[test]
    fn end_of_text_is_one_special_token() {
        let t = tokenizer(&["ab"]);
        let ids = t.encode("ab<|endoftext|>ba", false).unwrap();
        assert_eq!(ids, [0, 1, 2, 1, 0]);
        assert_eq!(t.decode(&ids, true).unwrap(), "abba");
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let err = char_level(&["", ""]).unwrap_err();
        assert!(err.to_string().contains("at least one character"), "{err}");
    }
}
