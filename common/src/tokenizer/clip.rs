//! CLIP's tokenizer from the file OpenAI published with the model:
//! `bpe_simple_vocab_16e6.txt.gz`, the merges of a byte-level BPE with
//! end-of-word tokens, from which the vocabulary is derived.
//!
//! The vocabulary is built as openai-clip's `clip/simple_tokenizer.py`
//! builds it, and the result is what transformers 5.25 builds for
//! `CLIPTokenizer` (`CLIPTokenizerFast` is the same class there). The text
//! is normalized (NFC, whitespace runs to one space, lowercase) and split
//! into words, numbers (one digit each) and runs of other symbols, with the
//! whitespace dropped. Each piece is spelled in the byte alphabet and
//! merged, with `</w>` marking its last character, and `<|startoftext|>`
//! and `<|endoftext|>` wrap each sequence.
//!
//! openai-clip also cleans the text before all that (ftfy and HTML
//! unescaping), which `tokenizer.json` cannot express: the `clip` crate's
//! tokenizer does it.

use super::bpe::{bytes_to_unicode, AddedToken, ByteLevelBpe, Normalizer, Split, Wrap};
use super::chars::END_OF_TEXT;
use crate::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The token that starts every sequence.
pub const START_OF_TEXT: &str = "<|startoftext|>";

/// CLIP's context length: every published CLIP text encoder has 77
/// positions.
const CLIP_CONTEXT_LENGTH: usize = 77;

/// The number of merges that CLIP uses, the first ones of the file:
/// `49152 - 256 - 2` in `simple_tokenizer.py`, so that with the 512 byte
/// tokens and the two special tokens the vocabulary has 49408 tokens.
const MERGES: usize = 49152 - 256 - 2;

/// The suffix that marks a token as the end of a word.
const END_OF_WORD: &str = "</w>";

/// The split of `simple_tokenizer.py` (and of transformers'
/// `CLIPTokenizer`): the special tokens, English contractions, runs of
/// letters, single digits and runs of other non-space characters.
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const FORMAT: &str = "CLIP BPE vocabulary";

/// Builds `(tokenizer.json, tokenizer_config.json)` from CLIP's
/// `bpe_simple_vocab_16e6.txt.gz`.
///
/// The file is gzip-compressed UTF-8 text. Its first line is a header and
/// is skipped; lines 2 to 48895 are the merges CLIP uses, in priority
/// order, each two tokens separated by one space; later lines are ignored,
/// as openai-clip ignores them. The vocabulary is the 256 characters of
/// the byte alphabet in code point order, the same 256 with `</w>`, the
/// result of each merge, `<|startoftext|>` and `<|endoftext|>`: 49408
/// tokens, ids in that order.
///
/// Errors name the file, and the line where one is at fault: a file that
/// is not gzip or is truncated, text that is not UTF-8, too few merge
/// lines, a line that is not two tokens, a merge whose parts are not in
/// the vocabulary, or two merges with the same result.
pub fn clip_from_vocab(bpe_gz: &Path) -> Result<(Value, Value)> {
    let text = read_gzip_text(bpe_gz)?;
    let lines: Vec<&str> = text.split('\n').collect();
    // The lines after the header, not counting the empty end of a final
    // line break.
    let found = lines.len() - 1 - usize::from(text.ends_with('\n'));
    if found < MERGES {
        return Err(Error::format(
            bpe_gz,
            FORMAT,
            format!(
                "the header line is followed by {found} lines, but CLIP uses {MERGES} \
                 merges, one a line"
            ),
        ));
    }

    let mut merges = Vec::with_capacity(MERGES);
    // The vocabulary in id order, and the line that added each merged token.
    let mut tokens: Vec<String> = Vec::with_capacity(2 * 256 + MERGES + 2);
    let mut alphabet: Vec<char> = bytes_to_unicode().to_vec();
    // `simple_tokenizer.py` lists the printable bytes first, then the
    // others. The first set maps to itself and the second to code points
    // from U+0100 up, both in increasing order, so the list is sorted.
    alphabet.sort_unstable();
    tokens.extend(alphabet.iter().map(char::to_string));
    tokens.extend(alphabet.iter().map(|c| format!("{c}{END_OF_WORD}")));
    let mut id_of: HashMap<String, usize> = HashMap::new();
    let mut line_of_token: HashMap<usize, usize> = HashMap::new();
    for (id, token) in tokens.iter().enumerate() {
        id_of.insert(token.clone(), id);
    }

    for (index, line) in lines.iter().enumerate().skip(1).take(MERGES) {
        let number = index + 1;
        let invalid =
            |message: String| Error::format(bpe_gz, FORMAT, format!("line {number}: {message}"));
        let (left, right) = match line.split(' ').collect::<Vec<_>>()[..] {
            [left, right] if !left.is_empty() && !right.is_empty() => (left, right),
            _ => {
                return Err(invalid(format!(
                    "expected a merge, two tokens separated by one space, found {line:?}"
                )))
            }
        };
        let merged = format!("{left}{right}");
        let id = tokens.len();
        if let Some(&other) = id_of.get(&merged) {
            let origin = match line_of_token.get(&other) {
                Some(first) => format!("the merge on line {first}"),
                None => "the byte alphabet".to_string(),
            };
            return Err(invalid(format!(
                "the merge {line:?} makes the token {merged:?}, which {origin} already makes"
            )));
        }
        id_of.insert(merged.clone(), id);
        line_of_token.insert(id, number);
        tokens.push(merged);
        merges.push((left, right));
    }

    // A merge of tokens outside the vocabulary could never apply, and the
    // `tokenizers` library refuses to load it.
    for (index, (left, right)) in merges.iter().enumerate() {
        for part in [left, right] {
            if !id_of.contains_key(*part) {
                let number = index + 2;
                return Err(Error::format(
                    bpe_gz,
                    FORMAT,
                    format!(
                        "line {number}: the merge \"{left} {right}\" needs the token {part:?}, \
                         which is neither in the byte alphabet nor made by a merge"
                    ),
                ));
            }
        }
    }

    let start_id = tokens.len();
    let end_id = start_id + 1;
    tokens.push(START_OF_TEXT.to_string());
    tokens.push(END_OF_TEXT.to_string());
    let vocab: Map<String, Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| (token, json!(id)))
        .collect();

    let tokenizer = ByteLevelBpe {
        vocab,
        merges,
        added_tokens: vec![
            AddedToken {
                id: start_id,
                content: START_OF_TEXT,
                special: true,
            },
            AddedToken {
                id: end_id,
                content: END_OF_TEXT,
                special: true,
            },
        ],
        split: Split::Matches(CLIP_SPLIT),
        bos: Some((START_OF_TEXT.to_string(), json!(start_id))),
        eos: Some((END_OF_TEXT.to_string(), json!(end_id))),
        normalizer: Normalizer::Clip,
        wrap: Wrap::Roberta,
        end_of_word_suffix: END_OF_WORD,
        unk_token: Some(END_OF_TEXT),
    }
    .to_json();

    // The keys that transformers 5.25 saves for CLIPTokenizer, less its
    // loader bookkeeping (`backend`, `is_local`, `local_files_only`), and
    // CLIP's context length in place of transformers' default of no limit.
    let config = json!({
        "bos_token": START_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "model_max_length": CLIP_CONTEXT_LENGTH,
        "tokenizer_class": "CLIPTokenizer",
    });
    Ok((tokenizer, config))
}

/// Reads a gzip file (one or more members, as Python's `gzip` reads it) as
/// UTF-8 text.
/// The largest decompressed vocabulary accepted, in bytes. OpenAI's file
/// is 1.36 MB, so this leaves ample room and stops a small file that
/// decompresses to gigabytes.
const MAX_TEXT_BYTES: u64 = 64 << 20;

fn read_gzip_text(path: &Path) -> Result<String> {
    let compressed = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let invalid = |message: String| Error::format(path, FORMAT, message);
    if !compressed.starts_with(&[0x1f, 0x8b]) {
        return Err(invalid(
            "not gzip data: a gzip file starts with the bytes 1f 8b".to_string(),
        ));
    }
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed.as_slice())
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("the gzip data is truncated or corrupt: {e}")))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "it decompresses to more than {} MiB, far more than a CLIP vocabulary:              pass bpe_simple_vocab_16e6.txt.gz of the openai-clip package",
            MAX_TEXT_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        invalid(format!("line {line}: the text is not UTF-8"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_size_adds_up() {
        assert_eq!(2 * 256 + MERGES + 2, 49408);
    }
}
