//! `cargo xtask convert torch`: a `torch.save` file becomes a safetensors
//! file with the same tensors, and a file that names a function to call is
//! rejected with status 1 and no output, never run.
//!
//! Uses the fixtures of the `common` crate, written by
//! `reference/torch_files.py`.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, assert_success, stderr, xtask};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../common/tests/fixtures/torch")
        .join(name)
}

fn convert_torch(input: &Path, output: &Path) -> Output {
    xtask([
        OsStr::new("convert"),
        OsStr::new("torch"),
        input.as_os_str(),
        output.as_os_str(),
    ])
}

#[test]
fn module_to_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weights").join("module");
    let output = convert_torch(&fixture("module.pt"), &out);
    assert_success(&output);

    let written = out.join("module.safetensors");
    let line = format!("wrote {} (6 tensors)", written.display());
    let stderr = stderr(&output);
    assert!(stderr.contains(&line), "stderr lacks {line:?}:\n{stderr}");

    let tensors = common::checkpoint::read(&written).unwrap();
    let expected = common::checkpoint::read(&fixture("module.safetensors")).unwrap();
    let names: Vec<&String> = tensors.keys().collect();
    assert_eq!(names, expected.keys().collect::<Vec<_>>());
    for (name, tensor) in &tensors {
        let want = &expected[name];
        assert_eq!(tensor.kind(), want.kind(), "dtype of {name}");
        assert_eq!(tensor.size(), want.size(), "shape of {name}");
        assert!(tensor.equal(want), "values of {name}");
    }
}

#[test]
fn dotted_stem_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("encoder.v2.pkl");
    std::fs::copy(fixture("dall_e_block.pt"), &input).unwrap();
    let out = dir.path().join("out");
    assert_success(&convert_torch(&input, &out));
    assert!(out.join("encoder.v2.safetensors").is_file());
}

#[test]
fn existing_output_kept() {
    let dir = tempfile::tempdir().unwrap();
    let existing = dir.path().join("module.safetensors");
    std::fs::write(&existing, b"keep").unwrap();
    let output = convert_torch(&fixture("module.pt"), dir.path());
    assert_error(
        &output,
        &[
            &existing.display().to_string(),
            "already exists",
            "remove it",
        ],
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
}

#[test]
fn hostile_pickle_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = fixture("reduce_os_system.pt");
    let output = convert_torch(&input, &out);
    assert_error(
        &output,
        &[
            &input.display().to_string(),
            "rejected the global os.system",
        ],
    );
    assert!(!out.exists(), "a rejected file created {}", out.display());
}

#[test]
fn hostile_pickle_leaves_existing_dir_empty() {
    let dir = tempfile::tempdir().unwrap();
    let output = convert_torch(&fixture("stack_global_os_system.pt"), dir.path());
    assert_error(&output, &["rejected the global os.system"]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn legacy_format_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = convert_torch(&fixture("legacy.pt"), &dir.path().join("out"));
    assert_error(&output, &["legacy torch.save format"]);
}

#[test]
fn missing_input() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.pt");
    let out = dir.path().join("out");
    let output = convert_torch(&absent, &out);
    assert_error(&output, &[&absent.display().to_string()]);
    assert!(
        !out.exists(),
        "a failed conversion created {}",
        out.display()
    );
}
