//! `cargo xtask train dvae` and `cargo xtask dvae encode|decode|reconstruct`
//! on real digits and photographs, and their errors on invalid input.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, assert_success, stderr, xtask};

const TINY: &[&str] = &[
    "--hidden",
    "8",
    "--vocab-size",
    "32",
    "--batch-size",
    "8",
    "--eval-every",
    "2",
    "--warmup",
    "1",
    "--threads",
    "1",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "dvae", "--out", out.to_str().unwrap()];
    args.extend(TINY);
    args.extend(extra);
    xtask(args)
}

fn dvae(command: &str, args: &[&Path], model: &Path) -> Output {
    let mut all = vec!["dvae".as_ref(), command.as_ref()];
    all.extend(args.iter().map(|p| p.as_os_str()));
    all.extend([
        "--model".as_ref(),
        model.as_os_str(),
        "--threads".as_ref(),
        "1".as_ref(),
    ]);
    xtask(all)
}

fn photograph(name: &str) -> PathBuf {
    common::paths::PHOTOGRAPHS.find().unwrap().join(name)
}

#[test]
fn train_resume_encode_decode_and_reconstruct() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    assert_success(&train(&out, &["--steps", "2"]));
    for file in [
        "config.json",
        "encoder.safetensors",
        "decoder.safetensors",
        "reconstructions.png",
        common::train::STATE_FILE,
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    // An existing run is kept unless resumed.
    assert_error(&train(&out, &["--steps", "4"]), &["--resume"]);
    let resumed = train(&out, &["--steps", "4", "--resume"]);
    assert_success(&resumed);
    assert!(
        stderr(&resumed).contains("after 4 steps"),
        "{}",
        stderr(&resumed)
    );

    // A 28 x 28 model with 3 groups gives 7 x 7 codes for any image.
    let encoded = dvae("encode", &[&photograph("astronaut.png")], &out);
    assert_success(&encoded);
    let json: serde_json::Value = serde_json::from_slice(&encoded.stdout).unwrap();
    let rows = json["codes"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 7));
    assert!(rows
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .all(|c| (0..32).contains(&c.as_i64().unwrap())));

    let codes = dir.path().join("codes.json");
    std::fs::write(&codes, &encoded.stdout).unwrap();
    let decoded = dir.path().join("decoded.png");
    assert_success(&dvae("decode", &[&codes, &decoded], &out));
    let image = common::image::read(&decoded).unwrap();
    assert_eq!((image.width(), image.height()), (28, 28));

    // Grids of other shapes decode to images of other sizes.
    let wide = dir.path().join("wide.json");
    std::fs::write(&wide, r#"{"codes": [[1, 2, 3, 4]]}"#).unwrap();
    let wide_image = dir.path().join("wide.png");
    assert_success(&dvae("decode", &[&wide, &wide_image], &out));
    let image = common::image::read(&wide_image).unwrap();
    assert_eq!((image.width(), image.height()), (16, 4));

    // Grayscale, RGB with alpha, 16-bit and palette images all convert.
    for name in [
        "camera.png",
        "logo.png",
        "chelsea.png",
        "no_time_for_that_tiny.gif",
    ] {
        let both = dir.path().join(format!("both-{name}.png"));
        let output = dvae("reconstruct", &[&photograph(name), &both], &out);
        assert_success(&output);
        let image = common::image::read(&both).unwrap();
        assert_eq!((image.width(), image.height()), (56, 28), "{name}");
    }
    let sixteen = dir.path().join("sixteen.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(40, 30, |x, y| {
        image::Luma([(x * 1000 + y * 700) as u16])
    })
    .save(&sixteen)
    .unwrap();
    let both = dir.path().join("both.png");
    assert_success(&dvae("reconstruct", &[&sixteen, &both], &out));

    // Existing files, the input included, are never replaced.
    assert_error(
        &dvae("reconstruct", &[&sixteen, &sixteen], &out),
        &["already exists"],
    );
    assert_error(
        &dvae("decode", &[&codes, &decoded], &out),
        &["already exists"],
    );
}

#[test]
fn train_on_photograph_crops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("photos");
    let output = train(&out, &["--data", "photos", "--steps", "2", "--groups", "2"]);
    assert_success(&output);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["input_channels"], 3);
    assert_eq!(config["image_size"], 32);
}

#[test]
fn decode_rejects_invalid_codes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    assert_success(&train(&model, &["--steps", "1"]));
    let out = dir.path().join("out.png");
    let cases: &[(&str, &str)] = &[
        (
            r#"{"codes": [[0, 1], [2, 32]]}"#,
            "code 32 is outside the vocabulary [0, 32)",
        ),
        (r#"{"codes": [[0, -1]]}"#, "code -1 is outside"),
        (r#"{"codes": [[0, 1], [2]]}"#, "rectangular"),
        (r#"{"codes": []}"#, "empty"),
        (r#"{"codes": [[]]}"#, "empty"),
        (r#"{"codes": [1, 2]}"#, "not a codes file"),
        ("not json", "not a codes file"),
        (r#"{"codes": [[1.5]]}"#, "not a codes file"),
    ];
    for (i, (text, message)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("codes{i}.json"));
        std::fs::write(&path, text).unwrap();
        assert_error(&dvae("decode", &[&path, &out], &model), &[message]);
        assert!(!out.exists(), "{text} left an output file");
    }
    let huge = dir.path().join("huge.json");
    let row = format!("[{}]", vec!["0"; 4000].join(","));
    std::fs::write(
        &huge,
        format!(r#"{{"codes": [{}]}}"#, vec![row; 4000].join(",")),
    )
    .unwrap();
    assert_error(
        &dvae("decode", &[&huge, &out], &model),
        &["too large", "up to 14 x 14 codes"],
    );
}

#[test]
fn invalid_images_models_and_options_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    assert_success(&train(&model, &["--steps", "1"]));

    let truncated = dir.path().join("truncated.png");
    let bytes = std::fs::read(photograph("camera.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    assert_error(
        &dvae("encode", &[&truncated], &model),
        &["truncated.png", "invalid image"],
    );

    let text = dir.path().join("text.png");
    std::fs::write(&text, "not an image").unwrap();
    assert_error(
        &dvae("encode", &[&text], &model),
        &["text.png", "invalid image"],
    );

    // Headers that claim zero or enormous sizes are rejected before decoding.
    for (name, width, height, message) in [
        ("empty.png", 0u32, 0u32, "empty.png"),
        ("huge.png", 100_000, 100_000, "100000 x 100000 pixels"),
        ("wide.png", 60_000, 2, "60000 x 2 pixels"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, png_header(width, height)).unwrap();
        assert_error(&dvae("encode", &[&path], &model), &[message]);
    }

    // An extreme aspect ratio is cropped before it is resized.
    let thin = dir.path().join("thin.png");
    image::RgbImage::new(16_000, 1).save(&thin).unwrap();
    assert_success(&dvae("encode", &[&thin], &model));

    let missing = dir.path().join("nothing");
    assert_error(
        &dvae("encode", &[&photograph("camera.png")], &missing),
        &["nothing", "not found", "a dVAE directory contains"],
    );
    let out = dir.path().join("out.png");
    let no_extension = dir.path().join("out");
    assert_error(
        &dvae(
            "reconstruct",
            &[&photograph("camera.png"), &no_extension],
            &model,
        ),
        &["image extension"],
    );
    assert!(!out.exists());

    let bad = dir.path().join("bad");
    assert_error(
        &xtask([
            "train",
            "dvae",
            "--out",
            bad.to_str().unwrap(),
            "--hidden",
            "6",
        ]),
        &["--hidden 6 is invalid"],
    );
    assert_error(
        &xtask([
            "train",
            "dvae",
            "--out",
            bad.to_str().unwrap(),
            "--batch-size",
            "0",
        ]),
        &["--batch-size 0 is invalid"],
    );
    assert_error(
        &xtask([
            "train",
            "dvae",
            "--out",
            bad.to_str().unwrap(),
            "--batch-size",
            "10000000",
        ]),
        &["--batch-size 10000000 is invalid"],
    );
    assert!(!bad.exists(), "a rejected run left {}", bad.display());
}

/// Builds a PNG that claims `width x height` 8-bit RGB pixels but contains
/// no pixel data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(width.to_be_bytes());
    chunk.extend(height.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&chunk);
    png.extend(crc32(&chunk).to_be_bytes());
    // An empty data chunk and the end chunk follow, so that readers reach the
    // size.
    for name in [b"IDAT", b"IEND"] {
        png.extend(0u32.to_be_bytes());
        png.extend(name);
        png.extend(crc32(name).to_be_bytes());
    }
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn dvae_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dvae/tests/fixtures")
}

#[test]
fn converted_openai_pickles_match_dall_e() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted");
    for name in ["encoder.pkl", "decoder.pkl"] {
        let output = xtask([
            "convert".as_ref(),
            "torch".as_ref(),
            dvae_fixtures().join(name).as_os_str(),
            out.as_os_str(),
        ]);
        assert_success(&output);
    }
    let config = dvae::Config::from_file(&out.join("config.json")).unwrap();
    let expected = dvae::Config::from_file(&dvae_fixtures().join("config.json")).unwrap();
    assert_eq!(config, expected);

    let io = common::checkpoint::read(&dvae_fixtures().join("io.safetensors")).unwrap();
    let encoder = dvae::load_encoder(&out, tch::Device::Cpu).unwrap();
    let decoder = dvae::load_decoder(&out, tch::Device::Cpu).unwrap();
    let logits = tch::no_grad(|| encoder.forward(&io["images"])).unwrap();
    let stats = tch::no_grad(|| decoder.forward(&io["soft_codes"])).unwrap();
    assert!((logits - &io["logits"]).abs().max().double_value(&[]) < 1e-4);
    assert!((stats - &io["soft_output"]).abs().max().double_value(&[]) < 1e-4);

    // A second encoder of another shape does not mix into the directory.
    let again = xtask([
        "convert".as_ref(),
        "torch".as_ref(),
        dvae_fixtures().join("encoder.pkl").as_os_str(),
        out.as_os_str(),
    ]);
    assert_error(&again, &["encoder.safetensors already exists"]);
}
