//! Parity of the U-Net with diffusers' `UNet2DModel` on the seeded tiny
//! models of `reference/ddpm_unet_tiny.py`, the parameter counts of the
//! presets, and the errors for bad input.

use common::checkpoint;
use diffusion::{Config, UNet2DModel};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("unet_{name}"))
}

fn io(name: &str) -> BTreeMap<String, Tensor> {
    checkpoint::read(&fixture(name).join("io.safetensors")).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check_parity(name: &str) {
    let unet = diffusion::load_unet(&fixture(name), Device::Cpu).unwrap();
    let io = io(name);
    let labels = io.get("class_labels");
    let output =
        tch::no_grad(|| unet.forward_with_labels(&io["sample"], &io["timesteps"], labels, false))
            .unwrap();
    let diff = max_diff(&output, &io["output"]);
    assert!(diff < 1e-4, "{name}: output differs by {diff}");

    let first = io["timesteps"].get(0);
    let output =
        tch::no_grad(|| unet.forward_with_labels(&io["sample"], &first, labels, false)).unwrap();
    let diff = max_diff(&output, &io["output_scalar_timestep"]);
    assert!(
        diff < 1e-4,
        "{name}: output at one timestep differs by {diff}"
    );
}

#[test]
fn ddpm_layout_matches_diffusers() {
    check_parity("ddpm");
}

#[test]
fn multihead_scale_shift_class_matches_diffusers() {
    check_parity("multihead");
}

#[test]
fn learned_time_without_mid_block_matches_diffusers() {
    check_parity("learned");
}

fn built_count(config: &Config) -> i64 {
    let vs = VarStore::new(Device::Cpu);
    UNet2DModel::new(&vs.root(), config).unwrap();
    vs.variables().values().map(|t| t.numel() as i64).sum()
}

#[test]
fn closed_form_count_equals_built_model() {
    for name in ["ddpm", "multihead", "learned"] {
        let config = Config::from_file(&fixture(name).join("config.json")).unwrap();
        let stored =
            checkpoint::count_elements(
                &[fixture(name).join("diffusion_pytorch_model.safetensors")],
            )
            .unwrap();
        assert_eq!(config.num_parameters(), stored as i64, "{name}");
        assert_eq!(built_count(&config), stored as i64, "{name}");
    }
    let mnist = Config::mnist();
    assert_eq!(mnist.num_parameters(), built_count(&mnist));
    // diffusers 0.42 builds the same configuration with 2,737,905 parameters.
    assert_eq!(mnist.num_parameters(), 2_737_905);
}

#[test]
fn cifar10_preset_has_published_size() {
    let config = Config::ddpm_cifar10_32();
    // diffusers 0.42 counts 35,746,307 parameters for google/ddpm-cifar10-32,
    // the 35.7M of Ho et al. (2020).
    assert_eq!(config.num_parameters(), 35_746_307);
    assert_eq!(built_count(&config), 35_746_307);
    assert_eq!(Config::preset("ddpm-cifar10-32").unwrap(), config);
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_file(&fixture("multihead").join("config.json")).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    UNet2DModel::new(&vs.root(), &config).unwrap();
    checkpoint::load_into(
        &mut vs,
        &[fixture("multihead").join("diffusion_pytorch_model.safetensors")],
        &Default::default(),
    )
    .unwrap();
    diffusion::save_unet(&vs, "", &config, dir.path()).unwrap();
    let again = diffusion::load_unet(dir.path(), Device::Cpu).unwrap();
    assert_eq!(again.config(), &config);
    let io = io("multihead");
    let output = tch::no_grad(|| {
        again.forward_with_labels(
            &io["sample"],
            &io["timesteps"],
            io.get("class_labels"),
            false,
        )
    })
    .unwrap();
    assert!(max_diff(&output, &io["output"]) < 1e-4);
}

#[test]
fn deprecated_attention_names_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("ddpm").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let tensors =
        checkpoint::read(&fixture("ddpm").join("diffusion_pytorch_model.safetensors")).unwrap();
    let renamed: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let name = name
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            (name, t)
        })
        .collect();
    assert!(renamed.iter().any(|(n, _)| n.contains(".proj_attn.")));
    checkpoint::save(
        &dir.path().join("diffusion_pytorch_model.safetensors"),
        &renamed,
        None,
    )
    .unwrap();
    let unet = diffusion::load_unet(dir.path(), Device::Cpu).unwrap();
    let io = io("ddpm");
    let output = tch::no_grad(|| unet.forward(&io["sample"], &io["timesteps"], false)).unwrap();
    assert!(max_diff(&output, &io["output"]) < 1e-4);
}

fn error_of(result: common::Result<impl std::fmt::Debug>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn indivisible_sample_size_is_rejected() {
    let unet = diffusion::load_unet(&fixture("ddpm"), Device::Cpu).unwrap();
    let t = Tensor::from(10i64);
    for (h, w) in [(15, 16), (16, 6), (2, 2), (0, 4)] {
        let sample = Tensor::zeros([1, 3, h, w], (Kind::Float, Device::Cpu));
        let message = error_of(unet.forward(&sample, &t, false));
        assert!(message.contains("multiples of 4"), "{h}x{w}: {message}");
    }
}

#[test]
fn wrong_inputs_are_rejected() {
    let unet = diffusion::load_unet(&fixture("ddpm"), Device::Cpu).unwrap();
    let t = Tensor::from(10i64);
    let gray = Tensor::zeros([1, 1, 16, 16], (Kind::Float, Device::Cpu));
    assert!(error_of(unet.forward(&gray, &t, false)).contains("(batch, 3, height, width)"));
    let flat = Tensor::zeros([3, 16, 16], (Kind::Float, Device::Cpu));
    assert!(error_of(unet.forward(&flat, &t, false)).contains("[3, 16, 16]"));
    let sample = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let three = Tensor::from_slice(&[1i64, 2, 3]);
    assert!(error_of(unet.forward(&sample, &three, false)).contains("batch of 2"));

    let conditional = diffusion::load_unet(&fixture("multihead"), Device::Cpu).unwrap();
    let sample = Tensor::zeros([1, 1, 8, 12], (Kind::Float, Device::Cpu));
    assert!(error_of(conditional.forward(&sample, &t, false)).contains("class labels"));
    let label = Tensor::from_slice(&[10i64]);
    let message = error_of(conditional.forward_with_labels(&sample, &t, Some(&label), false));
    assert!(
        message.contains("class label 10 is out of range"),
        "{message}"
    );

    let learned = diffusion::load_unet(&fixture("learned"), Device::Cpu).unwrap();
    let sample = Tensor::zeros([1, 2, 8, 8], (Kind::Float, Device::Cpu));
    let late = Tensor::from(50i64);
    let message = error_of(learned.forward(&sample, &late, false));
    assert!(message.contains("timestep 50 is out of range"), "{message}");
}

fn write_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(fixture("ddpm").join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    path
}

/// A change to a valid `config.json`.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

#[test]
fn malformed_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["block_out_channels"] = serde_json::json!([16, 32])),
            "same length",
        ),
        (
            Box::new(|v| v["norm_num_groups"] = serde_json::json!(5)),
            "not divisible",
        ),
        (
            Box::new(|v| v["layers_per_block"] = serde_json::json!(0)),
            "layers_per_block is 0",
        ),
        (
            Box::new(|v| v["down_block_types"][0] = serde_json::json!("CrossAttnDownBlock2D")),
            "unknown variant",
        ),
        (
            Box::new(|v| v["time_embedding_type"] = serde_json::json!("fourier")),
            "fourier",
        ),
        (
            Box::new(|v| v["act_fn"] = serde_json::json!("gelu")),
            "act_fn \"gelu\"",
        ),
        (
            Box::new(|v| v["_class_name"] = serde_json::json!("UNet2DConditionModel")),
            "_class_name",
        ),
        (
            Box::new(|v| v["attention_head_dim"] = serde_json::json!(64)),
            "attention_head_dim 64",
        ),
        (
            Box::new(|v| v["norm_eps"] = serde_json::json!(-1.0)),
            "norm_eps",
        ),
    ];
    for (edit, expected) in cases {
        let path = write_config(dir.path(), edit);
        let message = error_of(Config::from_file(&path));
        assert!(
            message.contains(expected),
            "expected {expected:?} in: {message}"
        );
    }
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert!(error_of(Config::from_file(&dir.path().join("config.json"))).contains("invalid"));
}

#[test]
fn checkpoint_of_another_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("ddpm").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("multihead").join("diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let message = error_of(diffusion::load_unet(dir.path(), Device::Cpu));
    assert!(message.contains("another configuration"), "{message}");

    let empty = tempfile::tempdir().unwrap();
    let message = error_of(diffusion::load_unet(empty.path(), Device::Cpu));
    assert!(message.contains("config.json not found"), "{message}");
}
