//! `cargo xtask convert clip-torchscript`: an OpenAI CLIP TorchScript
//! archive becomes a model directory with transformers' `CLIPModel` names,
//! which the `clip` crate loads and runs as OpenAI's code does.
//!
//! The fixtures in clip/tests/fixtures are written by
//! `reference/clip_torchscript.py`: a tiny ViT CLIP traced with openai-clip,
//! its inputs and outputs, and a module with ModifiedResNet parameter names.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_error, assert_success, xtask};
use tch::{Device, Kind, Tensor};

// The sizes of the fixture model, as reference/clip_torchscript.py sets them.
const WIDTH: i64 = 64;
const INTERMEDIATE: i64 = 4 * WIDTH;
const EMBED_DIM: i64 = 32;
const VOCAB_SIZE: i64 = 128;
const CONTEXT_LENGTH: i64 = 16;
const PATCH_SIZE: i64 = 8;
const GRID: i64 = 4;
const VISION_LAYERS: i64 = 2;
const TEXT_LAYERS: i64 = 1;

/// The largest difference allowed between the converted model's outputs and
/// openai-clip's. The archive stores most weights in fp16, but the reference
/// outputs come from the same fp16 values cast to f32, so the two sides
/// compute in f32 from equal weights and differ only by f32 rounding.
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clip/tests/fixtures")
        .join(name)
}

fn convert(input: &Path, output: &Path) -> Output {
    xtask([
        OsStr::new("convert"),
        OsStr::new("clip-torchscript"),
        input.as_os_str(),
        output.as_os_str(),
    ])
}

/// Converts the fixture archive into a new directory and returns it.
fn converted() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models").join("openai-tiny");
    assert_success(&convert(&fixture("openai_tiny.pt"), &out));
    (dir, out)
}

/// How a converted tensor derives from the archive's tensors.
enum Source {
    Same(String),
    Transposed(String),
    /// Rows `index * WIDTH..(index + 1) * WIDTH` of a packed q, k, v
    /// projection.
    Part(String, i64),
}

/// Every tensor that the conversion must write: its name, shape and source.
fn expected_tensors() -> Vec<(String, Vec<i64>, Source)> {
    let same = |from: &str| Source::Same(from.to_string());
    let mut expected = vec![
        ("logit_scale".to_string(), vec![], same("logit_scale")),
        (
            "text_projection.weight".into(),
            vec![EMBED_DIM, WIDTH],
            Source::Transposed("text_projection".into()),
        ),
        (
            "visual_projection.weight".into(),
            vec![EMBED_DIM, WIDTH],
            Source::Transposed("visual.proj".into()),
        ),
        (
            "text_model.embeddings.token_embedding.weight".into(),
            vec![VOCAB_SIZE, WIDTH],
            same("token_embedding.weight"),
        ),
        (
            "text_model.embeddings.position_embedding.weight".into(),
            vec![CONTEXT_LENGTH, WIDTH],
            same("positional_embedding"),
        ),
        (
            "vision_model.embeddings.class_embedding".into(),
            vec![WIDTH],
            same("visual.class_embedding"),
        ),
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![WIDTH, 3, PATCH_SIZE, PATCH_SIZE],
            same("visual.conv1.weight"),
        ),
        (
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![GRID * GRID + 1, WIDTH],
            same("visual.positional_embedding"),
        ),
    ];
    let layer_norms = [
        ("text_model.final_layer_norm", "ln_final"),
        ("vision_model.pre_layrnorm", "visual.ln_pre"),
        ("vision_model.post_layernorm", "visual.ln_post"),
    ];
    for (to, from) in layer_norms {
        for parameter in ["weight", "bias"] {
            expected.push((
                format!("{to}.{parameter}"),
                vec![WIDTH],
                Source::Same(format!("{from}.{parameter}")),
            ));
        }
    }

    let encoders = [
        ("text_model", "transformer", TEXT_LAYERS),
        ("vision_model", "visual.transformer", VISION_LAYERS),
    ];
    for (to, from, layers) in encoders {
        for i in 0..layers {
            let to = format!("{to}.encoder.layers.{i}");
            let from = format!("{from}.resblocks.{i}");
            for (index, projection) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
                let index = index as i64;
                expected.push((
                    format!("{to}.self_attn.{projection}.weight"),
                    vec![WIDTH, WIDTH],
                    Source::Part(format!("{from}.attn.in_proj_weight"), index),
                ));
                expected.push((
                    format!("{to}.self_attn.{projection}.bias"),
                    vec![WIDTH],
                    Source::Part(format!("{from}.attn.in_proj_bias"), index),
                ));
            }
            let renamed = [
                ("self_attn.out_proj", "attn.out_proj", vec![WIDTH, WIDTH]),
                ("mlp.fc1", "mlp.c_fc", vec![INTERMEDIATE, WIDTH]),
                ("mlp.fc2", "mlp.c_proj", vec![WIDTH, INTERMEDIATE]),
                ("layer_norm1", "ln_1", vec![WIDTH]),
                ("layer_norm2", "ln_2", vec![WIDTH]),
            ];
            for (to_name, from_name, weight_shape) in renamed {
                let bias_shape = vec![weight_shape[0]];
                for (parameter, shape) in [("weight", weight_shape), ("bias", bias_shape)] {
                    expected.push((
                        format!("{to}.{to_name}.{parameter}"),
                        shape,
                        Source::Same(format!("{from}.{from_name}.{parameter}")),
                    ));
                }
            }
        }
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

/// The parameters of the fixture archive, as f32, read with libtorch.
fn archive_parameters() -> BTreeMap<String, Tensor> {
    let module = tch::CModule::load_on_device(fixture("openai_tiny.pt"), Device::Cpu).unwrap();
    module
        .named_parameters()
        .unwrap()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_kind(Kind::Float)))
        .collect()
}

#[test]
fn config_fields() {
    let (_dir, out) = converted();
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();

    assert_eq!(config["model_type"], "clip");
    assert_eq!(config["architectures"], serde_json::json!(["CLIPModel"]));
    assert_eq!(config["projection_dim"], EMBED_DIM);
    assert_eq!(config["logit_scale_init_value"], 2.6592);

    let text_config = &config["text_config"];
    let text_fields = [
        ("vocab_size", VOCAB_SIZE),
        ("hidden_size", WIDTH),
        ("intermediate_size", INTERMEDIATE),
        ("num_hidden_layers", TEXT_LAYERS),
        ("num_attention_heads", WIDTH / 64),
        ("max_position_embeddings", CONTEXT_LENGTH),
        ("bos_token_id", VOCAB_SIZE - 2),
        ("eos_token_id", VOCAB_SIZE - 1),
    ];
    for (field, value) in text_fields {
        assert_eq!(text_config[field], value, "text_config.{field}");
    }
    assert_eq!(text_config["hidden_act"], "quick_gelu");
    assert_eq!(text_config["layer_norm_eps"], 1e-5);

    let vision_config = &config["vision_config"];
    let vision_fields = [
        ("hidden_size", WIDTH),
        ("intermediate_size", INTERMEDIATE),
        ("num_hidden_layers", VISION_LAYERS),
        ("num_attention_heads", WIDTH / 64),
        ("num_channels", 3),
        ("image_size", PATCH_SIZE * GRID),
        ("patch_size", PATCH_SIZE),
    ];
    for (field, value) in vision_fields {
        assert_eq!(vision_config[field], value, "vision_config.{field}");
    }
    assert_eq!(vision_config["hidden_act"], "quick_gelu");
    assert_eq!(vision_config["layer_norm_eps"], 1e-5);
}

#[test]
fn tensor_names_and_shapes() {
    let (_dir, out) = converted();
    let tensors = common::checkpoint::read(&out.join("model.safetensors")).unwrap();
    let expected = expected_tensors();

    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    let expected_names: Vec<&str> = expected.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names, expected_names);
    for (name, shape, _) in &expected {
        let tensor = &tensors[name];
        assert_eq!(&tensor.size(), shape, "shape of {name}");
        assert_eq!(tensor.kind(), Kind::Float, "dtype of {name}");
    }
}

#[test]
fn tensor_values_match_archive() {
    let (_dir, out) = converted();
    let tensors = common::checkpoint::read(&out.join("model.safetensors")).unwrap();
    let archive = archive_parameters();

    for (name, _, source) in expected_tensors() {
        let want = match &source {
            Source::Same(from) => archive[from].shallow_clone(),
            Source::Transposed(from) => archive[from].t_copy(),
            Source::Part(from, index) => archive[from].narrow(0, index * WIDTH, WIDTH),
        };
        assert!(tensors[&name].equal(&want), "values of {name}");
    }
}

#[test]
fn converted_model_matches_openai() {
    let (_dir, out) = converted();
    let clip = clip::Clip::load(&out, Device::Cpu).unwrap();
    let io = common::checkpoint::read(&fixture("openai_tiny_outputs.safetensors")).unwrap();
    let pixels = &io["pixel_values"];
    let ids = &io["input_ids"];

    let image = clip.encode_image(pixels).unwrap();
    assert_close(&image, &io["image_embeds"], "encode_image");
    let text = clip.encode_text(ids).unwrap();
    assert_close(&text, &io["text_embeds"], "encode_text");
    let (per_image, per_text) = clip.logits(pixels, ids).unwrap();
    assert_close(&per_image, &io["logits_per_image"], "logits_per_image");
    assert_close(
        &per_text,
        &io["logits_per_image"].t_copy(),
        "logits_per_text",
    );
}

fn assert_close(found: &Tensor, expected: &Tensor, name: &str) {
    assert_eq!(found.size(), expected.size(), "shape of {name}");
    let difference = (found - expected).abs().max().double_value(&[]);
    assert!(
        difference <= TOLERANCE,
        "{name} differs from openai-clip by up to {difference:e}, more than {TOLERANCE:e}"
    );
}

#[test]
fn writes_only_two_files() {
    let (_dir, out) = converted();
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["config.json", "model.safetensors"]);
}

#[test]
fn missing_input() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("ViT-B-32.pt");
    let out = dir.path().join("out");
    let output = convert(&absent, &out);
    assert_error(&output, &[&absent.display().to_string(), "not found"]);
    assert!(
        !out.exists(),
        "a failed conversion created {}",
        out.display()
    );
}

#[test]
fn non_torchscript_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let archive = std::fs::read(fixture("openai_tiny.pt")).unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a model\n").unwrap();
    let truncated = dir.path().join("truncated.pt");
    std::fs::write(&truncated, &archive[..archive.len() / 2]).unwrap();
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    // A torch.save file: a zip archive, but a pickle with no TorchScript code.
    let pickle =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/tests/fixtures/torch/module.pt");

    for input in [&text, &truncated, &empty, &pickle] {
        let out = dir.path().join("out");
        let output = convert(input, &out);
        assert_error(
            &output,
            &[
                &input.display().to_string(),
                "invalid TorchScript file",
                "ViT-B-32.pt",
            ],
        );
        assert!(
            !out.exists(),
            "converting {} created {}",
            input.display(),
            out.display()
        );
    }
}

#[test]
fn resnet_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = fixture("openai_resnet_names.pt");
    let output = convert(&input, &out);
    assert_error(
        &output,
        &[
            &input.display().to_string(),
            "ModifiedResNet",
            "only ViT models",
        ],
    );
    assert!(
        !out.exists(),
        "a rejected archive created {}",
        out.display()
    );
}

#[test]
fn existing_output_kept() {
    for existing_name in ["config.json", "model.safetensors"] {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join(existing_name);
        std::fs::write(&existing, b"keep").unwrap();
        let output = convert(&fixture("openai_tiny.pt"), dir.path());
        assert_error(
            &output,
            &[
                &existing.display().to_string(),
                "already exists",
                "remove it",
            ],
        );
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(
            files,
            1,
            "the failed conversion wrote into {}",
            dir.path().display()
        );
    }
}
