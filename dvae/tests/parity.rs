//! Parity with OpenAI's `dall_e` package on the seeded tiny encoder and
//! decoder of `reference/dvae_tiny.py`.

use common::checkpoint;
use dvae::{Config, Decoder, Encoder};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn io() -> BTreeMap<String, Tensor> {
    checkpoint::read(&fixtures().join("io.safetensors")).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn encoder_logits_match_dall_e() {
    let encoder = dvae::load_encoder(&fixtures(), Device::Cpu).unwrap();
    let io = io();
    let logits = tch::no_grad(|| encoder.forward(&io["images"])).unwrap();
    assert!(max_diff(&logits, &io["logits"]) < 1e-4);
    let codes = tch::no_grad(|| encoder.codes(&io["images"])).unwrap();
    assert!(codes.equal(&io["codes"]));
}

#[test]
fn decoder_output_matches_dall_e() {
    let decoder = dvae::load_decoder(&fixtures(), Device::Cpu).unwrap();
    let io = io();
    for (input, output) in [
        ("soft_codes", "soft_output"),
        ("one_hot_codes", "hard_output"),
    ] {
        let stats = tch::no_grad(|| decoder.forward(&io[input])).unwrap();
        let diff = max_diff(&stats, &io[output]);
        assert!(diff < 1e-4, "{output}: {diff}");
    }
    let one_hot = dvae::one_hot_codes(&io["codes"], 32).unwrap();
    assert!(one_hot.equal(&io["one_hot_codes"]));
}

#[test]
fn decode_codes_matches_reference_reconstruction() {
    let decoder = dvae::load_decoder(&fixtures(), Device::Cpu).unwrap();
    let io = io();
    let image = tch::no_grad(|| decoder.decode_codes(&io["codes"])).unwrap();
    let expected = dvae::reconstruct(&io["hard_output"]);
    assert_eq!(image.size(), [2, 3, 24, 16]);
    assert!(max_diff(&image, &expected) < 1e-5);
}

#[test]
fn variable_names_and_count_match_checkpoints() {
    let config = Config::from_file(&fixtures().join("config.json")).unwrap();
    for (file, encoder) in [
        ("encoder.safetensors", true),
        ("decoder.safetensors", false),
    ] {
        let vs = VarStore::new(Device::Cpu);
        let expected = if encoder {
            Encoder::new(&vs.root(), &config).unwrap();
            config.encoder_parameters()
        } else {
            Decoder::new(&vs.root(), &config).unwrap();
            config.decoder_parameters()
        };
        let names: Vec<String> = vs.variables().into_keys().collect();
        let saved = checkpoint::read(&fixtures().join(file)).unwrap();
        let mut names = names;
        names.sort();
        assert_eq!(names, saved.keys().cloned().collect::<Vec<_>>(), "{file}");
        let count: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(count as u64, expected, "{file}");
    }
}

#[test]
fn openai_preset_counts_match_dall_e() {
    // Counted from `dall_e` 0.1's default `Encoder()` and `Decoder()`.
    let config = Config::openai();
    assert_eq!(config.encoder_parameters(), 53_786_240);
    assert_eq!(config.decoder_parameters(), 43_829_766);
    assert_eq!(config.image_size / config.downsample_factor(), 32);
}
