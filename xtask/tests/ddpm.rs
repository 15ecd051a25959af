//! `cargo xtask train ddpm` and `sample ddpm` on real digits: a short run,
//! its resume, a grid of samples, and bad input.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use support::{assert_error, assert_success, stderr, xtask};

fn train(out: &Path, steps: &str, extra: &[&str]) -> Output {
    let fixed = [
        "train",
        "ddpm",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--warmup",
        "1",
        "--samples",
        "0",
        "--threads",
        "1",
        "--out",
    ];
    let mut args: Vec<&OsStr> = fixed.iter().map(OsStr::new).collect();
    args.push(out.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    xtask(args)
}

fn sample(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("sample"), OsStr::new("ddpm"), out.as_os_str()];
    args.extend([OsStr::new("--model"), model.as_os_str()]);
    args.extend(["--threads", "1"].map(OsStr::new));
    args.extend(extra.iter().map(OsStr::new));
    xtask(args)
}

#[test]
fn train_resume_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = train(&out, "2", &[]);
    assert_success(&first);
    assert!(
        stderr(&first).contains("held-out loss"),
        "{}",
        stderr(&first)
    );
    for file in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    let again = train(&out, "4", &[]);
    assert_error(&again, &["--resume"]);
    let changed = train(&out, "4", &["--resume", "--ema-decay", "0.5"]);
    assert_error(&changed, &["--ema-decay 0.5", "the 0.995 of the run"]);
    let resumed = train(&out, "4", &["--resume"]);
    assert_success(&resumed);
    assert!(
        stderr(&resumed).contains("after 4 steps"),
        "{}",
        stderr(&resumed)
    );

    let grid = dir.path().join("grid.png");
    let sampled = sample(
        &out,
        &grid,
        &["--steps", "3", "--count", "4", "--seed", "1"],
    );
    assert_success(&sampled);
    let image = image::open(&grid).unwrap();
    // Two columns of 32-pixel samples with 2 pixels of padding around each.
    assert_eq!((image.width(), image.height()), (70, 70));
    let ddpm = dir.path().join("ddpm.png");
    let sampled = sample(
        &out,
        &ddpm,
        &["--sampler", "ddpm", "--steps", "2", "--count", "1"],
    );
    assert_success(&sampled);

    let existing = sample(&out, &grid, &["--steps", "3"]);
    assert_error(&existing, &["already exists"]);
    let other = dir.path().join("other.png");
    for (flag, value, expected) in [
        ("--steps", "0", "0"),
        ("--steps", "1001", "1001"),
        ("--count", "0", "--count 0"),
        ("--eta", "-1", "--eta -1"),
    ] {
        let output = sample(&out, &other, &[flag, value]);
        assert_error(&output, &[expected]);
        assert!(!other.exists());
    }
    let missing = sample(&dir.path().join("nowhere"), &other, &[]);
    assert_error(&missing, &["config.json not found"]);
}

#[test]
fn bad_training_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (flag, value, expected) in [
        ("--ema-decay", "1", "--ema-decay 1"),
        ("--lr", "-1", "learning rate -1"),
    ] {
        let output = train(&out, "2", &[flag, value]);
        assert_error(&output, &[expected]);
    }
    for (flag, value) in [("--batch-size", "0"), ("--samples", "-3")] {
        let mut args: Vec<&OsStr> = ["train", "ddpm", flag, value, "--out"]
            .map(OsStr::new)
            .to_vec();
        args.push(out.as_os_str());
        assert_error(&xtask(args), &[&format!("{flag} {value}")]);
    }
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert_error(&train(&file, "2", &[]), &["is a file"]);
}
