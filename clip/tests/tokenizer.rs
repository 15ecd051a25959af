//! CLIP's tokenizer built from OpenAI's real `bpe_simple_vocab_16e6.txt.gz`
//! (the PyPI package openai-clip), against the ids of openai-clip's
//! `clip.tokenize(text, truncate=True)` and the `tokenizer.json` of
//! transformers 5.25 (`reference/clip_tokenizer.py` wrote the fixture);
//! rows, truncation and padding; and the rejection of bad arguments and
//! malformed vocabulary files.
//!
//! The one known difference from openai-clip: its ftfy repairs mojibake
//! (UTF-8 text decoded as Windows-1252 or Latin-1, as in `cafÃ©`), which
//! this tokenizer leaves as written. For those texts the fixture holds the
//! ids openai-clip gives with that repair turned off, and
//! `mojibake_is_left_as_written` checks them apart from the others.
//!
//! Needs the data packages: `bash scripts/setup.sh`.

use clip::tokenizer::{Tokenizer, PADDING_ID};
use common::tokenizer::{clip_from_vocab, END_OF_TEXT, START_OF_TEXT};
use common::{paths, Error};
use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::Kind;

const CONTEXT_LENGTH: usize = 77;
const START_ID: i64 = 49406;
const END_ID: i64 = 49407;

#[derive(Deserialize)]
struct Fixture {
    context_length: usize,
    vocab_size: usize,
    vocab_sample: std::collections::BTreeMap<String, String>,
    first_merges: Vec<(String, String)>,
    last_merges: Vec<(String, String)>,
    transformers_tokenizer_json: Value,
    transformers_tokenizer_config: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    /// openai-clip's row up to its last `<|endoftext|>`; zeros follow.
    openai: Vec<i64>,
    truncated: bool,
    transformers: Vec<i64>,
    agree: bool,
    /// openai-clip's row with ftfy's mojibake repair turned off, for the
    /// texts that this repair changes.
    openai_without_fix_encoding: Option<Vec<i64>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn vocab_gz() -> PathBuf {
    paths::CLIP_VOCAB.find().unwrap_or_else(|e| panic!("{e}"))
}

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::from_vocab(&vocab_gz(), CONTEXT_LENGTH).unwrap())
}

/// Pads a trimmed row of the fixture with zeros to the context length.
fn padded(ids: &[i64]) -> Vec<i64> {
    let mut row = ids.to_vec();
    row.resize(CONTEXT_LENGTH, 0);
    row
}

/// Returns the rows of an id tensor.
fn rows(ids: &tch::Tensor) -> Vec<Vec<i64>> {
    let size = ids.size();
    let flat = Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap();
    flat.chunks(size[1] as usize).map(<[i64]>::to_vec).collect()
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
fn ids_match_openai_clip() {
    let cases: Vec<&Case> = fixture()
        .cases
        .iter()
        .filter(|c| c.openai_without_fix_encoding.is_none())
        .collect();
    assert!(cases.len() >= 40, "only {} fixture texts", cases.len());
    for case in cases {
        let encoded = tokenizer().encode_batch(&[&case.text]).unwrap();
        assert_eq!(
            rows(&encoded.ids)[0],
            padded(&case.openai),
            "{}",
            preview(&case.text)
        );
        assert_eq!(
            encoded.truncated,
            [case.truncated],
            "{}",
            preview(&case.text)
        );
    }
}

#[test]
fn batch_equals_one_by_one() {
    let cases = &fixture().cases;
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let encoded = tokenizer().encode_batch(&texts).unwrap();
    assert_eq!(
        encoded.ids.size(),
        [texts.len() as i64, CONTEXT_LENGTH as i64]
    );
    assert_eq!(encoded.ids.kind(), Kind::Int64);
    let rows = rows(&encoded.ids);
    for (i, case) in cases.iter().enumerate() {
        let expected = case
            .openai_without_fix_encoding
            .as_ref()
            .unwrap_or(&case.openai);
        assert_eq!(rows[i], padded(expected), "{}", preview(&case.text));
        assert_eq!(
            encoded.truncated[i],
            case.truncated,
            "{}",
            preview(&case.text)
        );
    }
}

/// ftfy's `fix_encoding` repairs mojibake heuristically and is not ported:
/// these texts keep their mojibake, so the ids are openai-clip's with that
/// repair turned off and differ from its real ones.
#[test]
fn mojibake_is_left_as_written() {
    let cases: Vec<&Case> = fixture()
        .cases
        .iter()
        .filter(|c| c.openai_without_fix_encoding.is_some())
        .collect();
    assert!(cases.len() >= 3, "only {} mojibake texts", cases.len());
    for case in cases {
        let expected = case.openai_without_fix_encoding.as_ref().unwrap();
        let encoded = tokenizer().encode_batch(&[&case.text]).unwrap();
        let row = &rows(&encoded.ids)[0];
        assert_eq!(row, &padded(expected), "{}", preview(&case.text));
        assert_ne!(row, &padded(&case.openai), "{}", preview(&case.text));
    }
}

/// Where openai-clip and transformers disagree, the text needs openai-clip's
/// cleaning (ftfy, HTML entities) or its lowercasing (a final sigma); the
/// fixture's `agree` flag is what the ids say.
#[test]
fn fixture_records_where_references_disagree() {
    let cases = &fixture().cases;
    for case in cases {
        assert_eq!(
            case.agree,
            case.openai == case.transformers,
            "{}",
            preview(&case.text)
        );
    }
    let disagree = cases.iter().filter(|c| !c.agree).count();
    assert!(
        disagree > 0 && disagree < cases.len(),
        "{disagree} disagreements"
    );
    // Plain text is the same either way.
    let plain = cases
        .iter()
        .find(|c| c.text == "a photo of a cat.")
        .unwrap();
    assert!(plain.agree);
    assert_eq!(
        plain.openai,
        [START_ID, 320, 1125, 539, 320, 2368, 269, END_ID]
    );
}

#[test]
fn tokenizer_json_matches_transformers() {
    let fixture = fixture();
    let (mut tokenizer_json, config) = clip_from_vocab(&vocab_gz()).unwrap();
    let model = tokenizer_json["model"].as_object_mut().unwrap();
    let vocab = model.remove("vocab").unwrap();
    let merges = model.remove("merges").unwrap();
    assert_eq!(tokenizer_json, fixture.transformers_tokenizer_json);

    let vocab = vocab.as_object().unwrap();
    assert_eq!(vocab.len(), fixture.vocab_size);
    for (id, token) in &fixture.vocab_sample {
        assert_eq!(vocab[token], id.parse::<u64>().unwrap(), "{token:?}");
    }
    let merges: Vec<(String, String)> = serde_json::from_value(merges).unwrap();
    assert_eq!(merges.len(), 48894);
    assert_eq!(merges[..3], fixture.first_merges[..]);
    assert_eq!(merges[merges.len() - 3..], fixture.last_merges[..]);

    for key in [
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "tokenizer_class",
    ] {
        assert_eq!(
            config[key], fixture.transformers_tokenizer_config[key],
            "{key}"
        );
    }
    assert_eq!(config["model_max_length"], fixture.context_length);
}

#[test]
fn special_tokens_and_context() {
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.start_of_text_id(), START_ID);
    assert_eq!(tokenizer.end_of_text_id(), END_ID);
    assert_eq!(tokenizer.context_length(), CONTEXT_LENGTH);
    assert_eq!(tokenizer.inner().vocab_size(), 49408);
    assert_eq!(
        tokenizer.inner().token_id(START_OF_TEXT),
        Some(START_ID as u32)
    );
    assert_eq!(tokenizer.inner().token_id(END_OF_TEXT), Some(END_ID as u32));
    // Without the row: the tokens alone, not truncated.
    let ids = tokenizer.encode(&"word ".repeat(100)).unwrap();
    assert_eq!(ids.len(), 100);
}

#[test]
fn rows_are_padded_with_zeros_after_end_of_text() {
    assert_eq!(PADDING_ID, 0);
    let encoded = tokenizer().encode_batch(&["a photo of a dog", ""]).unwrap();
    let rows = rows(&encoded.ids);
    assert_eq!(rows[0][..7], [START_ID, 320, 1125, 539, 320, 1929, END_ID]);
    assert!(rows[0][7..].iter().all(|&id| id == PADDING_ID));
    assert_eq!(rows[1][..2], [START_ID, END_ID]);
    assert!(rows[1][2..].iter().all(|&id| id == PADDING_ID));
    assert_eq!(encoded.truncated, [false, false]);
}

#[test]
fn truncation_keeps_end_of_text_last() {
    let a = 320; // "a</w>"
    let fits = "a ".repeat(CONTEXT_LENGTH - 2);
    let too_long = "a ".repeat(CONTEXT_LENGTH - 1);
    let encoded = tokenizer().encode_batch(&[&fits, &too_long]).unwrap();
    assert_eq!(encoded.truncated, [false, true]);
    for row in rows(&encoded.ids) {
        assert_eq!(row.len(), CONTEXT_LENGTH);
        assert_eq!(row[0], START_ID);
        assert!(row[1..CONTEXT_LENGTH - 1].iter().all(|&id| id == a));
        assert_eq!(row[CONTEXT_LENGTH - 1], END_ID);
    }
}

#[test]
fn shortest_context_holds_start_and_end() {
    let tokenizer = Tokenizer::from_vocab(&vocab_gz(), 2).unwrap();
    assert_eq!(tokenizer.context_length(), 2);
    let encoded = tokenizer.encode_batch(&["a photo", ""]).unwrap();
    assert_eq!(rows(&encoded.ids), [[START_ID, END_ID], [START_ID, END_ID]]);
    assert_eq!(encoded.truncated, [true, false]);
}

#[test]
fn save_and_from_dir_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    tokenizer().save(dir.path()).unwrap();
    let loaded = Tokenizer::from_dir(dir.path(), CONTEXT_LENGTH).unwrap();
    assert_eq!(
        loaded.inner().special_token("bos_token").as_deref(),
        Some(START_OF_TEXT)
    );
    let texts: Vec<&str> = fixture().cases.iter().map(|c| c.text.as_str()).collect();
    let expected = tokenizer().encode_batch(&texts).unwrap();
    let found = loaded.encode_batch(&texts).unwrap();
    assert_eq!(rows(&found.ids), rows(&expected.ids));
    assert_eq!(found.truncated, expected.truncated);
}

#[test]
fn empty_batch_is_error() {
    let err = tokenizer().encode_batch(&[]).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("no texts"), "{err}");
}

#[test]
fn context_shorter_than_two_is_error() {
    let dir = tempfile::tempdir().unwrap();
    tokenizer().save(dir.path()).unwrap();
    for length in [0, 1] {
        for err in [
            Tokenizer::from_vocab(&vocab_gz(), length).unwrap_err(),
            Tokenizer::from_dir(dir.path(), length).unwrap_err(),
        ] {
            let message = err.to_string();
            assert!(
                message.contains(&format!("context length {length}")),
                "{message}"
            );
            assert!(message.contains("at least 2"), "{message}");
        }
    }
}

#[test]
fn context_longer_than_the_limit_is_error() {
    let err = Tokenizer::from_vocab(&vocab_gz(), 1 << 40).unwrap_err();
    assert!(err.to_string().contains("is too long"), "{err}");
}

#[test]
fn from_dir_without_tokenizer_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path(), CONTEXT_LENGTH).unwrap_err();
    let path = dir.path().join("tokenizer.json");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn from_dir_of_another_tokenizer_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = common::tokenizer::char_level(&["ab"]).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
    let err = Tokenizer::from_dir(dir.path(), CONTEXT_LENGTH).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("not a CLIP tokenizer"), "{message}");
    assert!(message.contains("<|startoftext|>"), "{message}");
}

// Malformed vocabulary files.

/// Returns the text of the real vocabulary file.
fn real_text() -> String {
    let bytes = std::fs::read(vocab_gz()).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Returns the real text with line `number` (1-based) replaced.
fn with_line(number: usize, line: &str) -> Vec<u8> {
    let text = real_text();
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines[number - 1] = line;
    gzip(lines.join("\n").as_bytes())
}

/// Builds a tokenizer from `bytes` written to a file, and returns the
/// error, which must be a format error that names the file and contains
/// every one of `expected`.
fn vocab_error(bytes: &[u8], expected: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.txt.gz");
    std::fs::write(&path, bytes).unwrap();
    let err = Tokenizer::from_vocab(&path, CONTEXT_LENGTH).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }),
        "expected a format error, got {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} does not name {}",
        path.display()
    );
    assert!(
        message.contains("invalid CLIP BPE vocabulary file"),
        "{message}"
    );
    for text in expected {
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    message
}

#[test]
fn vocab_not_gzip() {
    vocab_error(b"#version: 0.2\ni n\n", &["not gzip"]);
    vocab_error(b"", &["not gzip"]);
}

#[test]
fn vocab_decompressing_to_gigabytes_is_rejected() {
    let zeros = vec![0u8; 65 << 20];
    vocab_error(&gzip(&zeros), &["more than 64 MiB"]);
}

#[test]
fn vocab_truncated_gzip() {
    let bytes = std::fs::read(vocab_gz()).unwrap();
    vocab_error(&bytes[..bytes.len() / 2], &["truncated or corrupt"]);
    vocab_error(&bytes[..bytes.len() - 4], &["truncated or corrupt"]);
}

#[test]
fn vocab_not_utf8() {
    vocab_error(
        &gzip(b"header\ni n\n\xff\xfe t\n"),
        &["line 3", "not UTF-8"],
    );
}

#[test]
fn vocab_too_few_merges() {
    vocab_error(
        &gzip(b"#version: 0.2\ni n\nt h\n"),
        &["followed by 2 lines", "CLIP uses 48894 merges"],
    );
    let text = real_text();
    let lines: Vec<&str> = text.split('\n').take(48894).collect();
    vocab_error(
        &gzip(format!("{}\n", lines.join("\n")).as_bytes()),
        &["followed by 48893 lines"],
    );
}

#[test]
fn vocab_merge_not_two_tokens() {
    for (number, line) in [
        (1001, "abc"),
        (2, "i n x"),
        (48895, ""),
        (7, "i  n"),
        (9, " i n"),
    ] {
        vocab_error(
            &with_line(number, line),
            &[
                &format!("line {number}: expected a merge"),
                &format!("{line:?}"),
            ],
        );
    }
}

#[test]
fn vocab_merge_with_unknown_token() {
    vocab_error(&with_line(50, "☃ x"), &["line 50", "needs the token \"☃\""]);
}

#[test]
fn vocab_merge_repeated() {
    // Line 2 is the first merge, "i n".
    vocab_error(
        &with_line(3, "i n"),
        &["line 3", "\"in\"", "the merge on line 2 already makes"],
    );
    vocab_error(
        &with_line(3, "i </w>"),
        &["line 3", "\"i</w>\"", "the byte alphabet already makes"],
    );
}

#[test]
fn vocab_lines_past_the_merges_are_ignored() {
    // openai-clip reads only the first 48894 merges; the real file has more.
    let text = real_text();
    assert!(text.split('\n').count() > 48895 + 1000);
    let bytes = with_line(48896, "not a merge at all");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.txt.gz");
    std::fs::write(&path, bytes).unwrap();
    let tokenizer = Tokenizer::from_vocab(&path, CONTEXT_LENGTH).unwrap();
    assert_eq!(tokenizer.inner().vocab_size(), 49408);
}

#[test]
fn vocab_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.txt.gz");
    let err = Tokenizer::from_vocab(&absent, CONTEXT_LENGTH).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&absent.display().to_string()),
        "{err}"
    );
}
