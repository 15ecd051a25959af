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

/// Asserts that the command line was rejected before anything ran (clap's
/// exit status 2), with `expected` in the message.
fn assert_usage_error(output: &Output, expected: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "stderr lacks {text:?}:\n{stderr}");
    }
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
    // The default run is class-conditional: the samples of digits 0 to 3 in
    // one row of 32-pixel samples, with 2 pixels of padding around each.
    assert_eq!((image.width(), image.height()), (138, 36));
    let ddim = dir.path().join("ddim.png");
    let sampled = sample(
        &out,
        &ddim,
        &[
            "--sampler",
            "ddim",
            "--steps",
            "2",
            "--count",
            "1",
            "--timestep-spacing",
            "trailing",
        ],
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
        ("--eta", "0.5", "--sampler ddim only"),
    ] {
        let output = sample(&out, &other, &[flag, value]);
        assert_error(&output, &[expected]);
        assert!(!other.exists());
    }
    let spacing = sample(&out, &other, &["--timestep-spacing", "backwards"]);
    assert_usage_error(&spacing, &["\"backwards\"", "leading, trailing, linspace"]);
    assert!(!other.exists());
    let nested = dir.path().join("no-such-dir").join("grid.png");
    assert_error(&sample(&out, &nested, &[]), &["does not exist"]);
    let unknown = dir.path().join("grid.unknownext");
    assert_error(&sample(&out, &unknown, &[]), &["unknown image extension"]);
    assert!(!unknown.exists());
    let missing = sample(&dir.path().join("nowhere"), &other, &[]);
    assert_error(&missing, &["config.json not found"]);

    // Errors in a pipeline's files name the file.
    let scheduler = out.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&scheduler).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["beta_schedule"] = serde_json::json!("linear");
    value["beta_end"] = serde_json::json!(-0.5);
    std::fs::write(&scheduler, value.to_string()).unwrap();
    let output = sample(&out, &other, &["--steps", "2"]);
    assert_error(&output, &["scheduler_config.json", "-0.5"]);
    std::fs::write(&scheduler, text).unwrap();
    std::fs::remove_file(out.join("unet/config.json")).unwrap();
    let output = sample(&out, &other, &["--steps", "2"]);
    let unet_config = Path::new("unet").join("config.json");
    assert_error(&output, &[&unet_config.display().to_string(), "not found"]);
    assert!(!other.exists());
}

#[test]
fn bad_training_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for (flag, value, expected) in [
        ("--ema-decay", "1", "--ema-decay 1"),
        ("--lr", "-1", "learning rate -1"),
        ("--snr-gamma", "-1", "--snr-gamma -1"),
        ("--snr-gamma", "1e-320", "at least"),
        ("--label-dropout", "1.5", "--label-dropout 1.5"),
        ("--label-dropout", "1", "[0, 1)"),
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

/// A two-level U-Net config for runs of a few steps.
const SMALL_UNET: &str = r#"{
    "sample_size": 32, "in_channels": 1, "out_channels": 1,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "norm_num_groups": 4
}"#;

#[test]
fn unet_config_option_trains_another_u_net() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, SMALL_UNET).unwrap();
    let out = dir.path().join("run");
    let trained = train(&out, "2", &["--unet-config", config.to_str().unwrap()]);
    assert_success(&trained);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("unet/config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["block_out_channels"], serde_json::json!([8, 16]));
    let resumed = train(
        &out,
        "3",
        &["--resume", "--unet-config", config.to_str().unwrap()],
    );
    assert_usage_error(&resumed, &["--unet-config", "--resume"]);

    let rgb = dir.path().join("rgb.json");
    std::fs::write(
        &rgb,
        SMALL_UNET.replace("\"in_channels\": 1", "\"in_channels\": 3"),
    )
    .unwrap();
    let other = dir.path().join("other");
    let output = train(&other, "2", &["--unet-config", rgb.to_str().unwrap()]);
    assert_error(&output, &["3 input", "MNIST digits need 1"]);
    assert!(!other.exists());
    for (key, value, expected) in [
        ("sample_size", "30", "sample_size"),
        ("num_class_embeds", "10", "num_class_embeds"),
    ] {
        let path = dir.path().join(format!("{key}.json"));
        let text = SMALL_UNET.replace("\"sample_size\": 32", &format!("\"{key}\": {value}"));
        std::fs::write(&path, text).unwrap();
        let output = train(&other, "2", &["--unet-config", path.to_str().unwrap()]);
        assert_error(&output, &[expected]);
        assert!(!other.exists());
    }
    // About 50G parameters: refused before anything is allocated.
    let huge = dir.path().join("huge.json");
    let text = SMALL_UNET
        .replace("[8, 16]", "[32768, 32768]")
        .replace("\"norm_num_groups\": 4", "\"norm_num_groups\": 32");
    std::fs::write(&huge, text).unwrap();
    let output = train(&other, "2", &["--unet-config", huge.to_str().unwrap()]);
    assert_error(&output, &["five f32 copies", "smaller configuration"]);
    assert!(!other.exists());
    let missing = dir.path().join("missing.json");
    let output = train(&other, "2", &["--unet-config", missing.to_str().unwrap()]);
    assert_error(&output, &["missing.json"]);
}

#[test]
fn class_conditional_run_samples_with_guidance() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, SMALL_UNET).unwrap();
    let out = dir.path().join("run");
    let config = config.to_str().unwrap();
    let trained = train(
        &out,
        "2",
        &["--unet-config", config, "--conditioning", "class"],
    );
    assert_success(&trained);
    assert!(
        stderr(&trained).contains("conditioned on the digit"),
        "{}",
        stderr(&trained)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("unet/config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["num_class_embeds"], 11);
    let resumed = train(&out, "3", &["--resume"]);
    assert_success(&resumed);

    // A config edited after the checkpoint was written is an error on resume.
    let config_path = out.join("unet/config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    for (key, expected) in [
        ("num_class_embeds", "records --conditioning class"),
        ("add_attention", "tensor(s) that the model does not have"),
    ] {
        let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
        edited[key] = if key == "add_attention" {
            serde_json::json!(false)
        } else {
            serde_json::Value::Null
        };
        std::fs::write(&config_path, edited.to_string()).unwrap();
        let output = train(&out, "4", &["--resume"]);
        assert_error(&output, &[expected]);
    }
    std::fs::write(&config_path, original).unwrap();

    let grid = dir.path().join("sevens.png");
    let extra = ["--steps", "2", "--count", "2", "--class", "7"];
    let sampled = sample(
        &out,
        &grid,
        &[&extra[..], &["--guidance-scale", "3"]].concat(),
    );
    assert_success(&sampled);
    assert!(
        stderr(&sampled).contains("guidance scale 3"),
        "{}",
        stderr(&sampled)
    );
    assert!(grid.is_file());
    let other = dir.path().join("other.png");
    for (flag, value, expected) in [
        ("--class", "10", "--class 10"),
        ("--class", "-1", "--class -1"),
        ("--guidance-scale", "-2", "--guidance-scale -2"),
        ("--guidance-scale", "NaN", "--guidance-scale NaN"),
    ] {
        let output = sample(&out, &other, &["--steps", "2", flag, value]);
        assert_error(&output, &[expected]);
        assert!(!other.exists());
    }

    let plain = dir.path().join("plain");
    let unconditional = ["--unet-config", config, "--conditioning", "none"];
    let dropout = [&unconditional[..], &["--label-dropout", "0.2"]].concat();
    let output = train(&plain, "2", &dropout);
    assert_error(
        &output,
        &["--label-dropout applies to --conditioning class only"],
    );
    assert!(!plain.exists());
    assert_success(&train(&plain, "2", &unconditional));

    // A settings file written before class conditioning resumes unconditionally.
    let settings_path = plain.join("train-settings.json");
    let text = std::fs::read_to_string(&settings_path).unwrap();
    let mut settings: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fields = settings.as_object_mut().unwrap();
    fields.remove("conditioning");
    fields.remove("label_dropout");
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    assert_success(&train(&plain, "3", &["--resume", "--conditioning", "none"]));
    for flag in [["--class", "1"], ["--guidance-scale", "2"]] {
        let output = sample(&plain, &other, &[&["--steps", "2"][..], &flag[..]].concat());
        assert_error(&output, &[flag[0], "no num_class_embeds"]);
        assert!(!other.exists());
    }
}
