//! Bad input to the `xtask` binary: every case must exit with status 1 and
//! print an error that names the value at fault, never a panic (status 101)
//! or a libtorch abort (a signal).

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, xtask};

fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny.gguf")
}

fn tiny_gguf_bytes() -> Vec<u8> {
    std::fs::read(tiny_gguf()).unwrap()
}

fn convert(input: &Path, output: &Path) -> Output {
    xtask([
        OsStr::new("convert"),
        OsStr::new("gguf"),
        input.as_os_str(),
        output.as_os_str(),
    ])
}

/// Converts tiny.gguf into `dir/tiny`, a model directory with a tokenizer.
fn convert_tiny(dir: &Path) -> PathBuf {
    let model = dir.join("tiny");
    let output = convert(&tiny_gguf(), &model);
    assert!(
        output.status.success(),
        "conversion of tiny.gguf failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    model
}

/// Runs `generate` on the CPU with `model` and the extra arguments.
fn generate(model: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        OsStr::new("generate"),
        OsStr::new("--device"),
        OsStr::new("cpu"),
        OsStr::new("--model"),
        model.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    xtask(all)
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

/// Returns the byte offset of a GGUF string (u64 length, then the bytes).
fn gguf_string_offset(bytes: &[u8], text: &str) -> usize {
    let mut encoded = (text.len() as u64).to_le_bytes().to_vec();
    encoded.extend_from_slice(text.as_bytes());
    find(bytes, &encoded)
}

/// Returns the byte offset of the type field in the info of tensor `name`:
/// after the name, the u32 dimension count and a u64 per dimension.
fn tensor_type_offset(bytes: &[u8], name: &str) -> usize {
    let dims_at = gguf_string_offset(bytes, name) + 8 + name.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap());
    dims_at + 4 + 8 * n_dims as usize
}

/// Returns tiny.gguf with the ggml type id of tensor `name` replaced.
fn tiny_gguf_with_type(name: &str, type_id: u32) -> Vec<u8> {
    let mut bytes = tiny_gguf_bytes();
    let at = tensor_type_offset(&bytes, name);
    bytes[at..at + 4].copy_from_slice(&type_id.to_le_bytes());
    bytes
}

fn partial_dir(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap().to_string_lossy();
    output.with_file_name(format!(".{name}.partial"))
}

fn assert_no_output(output: &Path) {
    assert!(!output.exists(), "{} exists", output.display());
    let partial = partial_dir(output);
    assert!(!partial.exists(), "{} exists", partial.display());
}

#[test]
fn convert_truncated_header() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "cut_header.gguf", &tiny_gguf_bytes()[..3000]);
    let output = convert(&input, &dir.path().join("out"));
    assert_error(&output, &["cut_header.gguf", "truncated"]);
}

#[test]
fn convert_truncated_tensor_data() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_gguf_bytes();
    // output.weight is the last tensor, so only its data is cut.
    let input = write_file(dir.path(), "cut_data.gguf", &bytes[..bytes.len() - 1000]);
    let out = dir.path().join("out");
    let output = convert(&input, &out);
    assert_error(
        &output,
        &["cut_data.gguf", "output.weight", "past the end of the file"],
    );
    assert_no_output(&out);
}

#[test]
fn convert_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = tiny_gguf_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let input = write_file(dir.path(), "bad_magic.gguf", &bytes);
    let output = convert(&input, &dir.path().join("out"));
    assert_error(&output, &["bad_magic.gguf", "GGML", "not a GGUF file"]);
}

#[test]
fn convert_string_length_past_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = tiny_gguf_bytes();
    // The value of general.architecture follows its key and its u32 type.
    let key = "general.architecture";
    let at = gguf_string_offset(&bytes, key) + 8 + key.len() + 4;
    let length = 1u64 << 40;
    bytes[at..at + 8].copy_from_slice(&length.to_le_bytes());
    let input = write_file(dir.path(), "long_string.gguf", &bytes);
    let output = convert(&input, &dir.path().join("out"));
    assert_error(
        &output,
        &["long_string.gguf", key, &length.to_string(), "exceeds"],
    );
}

#[test]
fn convert_unsupported_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    // 20 is IQ4_NL, which has a block layout but no dequantizer here.
    let bytes = tiny_gguf_with_type("blk.0.attn_norm.weight", 20);
    let input = write_file(dir.path(), "iq4_nl.gguf", &bytes);
    let out = dir.path().join("out");
    let output = convert(&input, &out);
    assert_error(
        &output,
        &["iq4_nl.gguf", "blk.0.attn_norm.weight", "IQ4_NL", "Q8_0"],
    );
    assert_no_output(&out);
}

#[test]
fn convert_unknown_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_gguf_with_type("blk.1.ffn_norm.weight", 99);
    let input = write_file(dir.path(), "type_99.gguf", &bytes);
    let output = convert(&input, &dir.path().join("out"));
    assert_error(
        &output,
        &[
            "type_99.gguf",
            "blk.1.ffn_norm.weight",
            "unknown type id 99",
        ],
    );
}

#[test]
fn convert_existing_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("existing");
    std::fs::create_dir(&out).unwrap();
    let existing_config = write_file(&out, "config.json", b"{}");
    let output = convert(&tiny_gguf(), &out);
    assert_error(&output, &["existing", "already exists"]);
    assert_eq!(
        std::fs::read(&existing_config).unwrap(),
        b"{}",
        "config.json changed"
    );
    let entries = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(entries, 1, "files were added to {}", out.display());
}

#[test]
fn convert_missing_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = convert(&dir.path().join("absent.gguf"), &out);
    let stderr = assert_error(&output, &["absent.gguf", "not found"]);
    assert_eq!(
        stderr.matches("absent.gguf").count(),
        1,
        "message repeated:\n{stderr}"
    );
    assert_no_output(&out);
}

#[test]
fn convert_directory_as_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model_dir");
    std::fs::create_dir(&input).unwrap();
    let output = convert(&input, &dir.path().join("out"));
    assert_error(&output, &["model_dir", "not a file"]);
}

#[test]
fn convert_failure_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = tiny_gguf_bytes();
    // The tokenizer is written last, after config.json and model.safetensors.
    let at = gguf_string_offset(&bytes, "gpt2") + 8;
    bytes[at..at + 4].copy_from_slice(b"gpt9");
    let input = write_file(dir.path(), "bad_tokenizer.gguf", &bytes);
    let out = dir.path().join("out");
    let output = convert(&input, &out);
    assert_error(
        &output,
        &["bad_tokenizer.gguf", "\"gpt9\"", "not supported"],
    );
    assert_no_output(&out);
}

#[test]
fn generate_empty_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", ""]);
    assert_error(&output, &["prompt is empty", "--prompt"]);
}

#[test]
fn generate_prompt_longer_than_context() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    // One token per byte: 100 tokens against a context of 64.
    let prompt = "a".repeat(100);
    let output = generate(&model, &["--no-chat", "--prompt", &prompt]);
    assert_error(&output, &["100 tokens", "64", "shorten the prompt"]);
}

#[test]
fn generate_dir_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("empty_model");
    std::fs::create_dir(&model).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(&output, &["empty_model", "config.json", "not found"]);
}

#[test]
fn generate_dir_without_tokenizer() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny");
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(&output, &["tokenizer.json", "not found", "convert"]);
}

#[test]
fn generate_missing_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(&output, &["no weights", "tiny", "model.safetensors"]);
}

#[test]
fn generate_truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let weights = model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(&output, &["model.safetensors", "truncated"]);
}

#[test]
fn generate_safetensors_header_past_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    // Past the end of the file but below the 100 MB limit of `safetensors`.
    let header_len = 1_000_000u64;
    bytes[..8].copy_from_slice(&header_len.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(
        &output,
        &["model.safetensors", "header length 1000000", "exceeds"],
    );
}

#[test]
fn generate_huge_safetensors_header_length() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(
        &output,
        &["model.safetensors", &u64::MAX.to_string(), "exceeds"],
    );
}

#[test]
fn generate_config_larger_than_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let config_path = model.join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["vocab_size"] = 100_000_000_000i64.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let output = generate(&model, &["--prompt", "hi"]);
    assert_error(
        &output,
        &[
            "config.json",
            "vocab_size 100000000000",
            "model.safetensors",
        ],
    );
}

#[test]
fn generate_negative_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", "hi", "--temperature", "-1"]);
    assert_error(&output, &["temperature -1 is invalid"]);
}

#[test]
fn generate_zero_top_p() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", "hi", "--top-p", "0"]);
    assert_error(&output, &["top-p 0 is invalid", "(0, 1]"]);
}

#[test]
fn generate_unknown_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = xtask([
        OsStr::new("generate"),
        OsStr::new("--device"),
        OsStr::new("tpu"),
        OsStr::new("--model"),
        model.as_os_str(),
        OsStr::new("--prompt"),
        OsStr::new("hi"),
    ]);
    assert_error(&output, &["\"tpu\"", "cpu, cuda"]);
}

#[test]
fn generate_unknown_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", "hi", "--dtype", "int8"]);
    assert_error(&output, &["\"int8\"", "f32, bf16 or f16"]);
}

#[test]
fn generate_tiny_json_record() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let args = [
        "--prompt",
        "hi",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        "--json",
    ];
    let output = generate(&model, &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "failed, stderr:\n{stderr}");
    assert_eq!(stdout.lines().count(), 1, "stdout:\n{stdout}");

    let record: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let prompt_ids = record["prompt_ids"].as_array();
    assert!(
        prompt_ids.is_some_and(|ids| !ids.is_empty()),
        "prompt_ids: {record}"
    );
    // Greedy decoding of the tiny model meets no stop token in 5 steps.
    let generated = record["generated_ids"].as_array().map(Vec::len);
    assert_eq!(generated, Some(5), "generated_ids: {record}");
    assert_eq!(record["finish_reason"], "length", "finish_reason: {record}");
    assert!(record["text"].is_string(), "text: {record}");
    for key in ["prefill_tokens_per_second", "decode_tokens_per_second"] {
        let speed = record[key].as_f64();
        assert!(speed.is_some_and(|s| s > 0.0), "{key}: {record}");
    }
}

#[test]
fn generate_zero_new_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", "hi", "--max-new-tokens", "0"]);
    assert_error(&output, &["--max-new-tokens 0 is invalid"]);
}

#[test]
fn generate_negative_threads() {
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let output = generate(&model, &["--prompt", "hi", "--threads", "-3"]);
    assert_error(&output, &["--threads -3 is invalid"]);
}

#[test]
fn generate_model_path_is_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "model.bin", b"not a directory");
    let output = xtask([
        "generate".as_ref(),
        "--model".as_ref(),
        file.as_os_str(),
        "--prompt".as_ref(),
        "hi".as_ref(),
    ]);
    assert_error(&output, &["model.bin is not a directory"]);
}

#[test]
fn generate_closed_pipe_exits_cleanly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let model = convert_tiny(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["generate", "--model"])
        .arg(&model)
        .args(["--no-chat", "--prompt", "hi", "--max-new-tokens", "40"])
        .args(["--temperature", "0", "--device", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end at once, as `| head -c 0` would.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}
