//! Running the `xtask` binary in the integration tests.

// Each test file compiles this module and uses only some of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Runs the `xtask` binary with `args` and returns its output.
pub fn xtask<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

/// Returns the standard error of `output` as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that the command of `output` succeeded, showing its stderr if
/// not.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit status {:?}, stderr:\n{}",
        output.status,
        stderr(output)
    );
}

/// Asserts that `output` is a clean failure (status 1, no panic) whose
/// stderr contains every one of `expected`, and returns stderr.
pub fn assert_error(output: &Output, expected: &[&str]) -> String {
    let stderr = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status {:?}, stderr:\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "panic, stderr:\n{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "stderr lacks {text:?}:\n{stderr}");
    }
    stderr
}
