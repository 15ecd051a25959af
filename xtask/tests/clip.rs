//! `cargo xtask train clip` and `clip classify` on real digits: a short run,
//! its resume, classification of digit images, and bad input.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, assert_success, stderr, xtask};

const DIGITS: &str = "zero,one,two,three,four,five,six,seven,eight,nine";

fn train(out: &Path, steps: &str, batch: &str, extra: &[&str]) -> Output {
    let fixed = [
        "train",
        "clip",
        "--steps",
        steps,
        "--batch-size",
        batch,
        "--eval-every",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--out",
    ];
    let mut args: Vec<&OsStr> = fixed.iter().map(OsStr::new).collect();
    args.push(out.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    xtask(args)
}

fn classify(model: &Path, images: &[&Path], extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("clip"), OsStr::new("classify")];
    args.extend(images.iter().map(|p| p.as_os_str()));
    args.extend([OsStr::new("--model"), model.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    xtask(args)
}

/// Writes the first MNIST digit `digit` to `dir/digit.png`.
fn digit_png(dir: &Path, digit: usize) -> PathBuf {
    let (_, eval) = common::mnist::load(0.1).unwrap();
    let labels = Vec::<i64>::try_from(&eval.labels).unwrap();
    let index = labels.iter().position(|&l| l == digit as i64).unwrap();
    let path = dir.join(format!("digit{digit}.png"));
    common::image::save(&path, &eval.images.get(index as i64).unsqueeze(0)).unwrap();
    path
}

#[test]
fn train_resume_and_classify() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = train(&out, "2", "16", &[]);
    assert_success(&first);
    assert!(
        stderr(&first).contains("zero-shot accuracy"),
        "{}",
        stderr(&first)
    );
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    let again = train(&out, "4", "16", &[]);
    assert_error(&again, &["--resume"]);
    let changed = train(&out, "4", "16", &["--resume", "--max-shift", "0"]);
    assert_error(&changed, &["--max-shift 0", "the 2 of the run"]);
    let resumed = train(&out, "4", "16", &["--resume"]);
    assert_success(&resumed);
    assert!(
        stderr(&resumed).contains("after 4 steps"),
        "{}",
        stderr(&resumed)
    );

    let seven = digit_png(dir.path(), 7);
    let three = digit_png(dir.path(), 3);
    let output = classify(&out, &[&seven, &three], &["--labels", DIGITS]);
    assert_success(&output);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 * 11, "{stdout}");
    assert_eq!(lines[0], seven.display().to_string());
    let total: f64 = lines[1..11]
        .iter()
        .map(|line| {
            line.split_whitespace()
                .last()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert!((total - 1.0).abs() < 1e-3, "{stdout}");

    // Bad labels and templates.
    assert_error(
        &classify(&out, &[&seven], &["--labels", ","]),
        &["empty label"],
    );
    assert_error(
        &classify(&out, &[&seven], &["--labels", "one,one"]),
        &["\"one\" appears twice"],
    );
    assert_error(
        &classify(
            &out,
            &[&seven],
            &["--labels", "one", "--template", "a photo"],
        ),
        &["\"a photo\"", "{}"],
    );
    let long = "seven ".repeat(20);
    assert_error(
        &classify(&out, &[&seven], &["--labels", &long]),
        &["longer than the context of 16 tokens"],
    );

    // Bad images and model directories.
    let text = dir.path().join("text.png");
    std::fs::write(&text, "not an image").unwrap();
    assert_error(
        &classify(&out, &[&text], &["--labels", DIGITS]),
        &["text.png"],
    );
    let missing = dir.path().join("missing");
    assert_error(
        &classify(&missing, &[&seven], &["--labels", DIGITS]),
        &["config.json", "convert clip-torchscript"],
    );
}

#[test]
fn bad_training_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_error(&train(&out, "2", "1", &[]), &["--batch-size 1"]);
    assert_error(
        &train(&out, "2", "16", &["--max-shift", "14"]),
        &["--max-shift 14"],
    );
    assert_error(&train(&out, "0", "16", &[]), &["steps"]);
    assert_error(
        &train(&out, "2", "16", &["--resume"]),
        &["nothing to resume"],
    );
    assert!(!out.join("model.safetensors").exists());
}
