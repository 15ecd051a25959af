//! The `tokenizer.json` of a byte-level BPE tokenizer, the scheme of GPT-2.
//!
//! Text is split by a regular expression, each piece is spelled as its UTF-8
//! bytes mapped to printable characters ([`bytes_to_unicode`]), and BPE
//! merges those characters into tokens. The JSON has the layout that
//! `tokenizers` serializes. For GPT-2 and CLIP it equals what transformers
//! 5.25 saves.

use serde_json::{json, Map, Value};

/// Returns the GPT-2 map from bytes to the printable characters that
/// byte-level BPE vocabularies are written in.
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

/// A token that is matched in the text before the split and BPE.
pub(crate) struct AddedToken<'a> {
    pub id: usize,
    pub content: &'a str,
    /// Whether it is a control token such as `<|endoftext|>`, which
    /// `decode(..., skip_special_tokens = true)` drops. Other added tokens
    /// are matched in the normalized text.
    pub special: bool,
}

/// The split of the text before byte-level encoding.
pub(crate) enum Split {
    /// GPT-2's split (contractions, letters, digits, other symbols and
    /// whitespace), built into the `ByteLevel` pre-tokenizer.
    Gpt2,
    /// A regular expression whose matches become pieces, followed by a
    /// `ByteLevel` pre-tokenizer that does not split again.
    Regex(&'static str),
    /// A regular expression whose matches become pieces while the text
    /// between them is dropped, followed by a `ByteLevel` pre-tokenizer with
    /// GPT-2's split (CLIP's pieces come out of it whole). Transformers
    /// builds CLIP's tokenizer so.
    Matches(&'static str),
}

/// The normalization of the text before the split.
pub(crate) enum Normalizer {
    /// The text is left as it is (GPT-2, Llama 3).
    None,
    /// CLIP's: NFC, each run of whitespace to one space, lowercase.
    Clip,
}

/// How the post-processor puts `bos` and `eos` around a sequence.
pub(crate) enum Wrap {
    /// `TemplateProcessing`: `bos` and `eos` where given; a pair is the
    /// single template followed by the second sequence.
    Template,
    /// `RobertaProcessing`, which needs both: `bos A eos`, and
    /// `bos A eos eos B eos` for a pair. Transformers uses it for CLIP.
    Roberta,
}

/// A byte-level BPE tokenizer, the parts that differ between vocabularies.
pub(crate) struct ByteLevelBpe<'a> {
    /// Tokens spelled in the byte alphabet, with their ids.
    pub vocab: Map<String, Value>,
    /// Pairs of tokens in the order they merge, the first merging first.
    pub merges: Vec<(&'a str, &'a str)>,
    pub added_tokens: Vec<AddedToken<'a>>,
    pub split: Split,
    /// The token and id that the post-processor puts before each sequence.
    pub bos: Option<(String, Value)>,
    /// The token and id that the post-processor puts after each sequence.
    pub eos: Option<(String, Value)>,
    pub normalizer: Normalizer,
    pub wrap: Wrap,
    /// Appended to the last character of each piece before the merges, so
    /// that a token can mark the end of a word (`</w>` in CLIP, empty in
    /// GPT-2).
    pub end_of_word_suffix: &'static str,
    /// The token that stands for a character outside the vocabulary. A
    /// byte-level vocabulary has none, but CLIP names one.
    pub unk_token: Option<&'a str>,
}

impl ByteLevelBpe<'_> {
    /// Builds the `tokenizer.json` value.
    pub(crate) fn to_json(&self) -> Value {
        let added: Vec<Value> = self
            .added_tokens
            .iter()
            .map(|token| {
                json!({
                    "id": token.id, "content": token.content, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": !token.special,
                    "special": token.special,
                })
            })
            .collect();
        let merges: Vec<Value> = self.merges.iter().map(|(a, b)| json!([a, b])).collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": self.normalizer(),
            "pre_tokenizer": self.pre_tokenizer(),
            "post_processor": self.post_processor(),
            "decoder": {
                "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                "use_regex": true,
            },
            "model": {
                "type": "BPE", "dropout": null, "unk_token": self.unk_token,
                "continuing_subword_prefix": "", "end_of_word_suffix": self.end_of_word_suffix,
                "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": self.vocab, "merges": merges,
            },
        })
    }

    fn normalizer(&self) -> Value {
        match self.normalizer {
            Normalizer::None => Value::Null,
            Normalizer::Clip => json!({
                "type": "Sequence",
                "normalizers": [
                    {"type": "NFC"},
                    {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                    {"type": "Lowercase"},
                ],
            }),
        }
    }

    fn pre_tokenizer(&self) -> Value {
        match self.split {
            Split::Gpt2 => json!({
                "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                "use_regex": true,
            }),
            Split::Regex(pattern) => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                        "invert": false,
                    },
                    {
                        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": false,
                    },
                ],
            }),
            Split::Matches(pattern) => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed",
                        "invert": true,
                    },
                    {
                        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": true,
                    },
                ],
            }),
        }
    }

    /// Builds the post-processor that [`Wrap`] names.
    fn post_processor(&self) -> Value {
        match (&self.wrap, &self.bos, &self.eos) {
            (Wrap::Roberta, Some((bos, bos_id)), Some((eos, eos_id))) => json!({
                "type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [bos, bos_id],
                "trim_offsets": false, "add_prefix_space": false,
            }),
            (Wrap::Roberta, _, _) => panic!("RobertaProcessing needs both bos and eos"),
            (Wrap::Template, _, _) => self.template_processing(),
        }
    }

    /// Builds a `TemplateProcessing` that adds `bos` and `eos` around a
    /// single sequence. A pair is the single template followed by the
    /// second sequence.
    fn template_processing(&self) -> Value {
        let mut single = Vec::new();
        let mut special_tokens = Map::new();
        for (name, id) in self.bos.iter().chain(&self.eos) {
            special_tokens.insert(
                name.clone(),
                json!({"id": name, "ids": [id], "tokens": [name]}),
            );
        }
        let special_piece = |name: &str| json!({"SpecialToken": {"id": name, "type_id": 0}});
        if let Some((name, _)) = &self.bos {
            single.push(special_piece(name));
        }
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        if let Some((name, _)) = &self.eos {
            single.push(special_piece(name));
        }
        let mut pair = single.clone();
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        json!({
            "type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": special_tokens,
        })
    }
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
