//! CLIP against transformers' `CLIPModel` on the seeded tiny model written
//! by `reference/clip_tiny.py`, and the preset sizes.

use clip::{contrastive_loss, Clip, Config};
use common::checkpoint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn io() -> BTreeMap<String, Tensor> {
    checkpoint::read(&fixtures().join("tiny_io.safetensors")).unwrap()
}

fn tiny() -> Clip {
    Clip::load(&fixtures().join("tiny"), Device::Cpu).unwrap()
}

fn assert_close(quantity: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.size(), b.size(), "{quantity}");
    let diff = (a - b).abs().max().double_value(&[]);
    assert!(
        diff < 1e-4,
        "{quantity}: max |rust - transformers| = {diff}"
    );
}

#[test]
fn text_encoder_matches_transformers() {
    let (clip, io) = (tiny(), io());
    let ids = &io["input_ids"];
    let text = clip.model().text_model.hidden_states(ids).unwrap();
    assert_close("last hidden state", &text, &io["text_last_hidden"]);
    let pooled = clip.model().text_model.pooled(ids).unwrap();
    assert_close("pooled text feature", &pooled, &io["text_pooled"]);
    assert_close(
        "text embeddings",
        &clip.encode_text(ids).unwrap(),
        &io["text_embeds"],
    );
}

#[test]
fn image_encoder_matches_transformers() {
    let (clip, io) = (tiny(), io());
    let pixels = &io["pixel_values"];
    let pooled = clip.model().vision_model.pooled(pixels).unwrap();
    assert_close("pooled image feature", &pooled, &io["image_pooled"]);
    assert_close(
        "image embeddings",
        &clip.encode_image(pixels).unwrap(),
        &io["image_embeds"],
    );
}

#[test]
fn logits_and_loss_match_transformers() {
    let (clip, io) = (tiny(), io());
    let (pixels, ids) = (&io["pixel_values"], &io["input_ids"]);
    let (per_image, per_text) = clip.logits(pixels, ids).unwrap();
    assert_close("logits per image", &per_image, &io["logits_per_image"]);
    assert_close("logits per text", &per_text, &io["logits_per_text"]);
    let loss = clip.loss(pixels, &ids.narrow(0, 0, 3)).unwrap();
    assert_close("contrastive loss", &loss.reshape([1]), &io["loss"]);
}

/// The pooled position is the first end-of-text token, not the largest id:
/// sequences 1 and 3 hold the larger id 999 before it.
#[test]
fn pooling_reads_the_end_of_text_token_not_the_largest_id() {
    let (clip, io) = (tiny(), io());
    let ids = &io["input_ids"];
    let hidden = clip.model().text_model.hidden_states(ids).unwrap();
    let pooled = clip.model().text_model.pooled(ids).unwrap();
    for (row, end) in [(1, 5), (3, 8)] {
        assert_ne!(
            ids.int64_value(&[row, ids.argmax(1, false).int64_value(&[row])]),
            998
        );
        let expected = hidden.get(row).get(end);
        assert!(pooled.get(row).allclose(&expected, 1e-5, 1e-5, false));
    }
}

/// Whatever follows the end-of-text token cannot change the text embedding.
#[test]
fn tokens_after_the_end_do_not_matter() {
    let (clip, io) = (tiny(), io());
    let ids = io["input_ids"].copy();
    let before = clip.encode_text(&ids).unwrap();
    // Row 2 ends at position 3; fill what follows with other tokens.
    let _ = ids.get(2).narrow(0, 4, 8).fill_(17);
    let after = clip.encode_text(&ids).unwrap();
    assert!(before.allclose(&after, 1e-6, 1e-6, false));
}

#[test]
fn symmetric_loss_of_perfect_matches_is_small() {
    let logits = Tensor::eye(4, (Kind::Float, Device::Cpu)) * 50.0;
    assert!(contrastive_loss(&logits).unwrap().double_value(&[]) < 1e-10);
    let uniform = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
    let expected = 4f64.ln();
    assert!((contrastive_loss(&uniform).unwrap().double_value(&[]) - expected).abs() < 1e-6);
    let err = contrastive_loss(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))).unwrap_err();
    assert!(err.to_string().contains("[2, 3]"), "{err}");
}

#[test]
fn presets_have_the_published_sizes() {
    let text = std::fs::read_to_string(fixtures().join("preset_parameters.json")).unwrap();
    let counts: BTreeMap<String, i64> = serde_json::from_str(&text).unwrap();
    for (name, config) in [
        ("vit_b_32", Config::vit_b_32()),
        ("vit_b_16", Config::vit_b_16()),
        ("vit_l_14", Config::vit_l_14()),
    ] {
        assert_eq!(config.num_parameters(), counts[name], "{name}");
    }
    // The parameters of OpenAI's released ViT-B/32 and ViT-L/14, summed over
    // the models that openai-clip's `clip.load` returns.
    assert_eq!(Config::vit_b_32().num_parameters(), 151_277_313);
    assert_eq!(Config::vit_l_14().num_parameters(), 427_616_513);
}

/// The closed-form count equals the variables of a built model.
#[test]
fn parameter_count_matches_the_built_model() {
    for config in [
        Config::mnist(),
        Config::from_file(&fixtures().join("tiny/config.json")).unwrap(),
    ] {
        let clip = Clip::new(config.clone(), Device::Cpu).unwrap();
        let built: i64 = clip
            .var_store()
            .variables()
            .values()
            .map(Tensor::numel)
            .map(|n| n as i64)
            .sum();
        assert_eq!(built, config.num_parameters());
    }
}

#[test]
fn bad_inputs_are_errors() {
    let clip = tiny();
    let no_end = Tensor::from_slice(&[997i64, 5, 6]).unsqueeze(0);
    let err = clip.encode_text(&no_end).unwrap_err().to_string();
    assert!(err.contains("end-of-text"), "{err}");
    assert!(err.contains("998"), "{err}");
    let too_long = Tensor::full([1, 17], 998, (Kind::Int64, Device::Cpu));
    let err = clip.encode_text(&too_long).unwrap_err().to_string();
    assert!(err.contains("17 tokens"), "{err}");
    assert!(err.contains("16 positions"), "{err}");
    let out_of_vocab = Tensor::from_slice(&[997i64, 1000, 998]).unsqueeze(0);
    let err = clip.encode_text(&out_of_vocab).unwrap_err().to_string();
    assert!(err.contains("1000"), "{err}");
    let wrong_size = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let err = clip.encode_image(&wrong_size).unwrap_err().to_string();
    assert!(err.contains("24 x 24"), "{err}");
    assert!(err.contains("32"), "{err}");
    let err = clip
        .loss(
            &Tensor::zeros([2, 3, 24, 24], (Kind::Float, Device::Cpu)),
            &no_end,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("as many texts as images"), "{err}");
}
