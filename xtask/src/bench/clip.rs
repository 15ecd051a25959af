//! `cargo xtask bench clip`: CLIP ViT-B/32 image and text encoding beside
//! transformers' `CLIPModel`.

use super::{largest_difference, run_forward_reference, time_forward, TempDir, WARMUP_RUNS};
use anyhow::{ensure, Context, Result};
use clip::preprocess::Preprocess;
use clip::tokenizer::Tokenizer;
use clip::{Clip, Config};
use std::process::ExitCode;
use tch::{Device, Kind, Tensor};

/// Captions of several lengths, encoded with the CLIP vocabulary.
const CAPTIONS: [&str; 8] = [
    "a photo of a cat.",
    "an astronaut in a white suit in front of a flag.",
    "a cup of coffee on a saucer, seen from above.",
    "a black and white photo of a man with a camera on a tripod.",
    "a rocket.",
    "a close-up photo of a ginger cat looking at the camera, with its ears up and \
     green eyes.",
    "coins.",
    "a horse.",
];

/// Photographs of scikit-image, one per image of the batch, repeated if the
/// batch is larger.
const PHOTOS: [&str; 8] = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "coins.png",
    "hubble_deep_field.jpg",
];

/// The largest difference in embeddings accepted between the two sides.
const TOLERANCE: f64 = 1e-3;

/// The largest `--batch` accepted.
pub const MAX_BATCH: i64 = 256;

/// Returns the ids of `CAPTIONS` repeated to `batch` rows, padded to the
/// context of 77 and to the longest caption.
fn caption_ids(tokenizer: &Tokenizer, batch: i64) -> Result<(Tensor, Tensor)> {
    let texts: Vec<&str> = (0..batch as usize)
        .map(|i| CAPTIONS[i % CAPTIONS.len()])
        .collect();
    let encoded = tokenizer.encode_batch(&texts)?;
    let end = tokenizer.end_of_text_id();
    let longest = encoded
        .ids
        .eq(end)
        .to_kind(Kind::Uint8)
        .argmax(1, false)
        .max()
        .int64_value(&[])
        + 1;
    let trimmed = encoded.ids.narrow(1, 0, longest).contiguous();
    Ok((encoded.ids, trimmed))
}

pub fn bench_clip(threads: Option<i32>, runs: usize, batch: i64, json: bool) -> Result<ExitCode> {
    ensure!(runs > 0, "--runs {runs} is invalid: use 1 or more");
    ensure!(
        (1..=MAX_BATCH).contains(&batch),
        "--batch {batch} is invalid: use 1 to {MAX_BATCH}"
    );
    let threads = crate::resolve_threads(threads)?;
    tch::set_num_threads(threads);
    let config = Config::vit_b_32();
    let dir = TempDir::new("bench-clip")?;

    tch::manual_seed(0);
    let clip = Clip::new(config.clone(), Device::Cpu)?;
    clip.save(&dir.0)?;
    let photos = common::paths::PHOTOGRAPHS.find()?;
    let paths: Vec<_> = (0..batch as usize)
        .map(|i| photos.join(PHOTOS[i % PHOTOS.len()]))
        .collect();
    let pixels = Preprocess::clip(config.vision_config.image_size).files(&paths)?;
    let tokenizer = Tokenizer::from_vocab(
        &common::paths::CLIP_VOCAB.find()?,
        config.text_config.max_position_embeddings as usize,
    )?;
    let (padded, longest) = caption_ids(&tokenizer, batch)?;
    let inputs_file = dir.0.join("inputs.safetensors");
    Tensor::write_safetensors(
        &[
            ("pixel_values", &pixels),
            ("input_ids_padded", &padded),
            ("input_ids_longest", &longest),
        ],
        &inputs_file,
    )?;

    let (rust_image_ms, image_embeds) =
        tch::no_grad(|| time_forward(|| clip.encode_image(&pixels), runs))?;
    let (rust_padded_ms, text_embeds) =
        tch::no_grad(|| time_forward(|| clip.encode_text(&padded), runs))?;
    let (rust_longest_ms, text_embeds_longest) =
        tch::no_grad(|| time_forward(|| clip.encode_text(&longest), runs))?;
    drop(clip);

    let (reference, outputs_file) =
        run_forward_reference("bench_clip.py", threads, &dir, &inputs_file, runs, &[])?;
    let outputs = common::checkpoint::read(&outputs_file)?;
    let mut largest = 0f64;
    for (name, rust) in [
        ("image_embeds", &image_embeds),
        ("text_embeds", &text_embeds),
        ("text_embeds_longest", &text_embeds_longest),
    ] {
        let python = outputs
            .get(name)
            .with_context(|| format!("reference/bench_clip.py wrote no {name}"))?;
        ensure!(
            python.size() == rust.size(),
            "reference/bench_clip.py returned {name} of shape {:?}, expected {:?}",
            python.size(),
            rust.size()
        );
        largest = largest.max(largest_difference(rust, python)?);
    }
    ensure!(
        largest <= TOLERANCE,
        "the Rust and transformers embeddings differ by {largest:.2e}, more than {TOLERANCE:e}"
    );

    let number = |key: &str| reference[key].as_f64().unwrap_or(f64::NAN);
    let rows = [
        ("image", rust_image_ms, number("image_ms")),
        (
            "text, padded to 77",
            rust_padded_ms,
            number("text_padded_ms"),
        ),
        (
            "text, padded to longest",
            rust_longest_ms,
            number("text_longest_ms"),
        ),
    ];
    let per_second = |ms: f64| batch as f64 / ms * 1e3;
    if json {
        let passes: Vec<_> = rows
            .iter()
            .map(|(pass, rust_ms, py_ms)| {
                serde_json::json!({
                    "pass": pass, "rust_ms": rust_ms, "reference_ms": py_ms,
                    "rust_items_per_second": per_second(*rust_ms),
                    "reference_items_per_second": per_second(*py_ms),
                    "ratio": py_ms / rust_ms,
                })
            })
            .collect();
        let record = serde_json::json!({
            "model": "CLIP ViT-B/32, random weights", "batch_size": batch, "dtype": "f32",
            "device": "cpu", "threads": threads, "runs": runs, "warmup_runs": WARMUP_RUNS,
            "passes": passes, "reference": reference,
            "largest_embedding_difference": largest, "tolerance": TOLERANCE,
        });
        println!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "CLIP ViT-B/32 (random weights), batch {batch}, f32, CPU, {threads} threads, median \
         of {runs} after {WARMUP_RUNS} warm-up run"
    );
    println!("| pass                    | Rust (ms) | transformers (ms) | Rust (items/s) | transformers (items/s) | ratio |");
    println!("|-------------------------|-----------|-------------------|----------------|------------------------|-------|");
    for (pass, rust_ms, py_ms) in rows {
        println!(
            "| {pass:<23} | {rust_ms:>9.1} | {py_ms:>17.1} | {:>14.2} | {:>22.2} | {:>5.2} |",
            per_second(rust_ms),
            per_second(py_ms),
            py_ms / rust_ms
        );
    }
    println!("ratio: Rust speed / transformers speed; above 1, Rust is faster");
    println!("embeddings agree within {TOLERANCE:e} (largest difference {largest:.2e})");
    println!(
        "reference: {}",
        reference["implementation"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}
