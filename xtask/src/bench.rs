//! `cargo xtask bench`: speed beside the Python reference, in one run, on the
//! same threads.

mod clip;
mod ddpm;

use crate::generate::{Session, DEFAULT_PROMPT};
use anyhow::{Context, Result};
use clap::Subcommand;
use common::generation;
use common::sampling::{Sampler, SamplingConfig};
use common::train::{AdamW, TrainOptions};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

#[derive(Subcommand)]
pub enum Bench {
    /// Prefill and decode tokens per second of SmolLM2-135M on the CPU,
    /// beside transformers loading the same GGUF file.
    Generate {
        /// Weight dtype of both implementations: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Tokens to decode per run.
        #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
        new_tokens: usize,
        /// Timed runs per implementation; the median is reported.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
        runs: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Milliseconds per AdamW training step of a 6-layer GPT-2 of width 384
    /// on the CPU in f32, beside transformers' GPT2LMHeadModel and
    /// torch.optim.AdamW with the same weights and batch.
    TrainGpt {
        /// Vocabulary size of the model (default: GPT-2's).
        #[arg(long, default_value_t = gpt::GPT2_VOCAB_SIZE, allow_negative_numbers = true)]
        vocab_size: i64,
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Timed steps per implementation, after 2 warm-up steps; the median
        /// is reported.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
        steps: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Greedy decode tokens per second of GPT-2 124M (random weights) on the
    /// CPU in f32, beside transformers' GPT2LMHeadModel with the same weights.
    DecodeGpt {
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Tokens to decode per run.
        #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
        new_tokens: usize,
        /// Timed runs per implementation; the median is reported.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
        runs: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Milliseconds per forward pass of DALL-E's dVAE encoder and decoder
    /// (OpenAI's configuration, random weights) on 256 x 256 images on the
    /// CPU in f32, beside OpenAI's `dall_e` package with the same weights
    /// and inputs.
    Dvae {
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Timed runs per pass and implementation, after 1 warm-up run; the
        /// median is reported.
        #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
        runs: usize,
        /// Images per forward pass.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        batch: i64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Images and texts per second of CLIP ViT-B/32 (random weights) on the
    /// CPU in f32, beside transformers' CLIPModel with the same weights and
    /// inputs: scikit-image's photographs at 224 x 224, and captions padded
    /// to the 77-token context and to the longest caption.
    Clip {
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Timed runs per pass and implementation, after 1 warm-up run; the
        /// median is reported.
        #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
        runs: usize,
        /// Images and captions per forward pass.
        #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
        batch: i64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Milliseconds per U-Net forward pass and per 50-step DDIM sample (eta
    /// 0) of google/ddpm-cifar10-32's configuration (random weights) at batch
    /// 1 on the CPU in f32, beside diffusers' UNet2DModel and DDIMScheduler
    /// with the same weights, scheduler configuration and inputs.
    Ddpm {
        /// Intra-op threads for both implementations (default: all cores).
        #[arg(long, allow_negative_numbers = true)]
        threads: Option<i32>,
        /// Timed runs per pass and implementation in each round, after 1
        /// warm-up run; the median is taken.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
        runs: usize,
        /// Rounds of Rust then diffusers timings; the median over the rounds
        /// is reported.
        #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
        rounds: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Bench) -> Result<ExitCode> {
    match command {
        Bench::Generate {
            dtype,
            threads,
            new_tokens,
            runs,
            json,
        } => bench_generate(&dtype, threads, new_tokens, runs, json),
        Bench::TrainGpt {
            vocab_size,
            threads,
            steps,
            json,
        } => bench_train_gpt(vocab_size, threads, steps, json),
        Bench::DecodeGpt {
            threads,
            new_tokens,
            runs,
            json,
        } => bench_decode_gpt(threads, new_tokens, runs, json),
        Bench::Dvae {
            threads,
            runs,
            batch,
            json,
        } => bench_dvae(threads, runs, batch, json),
        Bench::Clip {
            threads,
            runs,
            batch,
            json,
        } => clip::bench_clip(threads, runs, batch, json),
        Bench::Ddpm {
            threads,
            runs,
            rounds,
            json,
        } => ddpm::bench_ddpm(threads, runs, rounds, json),
    }
}

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .join("reference")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

use crate::resolve_threads;

/// Runs `reference/SCRIPT` with `args` in the reference environment and
/// returns the JSON object of the last line that parses as one.
fn run_reference(script: &str, args: &[String]) -> Result<serde_json::Value> {
    let python = common::paths::python();
    let output = Command::new(&python)
        .current_dir(reference_dir())
        .arg(script)
        .args(args)
        .output()
        .with_context(|| {
            format!(
                "cannot run {}: run `{}`",
                python.display(),
                common::paths::SETUP_COMMAND
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "reference/{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .with_context(|| format!("reference/{script} printed no JSON"))
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("modelzoo-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench_generate(
    dtype: &str,
    threads: Option<i32>,
    new_tokens: usize,
    runs: usize,
    json: bool,
) -> Result<ExitCode> {
    let kind = common::device::parse_kind(dtype)?;
    let dtype = common::device::kind_name(kind);
    anyhow::ensure!(runs > 0, "--runs {runs} is invalid: use 1 or more");
    anyhow::ensure!(
        new_tokens > 1,
        "--new-tokens {new_tokens} is invalid: use 2 or more"
    );
    let threads = resolve_threads(threads)?;
    tch::set_num_threads(threads);
    let dir = crate::models::ensure_default_model()?;
    let session = Session::load(&dir, Device::Cpu, kind)?;
    let prompt_ids = session.prompt_ids(DEFAULT_PROMPT, true, None)?;

    // Rust: greedy decoding with no stop token, so every run decodes
    // exactly `new_tokens` tokens, as the reference does.
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for run in 0..=runs {
        let mut sampler = Sampler::new(SamplingConfig::default())?;
        let out = generation::generate(
            &session.model,
            &prompt_ids,
            new_tokens,
            &mut sampler,
            &[],
            |_| Ok(ControlFlow::Continue(())),
        )?;
        if run > 0 {
            prefill.push(
                out.prefill_tokens_per_second(prompt_ids.len())
                    .unwrap_or(f64::NAN),
            );
            decode.push(out.decode_tokens_per_second().unwrap_or(f64::NAN));
        }
    }
    let rust_prefill = median(prefill);
    let rust_decode = median(decode);

    let ids: Vec<String> = prompt_ids.iter().map(u32::to_string).collect();
    let reference = run_reference(
        "bench_generate.py",
        &[
            "--threads".into(),
            threads.to_string(),
            "--dtype".into(),
            dtype.into(),
            "--new-tokens".into(),
            new_tokens.to_string(),
            "--runs".into(),
            runs.to_string(),
            "--prompt-ids".into(),
            ids.join(","),
        ],
    )?;
    let number = |key: &str| reference[key].as_f64().unwrap_or(f64::NAN);
    let (py_prefill, py_decode) = (
        number("prefill_tokens_per_second"),
        number("decode_tokens_per_second"),
    );

    if json {
        let record = serde_json::json!({
            "model": "SmolLM2-135M-Instruct", "dtype": dtype, "device": "cpu",
            "threads": threads, "prompt_tokens": prompt_ids.len(), "new_tokens": new_tokens,
            "rust": {"prefill_tokens_per_second": rust_prefill, "decode_tokens_per_second": rust_decode},
            "reference": reference,
            "prefill_ratio": rust_prefill / py_prefill, "decode_ratio": rust_decode / py_decode,
        });
        println!("{record}");
    } else {
        println!(
            "SmolLM2-135M-Instruct, {dtype}, CPU, {threads} threads, {} prompt tokens, {new_tokens} new tokens, median of {runs}",
            prompt_ids.len()
        );
        println!("| phase   | Rust (tokens/s) | transformers (tokens/s) | ratio |");
        println!("|---------|-----------------|-------------------------|-------|");
        println!(
            "| prefill | {rust_prefill:>15.1} | {py_prefill:>23.1} | {:>5.2} |",
            rust_prefill / py_prefill
        );
        println!(
            "| decode  | {rust_decode:>15.1} | {py_decode:>23.1} | {:>5.2} |",
            rust_decode / py_decode
        );
        println!(
            "reference: {}",
            reference["implementation"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

// The training benchmark's shape and optimizer settings. They are fixed,
// and reference/bench_gpt.py repeats them.
const TRAIN_LAYERS: i64 = 6;
const TRAIN_WIDTH: i64 = 384;
const TRAIN_HEADS: i64 = 6;
const TRAIN_CONTEXT: i64 = 256;
const TRAIN_BATCH: i64 = 8;
const TRAIN_WARMUP_STEPS: usize = 2;
const TRAIN_LEARNING_RATE: f64 = 3e-4;
/// Rust speed over PyTorch speed that the training benchmark aims for.
const TRAIN_TARGET: f64 = 1.0;
/// The largest difference between the two sides' losses at any step that
/// still counts as agreement. Both sides call the same libtorch kernels, and
/// their losses near 10 differ by a few f32 rounding steps (about 1e-6).
const LOSS_TOLERANCE: f64 = 1e-4;

/// Rust decode speed over transformers' that the decode benchmark aims for.
const DECODE_TARGET: f64 = 1.5;
const DECODE_PROMPT_TOKENS: i64 = 32;
/// The factor on GPT-2's initial weight matrices (std 0.02) in the decode
/// benchmark. At the initial scale, greedy decoding repeats one token from
/// the second new token on. At 3 times the scale it picks varied tokens, so
/// comparing the two sides' tokens checks many distinct choices.
const DECODE_WEIGHT_SCALE: f64 = 3.0;

/// Returns GPT-2's layout at 6 layers of width 384, 6 heads of 64, 256
/// positions and no dropout.
fn train_config(vocab_size: i64) -> gpt::Config {
    let mut config = gpt::Config::gpt2_124m();
    config.vocab_size = vocab_size;
    config.context_length = TRAIN_CONTEXT;
    config.hidden_size = TRAIN_WIDTH;
    config.num_layers = TRAIN_LAYERS;
    config.num_heads = TRAIN_HEADS;
    config.head_dim = TRAIN_WIDTH / TRAIN_HEADS;
    config.intermediate_size = 4 * TRAIN_WIDTH;
    config.attention_layers = vec![gpt::AttentionKind::Dense; TRAIN_LAYERS as usize];
    config.dropout = 0.0;
    config
}

use common::device::total_memory_bytes;

/// Rejects a configuration whose training step cannot fit in memory, before
/// libtorch's allocations fail (the variable store panics when they do).
fn check_train_memory(config: &gpt::Config) -> Result<()> {
    // A lower bound in f32: weights, gradients and AdamW's two moments, plus
    // the logits and their gradient.
    let parameters = config.num_parameters() as f64;
    let logits = (TRAIN_BATCH * TRAIN_CONTEXT) as f64 * config.vocab_size as f64;
    let needed = 4.0 * (4.0 * parameters + 2.0 * logits);
    let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
    if let Some(total) = total_memory_bytes() {
        anyhow::ensure!(
            needed <= total as f64,
            "--vocab-size {} is too large: a training step needs at least {:.1} GiB, \
             more than the {:.1} GiB of memory of this machine",
            config.vocab_size,
            gib(needed),
            gib(total as f64)
        );
    }
    Ok(())
}

/// The Rust side of the training benchmark.
struct TrainRun {
    /// Milliseconds of each timed step.
    step_ms: Vec<f64>,
    /// The loss of every step, warm-up included.
    losses: Vec<f64>,
}

/// Times `steps` AdamW steps of `model` on `batch`, `(batch, context + 1)`
/// token ids, after the warm-up steps.
fn time_train_steps(
    model: &gpt::Gpt,
    vs: &VarStore,
    batch: &Tensor,
    steps: usize,
) -> Result<TrainRun> {
    let options = TrainOptions {
        learning_rate: TRAIN_LEARNING_RATE,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        grad_clip: 1.0,
        ..TrainOptions::default()
    };
    options.validate()?;
    let mut optimizer = AdamW::new(vs, &options)?;
    let context = batch.size()[1] - 1;
    let inputs = batch.f_narrow(1, 0, context)?.f_contiguous()?;
    let targets = batch.f_narrow(1, 1, context)?.f_reshape([-1])?;
    let vocab = model.config().vocab_size;

    let mut run = TrainRun {
        step_ms: Vec::with_capacity(steps),
        losses: Vec::with_capacity(TRAIN_WARMUP_STEPS + steps),
    };
    for step in 0..TRAIN_WARMUP_STEPS + steps {
        let start = Instant::now();
        optimizer.zero_grad();
        let hidden = model.hidden_states_t(&inputs, None, true)?;
        let logits = model.logits(&hidden).f_reshape([-1, vocab])?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(
            &targets,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?;
        loss.f_backward()?;
        optimizer.clip_grad_norm(options.grad_clip)?;
        optimizer.step(options.learning_rate)?;
        run.losses.push(loss.f_double_value(&[])?);
        if step >= TRAIN_WARMUP_STEPS {
            run.step_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(run)
}

fn bench_train_gpt(
    vocab_size: i64,
    threads: Option<i32>,
    steps: usize,
    json: bool,
) -> Result<ExitCode> {
    anyhow::ensure!(steps > 0, "--steps {steps} is invalid: use 1 or more");
    anyhow::ensure!(
        vocab_size > 0,
        "--vocab-size {vocab_size} is invalid: use 1 or more"
    );
    let threads = resolve_threads(threads)?;
    tch::set_num_threads(threads);
    let config = train_config(vocab_size);
    check_train_memory(&config)?;
    let dir = TempDir::new("bench-train-gpt")?;

    // Both sides start from these weights and train on this batch.
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = gpt::Gpt::new(&vs.root(), &config)?;
    let batch = Tensor::f_randint(
        vocab_size,
        [TRAIN_BATCH, TRAIN_CONTEXT + 1],
        (Kind::Int64, Device::Cpu),
    )?;
    gpt::save(&vs, &config, &config.to_hf(), &dir.0)?;
    let inputs_file = dir.0.join("inputs.safetensors");
    Tensor::write_safetensors(&[("input_ids", &batch)], &inputs_file)?;
    let parameters: i64 = vs
        .trainable_variables()
        .iter()
        .map(Tensor::numel)
        .sum::<usize>() as i64;

    let rust = time_train_steps(&model, &vs, &batch, steps)?;
    drop((model, vs));

    let reference = run_reference(
        "bench_gpt.py",
        &[
            "train".into(),
            "--threads".into(),
            threads.to_string(),
            "--steps".into(),
            steps.to_string(),
            "--warmup".into(),
            TRAIN_WARMUP_STEPS.to_string(),
            "--model-dir".into(),
            dir.0.display().to_string(),
            "--inputs".into(),
            inputs_file.display().to_string(),
        ],
    )?;
    let rust_ms = median(rust.step_ms);
    let py_ms = reference["step_ms"].as_f64().unwrap_or(f64::NAN);
    let tokens = (TRAIN_BATCH * TRAIN_CONTEXT) as f64;
    let (rust_tps, py_tps) = (tokens / rust_ms * 1e3, tokens / py_ms * 1e3);
    let ratio = py_ms / rust_ms;
    let py_losses: Vec<f64> = reference["losses"]
        .as_array()
        .map(|l| l.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        py_losses.len() == rust.losses.len(),
        "reference/bench_gpt.py returned {} losses for {} steps",
        py_losses.len(),
        rust.losses.len()
    );
    let differences: Vec<f64> = rust
        .losses
        .iter()
        .zip(&py_losses)
        .map(|(a, b)| (a - b).abs())
        .collect();
    // NaN, from a diverged loss on either side, propagates and disagrees.
    let loss_difference = differences.iter().fold(0.0, |max: f64, &d| {
        if max.is_nan() || d.is_nan() {
            f64::NAN
        } else {
            max.max(d)
        }
    });
    let losses_agree = differences.iter().all(|&d| d <= LOSS_TOLERANCE);

    if json {
        let record = serde_json::json!({
            "model": "GPT-2 layout", "layers": TRAIN_LAYERS, "width": TRAIN_WIDTH,
            "heads": TRAIN_HEADS, "context": TRAIN_CONTEXT, "batch_size": TRAIN_BATCH,
            "vocab_size": vocab_size, "parameters": parameters, "dtype": "f32",
            "device": "cpu", "threads": threads, "steps": steps,
            "warmup_steps": TRAIN_WARMUP_STEPS,
            "rust": {"step_ms": rust_ms, "tokens_per_second": rust_tps, "losses": rust.losses},
            "reference": reference,
            "ratio": ratio, "target": TRAIN_TARGET, "target_met": ratio >= TRAIN_TARGET,
            "max_loss_difference": loss_difference, "losses_agree": losses_agree,
        });
        println!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "GPT-2 layout, {TRAIN_LAYERS} layers, width {TRAIN_WIDTH}, {TRAIN_HEADS} heads, \
         context {TRAIN_CONTEXT}, batch {TRAIN_BATCH}, vocabulary {vocab_size} \
         ({parameters} parameters), f32, CPU, {threads} threads, \
         median of {steps} steps after {TRAIN_WARMUP_STEPS} warm-up steps"
    );
    println!("| side         | ms/step  | tokens/s |");
    println!("|--------------|----------|----------|");
    println!("| Rust         | {rust_ms:>8.1} | {rust_tps:>8.1} |");
    println!("| transformers | {py_ms:>8.1} | {py_tps:>8.1} |");
    println!(
        "ratio (Rust speed / PyTorch speed): {ratio:.2}; target: at least {TRAIN_TARGET:.1}, {}",
        if ratio >= TRAIN_TARGET {
            "met"
        } else {
            "not met"
        }
    );
    println!(
        "losses of all {} steps agree within {LOSS_TOLERANCE:e}: {} \
         (largest difference {loss_difference:.2e})",
        rust.losses.len(),
        if losses_agree { "yes" } else { "no" }
    );
    println!(
        "reference: {}; {}",
        reference["implementation"].as_str().unwrap_or("?"),
        reference["optimizer"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// Multiplies every variable of two or more dimensions in `vs` by `factor`.
fn scale_matrices(vs: &VarStore, factor: f64) -> Result<()> {
    let _guard = tch::no_grad_guard();
    for mut variable in vs.trainable_variables() {
        if variable.dim() >= 2 {
            let _ = variable.f_mul_scalar_(factor)?;
        }
    }
    Ok(())
}

/// The Rust side of the decode benchmark.
struct DecodeRun {
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: f64,
    tokens: Vec<u32>,
}

/// Decodes `new_tokens` tokens greedily `runs` times after a warm-up run and
/// returns the medians and the tokens, which must be the same in every run.
fn time_decode(
    model: &gpt::Gpt,
    prompt: &[u32],
    new_tokens: usize,
    runs: usize,
) -> Result<DecodeRun> {
    let mut prefill = Vec::with_capacity(runs);
    let mut decode = Vec::with_capacity(runs);
    let mut tokens: Option<Vec<u32>> = None;
    for run in 0..=runs {
        let mut sampler = Sampler::new(SamplingConfig::default())?;
        let out = generation::generate(model, prompt, new_tokens, &mut sampler, &[], |_| {
            Ok(ControlFlow::Continue(()))
        })?;
        anyhow::ensure!(
            out.tokens.len() == new_tokens,
            "decoding stopped after {} of {new_tokens} tokens ({:?})",
            out.tokens.len(),
            out.finish
        );
        if let Some(first) = &tokens {
            anyhow::ensure!(
                *first == out.tokens,
                "greedy decoding gave different tokens in different runs"
            );
        }
        if run > 0 {
            prefill.push(
                out.prefill_tokens_per_second(prompt.len())
                    .unwrap_or(f64::NAN),
            );
            decode.push(out.decode_tokens_per_second().unwrap_or(f64::NAN));
        }
        tokens.get_or_insert(out.tokens);
    }
    Ok(DecodeRun {
        prefill_tokens_per_second: median(prefill),
        decode_tokens_per_second: median(decode),
        tokens: tokens.unwrap_or_default(),
    })
}

fn bench_decode_gpt(
    threads: Option<i32>,
    new_tokens: usize,
    runs: usize,
    json: bool,
) -> Result<ExitCode> {
    anyhow::ensure!(runs > 0, "--runs {runs} is invalid: use 1 or more");
    let config = gpt::Config::gpt2_124m();
    let max_new = (config.context_length - DECODE_PROMPT_TOKENS) as usize;
    anyhow::ensure!(
        (2..=max_new).contains(&new_tokens),
        "--new-tokens {new_tokens} is invalid: use 2 to {max_new} \
         (the context of {} minus the {DECODE_PROMPT_TOKENS}-token prompt)",
        config.context_length
    );
    let threads = resolve_threads(threads)?;
    tch::set_num_threads(threads);
    let dir = TempDir::new("bench-decode-gpt")?;

    // Random weights, because `scripts/setup.sh` installs no GPT-2
    // checkpoint. The reference loads the same weights from `dir`.
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = gpt::Gpt::new(&vs.root(), &config)?;
    scale_matrices(&vs, DECODE_WEIGHT_SCALE)?;
    gpt::save(&vs, &config, &config.to_hf(), &dir.0)?;
    // Token ids spread over the vocabulary by a fixed stride.
    let prompt: Vec<u32> = (0..DECODE_PROMPT_TOKENS)
        .map(|i| ((i * 7919 + 464) % config.vocab_size) as u32)
        .collect();

    let rust = time_decode(&model, &prompt, new_tokens, runs)?;
    drop((model, vs));

    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let reference = run_reference(
        "bench_gpt.py",
        &[
            "decode".into(),
            "--threads".into(),
            threads.to_string(),
            "--model-dir".into(),
            dir.0.display().to_string(),
            "--prompt-ids".into(),
            ids.join(","),
            "--new-tokens".into(),
            new_tokens.to_string(),
            "--runs".into(),
            runs.to_string(),
        ],
    )?;
    let number = |key: &str| reference[key].as_f64().unwrap_or(f64::NAN);
    let (py_prefill, py_decode) = (
        number("prefill_tokens_per_second"),
        number("decode_tokens_per_second"),
    );
    let py_tokens: Vec<u32> = reference["tokens"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect()
        })
        .unwrap_or_default();
    // The first position where the two greedy sequences differ, if any.
    let mismatch = (0..new_tokens).find(|&i| rust.tokens.get(i) != py_tokens.get(i));
    let (rust_prefill, rust_decode) = (
        rust.prefill_tokens_per_second,
        rust.decode_tokens_per_second,
    );
    let ratio = rust_decode / py_decode;

    if json {
        let record = serde_json::json!({
            "model": "GPT-2 124M, random weights", "dtype": "f32", "device": "cpu",
            "threads": threads, "prompt_tokens": prompt.len(), "new_tokens": new_tokens,
            "rust": {"prefill_tokens_per_second": rust_prefill,
                     "decode_tokens_per_second": rust_decode, "tokens": rust.tokens},
            "reference": reference,
            "prefill_ratio": rust_prefill / py_prefill, "decode_ratio": ratio,
            "target": DECODE_TARGET, "target_met": ratio >= DECODE_TARGET,
            "tokens_agree": mismatch.is_none(),
        });
        println!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "GPT-2 124M (random weights), f32, CPU, {threads} threads, {} prompt tokens, \
         {new_tokens} new tokens, greedy, median of {runs}",
        prompt.len()
    );
    println!("| phase   | Rust (tokens/s) | transformers (tokens/s) | ratio |");
    println!("|---------|-----------------|-------------------------|-------|");
    println!(
        "| prefill | {rust_prefill:>15.1} | {py_prefill:>23.1} | {:>5.2} |",
        rust_prefill / py_prefill
    );
    println!("| decode  | {rust_decode:>15.1} | {py_decode:>23.1} | {ratio:>5.2} |");
    println!(
        "decode target: at least {DECODE_TARGET:.1} times transformers, {}",
        if ratio >= DECODE_TARGET {
            "met"
        } else {
            "not met"
        }
    );
    match mismatch {
        None => println!("greedy tokens agree: yes, all {new_tokens}"),
        Some(i) => println!(
            "greedy tokens agree: no, they first differ at new token {i} \
             (Rust {:?}, transformers {:?})",
            rust.tokens.get(i),
            py_tokens.get(i)
        ),
    }
    println!(
        "reference: {}",
        reference["implementation"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// Untimed runs before the timed ones in the forward-pass benchmarks.
const WARMUP_RUNS: usize = 1;

// The dVAE benchmark's fixed settings. reference/bench_dvae.py takes the
// shapes from the files that the Rust side writes.
const DVAE_IMAGE_SIZE: i64 = 256;
const DVAE_MAX_BATCH: i64 = 64;
/// An estimate of the memory of either side apart from the images: the
/// weights (97.6 million f32 values) and the libraries.
const DVAE_BASE_BYTES: f64 = (1u64 << 30) as f64;
/// An estimate of the peak memory per image of either side: the activations
/// of the larger pass, the one-hot codes, the logits, and the Rust side's
/// outputs, which it keeps while the reference runs.
// NOTE: the activations were measured as the growth in peak resident memory
// of `dall_e`'s passes from batch 1 to batch 2 (about 300 MiB, torch 2.13,
// 2 threads), and the rest is counted from the shapes. Other libtorch
// versions or thread counts may pick convolution algorithms with other
// workspaces.
const DVAE_BYTES_PER_IMAGE: f64 = (512u64 << 20) as f64;
/// The largest difference between the two sides' encoder logits or decoder
/// outputs that still counts as agreement. Both sides call the same libtorch
/// convolutions, and the values are of order 1.
const DVAE_TOLERANCE: f64 = 1e-3;

/// Rejects a batch whose forward passes cannot fit in memory, before
/// libtorch's allocations fail.
fn check_dvae_memory(batch: i64) -> Result<()> {
    let needed = DVAE_BASE_BYTES + batch as f64 * DVAE_BYTES_PER_IMAGE;
    let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
    if let Some(total) = total_memory_bytes() {
        anyhow::ensure!(
            needed <= total as f64,
            "--batch {batch} is too large: its forward passes need about {:.1} GiB, \
             more than the {:.1} GiB of memory of this machine; use a smaller --batch",
            gib(needed),
            gib(total as f64)
        );
    }
    Ok(())
}

/// Writes every variable of `vs` to the safetensors file `path`, under its
/// name in `vs`.
fn save_variables(vs: &VarStore, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    common::checkpoint::save(path, &tensors, None)?;
    Ok(())
}

/// Runs a forward-pass benchmark script of `reference/` (`bench_dvae.py`,
/// `bench_clip.py`, `bench_ddpm.py`) on the model and inputs that the Rust
/// side wrote into `dir`, with the script's own `extra` arguments, and
/// returns its JSON result and the file where it wrote its outputs.
fn run_forward_reference(
    script: &str,
    threads: i32,
    dir: &TempDir,
    inputs_file: &Path,
    runs: usize,
    extra: &[String],
) -> Result<(serde_json::Value, PathBuf)> {
    let outputs_file = dir.0.join("outputs.safetensors");
    let mut args: Vec<String> = vec![
        "--threads".into(),
        threads.to_string(),
        "--model-dir".into(),
        dir.0.display().to_string(),
        "--inputs".into(),
        inputs_file.display().to_string(),
        "--outputs".into(),
        outputs_file.display().to_string(),
        "--runs".into(),
        runs.to_string(),
        "--warmup".into(),
        WARMUP_RUNS.to_string(),
    ];
    args.extend_from_slice(extra);
    let reference = run_reference(script, &args)?;
    Ok((reference, outputs_file))
}

/// Calls `forward` untimed [`WARMUP_RUNS`] times, then `runs` timed
/// times, and returns the median milliseconds and the last output.
fn time_forward(
    forward: impl Fn() -> common::Result<Tensor>,
    runs: usize,
) -> Result<(f64, Tensor)> {
    for _ in 0..WARMUP_RUNS {
        let _ = forward()?;
    }
    let mut milliseconds = Vec::with_capacity(runs);
    let mut output = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = forward()?;
        milliseconds.push(start.elapsed().as_secs_f64() * 1e3);
        output = Some(out);
    }
    let output = output.context("--runs 0 is invalid: use 1 or more")?;
    Ok((median(milliseconds), output))
}

/// The differences between the outputs of the two sides.
struct DvaeAgreement {
    /// Grid positions where both encoders chose the same code.
    codes_identical: i64,
    codes_total: i64,
    /// The largest difference between the Rust encoder's maximum logit and
    /// its logit at the code that the reference chose, 0 where all codes
    /// are identical. It is small where the codes differ only at near ties.
    largest_code_gap: f64,
    /// The largest difference between the encoders' logits of the first
    /// image.
    largest_logit_difference: f64,
    /// The largest difference between the decoders' outputs.
    largest_output_difference: f64,
}

impl DvaeAgreement {
    /// Returns whether every difference is within [`DVAE_TOLERANCE`], and
    /// false where any is NaN.
    fn agrees(&self) -> bool {
        [
            self.largest_code_gap,
            self.largest_logit_difference,
            self.largest_output_difference,
        ]
        .iter()
        .all(|&d| d <= DVAE_TOLERANCE)
    }
}

fn largest_difference(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(a.f_sub(b)?.f_abs()?.f_max()?.f_double_value(&[])?)
}

/// Compares the Rust encoder's `logits` and decoder's `stats` with the
/// reference's outputs in the safetensors file `path` (`codes`, the
/// `logits` of the first image and `stats`).
fn compare_dvae_outputs(logits: &Tensor, stats: &Tensor, path: &Path) -> Result<DvaeAgreement> {
    let reference = common::checkpoint::read(path)?;
    let get = |name: &str| {
        reference
            .get(name)
            .with_context(|| format!("{} has no tensor {name:?}", path.display()))
    };
    let codes = logits.f_argmax(1, false)?;
    let first_logits = logits.f_narrow(0, 0, 1)?;
    let (py_codes, py_logits, py_stats) = (get("codes")?, get("logits")?, get("stats")?);
    for (name, rust, python) in [
        ("codes", &codes, py_codes),
        ("logits", &first_logits, py_logits),
        ("stats", stats, py_stats),
    ] {
        anyhow::ensure!(
            rust.size() == python.size(),
            "reference/bench_dvae.py returned {name} of shape {:?}, expected {:?}",
            python.size(),
            rust.size()
        );
    }
    let py_codes = py_codes.f_to_kind(Kind::Int64)?;
    let codes_identical = codes.f_eq_tensor(&py_codes)?.f_sum(Kind::Int64)?;
    let best = logits.f_amax([1], false)?;
    let at_reference = logits.f_gather(1, &py_codes.f_unsqueeze(1)?, false)?;
    Ok(DvaeAgreement {
        codes_identical: codes_identical.f_int64_value(&[])?,
        codes_total: codes.numel() as i64,
        largest_code_gap: largest_difference(&best, &at_reference.f_squeeze_dim(1)?)?,
        largest_logit_difference: largest_difference(&first_logits, py_logits)?,
        largest_output_difference: largest_difference(stats, py_stats)?,
    })
}

fn bench_dvae(threads: Option<i32>, runs: usize, batch: i64, json: bool) -> Result<ExitCode> {
    anyhow::ensure!(runs > 0, "--runs {runs} is invalid: use 1 or more");
    anyhow::ensure!(
        (1..=DVAE_MAX_BATCH).contains(&batch),
        "--batch {batch} is invalid: use 1 to {DVAE_MAX_BATCH}"
    );
    let threads = resolve_threads(threads)?;
    check_dvae_memory(batch)?;
    tch::set_num_threads(threads);
    let config = dvae::Config::openai();
    let dir = TempDir::new("bench-dvae")?;

    // Random weights, drawn as `dall_e` draws them. The reference loads the
    // same weights and inputs from `dir`.
    tch::manual_seed(0);
    let encoder_vs = VarStore::new(Device::Cpu);
    let encoder = dvae::Encoder::new(&encoder_vs.root(), &config)?;
    let decoder_vs = VarStore::new(Device::Cpu);
    let decoder = dvae::Decoder::new(&decoder_vs.root(), &config)?;
    save_variables(&encoder_vs, &dir.0.join(dvae::ENCODER_FILE))?;
    save_variables(&decoder_vs, &dir.0.join(dvae::DECODER_FILE))?;
    let side = DVAE_IMAGE_SIZE;
    let grid = side / config.downsample_factor();
    let pixels = Tensor::f_rand(
        [batch, config.input_channels, side, side],
        (Kind::Float, Device::Cpu),
    )?;
    let images = dvae::map_pixels(&pixels);
    let codes = Tensor::f_randint(
        config.vocab_size,
        [batch, grid, grid],
        (Kind::Int64, Device::Cpu),
    )?;
    let inputs_file = dir.0.join("inputs.safetensors");
    Tensor::write_safetensors(&[("images", &images), ("codes", &codes)], &inputs_file)?;
    let one_hot = dvae::one_hot_codes(&codes, config.vocab_size)?;

    let (rust_encoder_ms, logits) =
        tch::no_grad(|| time_forward(|| encoder.forward(&images), runs))?;
    let (rust_decoder_ms, stats) =
        tch::no_grad(|| time_forward(|| decoder.forward(&one_hot), runs))?;
    drop((encoder, decoder, encoder_vs, decoder_vs, one_hot));

    let (reference, outputs_file) =
        run_forward_reference("bench_dvae.py", threads, &dir, &inputs_file, runs, &[])?;
    let agreement = compare_dvae_outputs(&logits, &stats, &outputs_file)?;
    anyhow::ensure!(
        agreement.agrees(),
        "the Rust and dall_e outputs differ by more than {DVAE_TOLERANCE:e}: \
         {} of {} encoder codes identical (largest logit gap at a differing code \
         {:.2e}), largest logit difference {:.2e}, largest decoder output difference \
         {:.2e}",
        agreement.codes_identical,
        agreement.codes_total,
        agreement.largest_code_gap,
        agreement.largest_logit_difference,
        agreement.largest_output_difference
    );

    let number = |key: &str| reference[key].as_f64().unwrap_or(f64::NAN);
    let (py_encoder_ms, py_decoder_ms) = (number("encoder_ms"), number("decoder_ms"));
    let images_per_second = |ms: f64| batch as f64 / ms * 1e3;
    let encoder_ratio = py_encoder_ms / rust_encoder_ms;
    let decoder_ratio = py_decoder_ms / rust_decoder_ms;

    if json {
        let record = serde_json::json!({
            "model": "DALL-E dVAE, OpenAI configuration, random weights",
            "image_size": side, "batch_size": batch, "dtype": "f32", "device": "cpu",
            "threads": threads, "runs": runs, "warmup_runs": WARMUP_RUNS,
            "rust": {
                "encoder_ms": rust_encoder_ms, "decoder_ms": rust_decoder_ms,
                "encoder_images_per_second": images_per_second(rust_encoder_ms),
                "decoder_images_per_second": images_per_second(rust_decoder_ms),
            },
            "reference": reference,
            "encoder_ratio": encoder_ratio, "decoder_ratio": decoder_ratio,
            "tolerance": DVAE_TOLERANCE,
            "codes_identical": agreement.codes_identical,
            "codes_total": agreement.codes_total,
            "largest_code_gap": agreement.largest_code_gap,
            "largest_logit_difference": agreement.largest_logit_difference,
            "largest_output_difference": agreement.largest_output_difference,
        });
        println!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "DALL-E dVAE (OpenAI configuration, random weights), {side} x {side}, batch {batch}, \
         f32, CPU, {threads} threads, median of {runs} after {WARMUP_RUNS} warm-up run"
    );
    println!("| pass    | Rust (ms) | dall_e (ms) | Rust (images/s) | dall_e (images/s) | ratio |");
    println!("|---------|-----------|-------------|-----------------|-------------------|-------|");
    for (pass, rust_ms, py_ms, ratio) in [
        ("encoder", rust_encoder_ms, py_encoder_ms, encoder_ratio),
        ("decoder", rust_decoder_ms, py_decoder_ms, decoder_ratio),
    ] {
        println!(
            "| {pass} | {rust_ms:>9.1} | {py_ms:>11.1} | {:>15.2} | {:>17.2} | {ratio:>5.2} |",
            images_per_second(rust_ms),
            images_per_second(py_ms)
        );
    }
    println!("ratio: Rust speed / PyTorch speed; above 1, Rust is faster");
    println!(
        "outputs agree within {DVAE_TOLERANCE:e}: {} of {} encoder codes identical, \
         largest logit difference {:.2e}, largest decoder output difference {:.2e}",
        agreement.codes_identical,
        agreement.codes_total,
        agreement.largest_logit_difference,
        agreement.largest_output_difference
    );
    println!(
        "reference: {}",
        reference["implementation"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<ExitCode>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn threads_zero_rejected() {
        let err = resolve_threads(Some(0)).unwrap_err().to_string();
        assert!(err.contains("--threads 0 is invalid"), "{err}");
        assert_eq!(resolve_threads(Some(3)).unwrap(), 3);
        assert!(resolve_threads(None).unwrap() >= 1);
    }

    #[test]
    fn train_gpt_rejects_bad_values() {
        let err = message(bench_train_gpt(gpt::GPT2_VOCAB_SIZE, None, 0, false));
        assert!(err.contains("--steps 0 is invalid"), "{err}");
        let err = message(bench_train_gpt(0, None, 1, false));
        assert!(err.contains("--vocab-size 0 is invalid"), "{err}");
        let err = message(bench_train_gpt(gpt::GPT2_VOCAB_SIZE, Some(-1), 1, false));
        assert!(err.contains("--threads -1 is invalid"), "{err}");
    }

    #[test]
    fn train_memory_check_rejects_huge_vocabulary() {
        if total_memory_bytes().is_none() {
            return;
        }
        let err = check_train_memory(&train_config(1 << 40))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is too large"), "{err}");
        assert!(check_train_memory(&train_config(gpt::GPT2_VOCAB_SIZE)).is_ok());
    }

    #[test]
    fn decode_gpt_rejects_bad_values() {
        let err = message(bench_decode_gpt(None, 0, 3, false));
        assert!(err.contains("--new-tokens 0 is invalid"), "{err}");
        let err = message(bench_decode_gpt(None, 2000, 3, false));
        assert!(err.contains("--new-tokens 2000 is invalid"), "{err}");
        let err = message(bench_decode_gpt(None, 64, 0, false));
        assert!(err.contains("--runs 0 is invalid"), "{err}");
        let err = message(bench_decode_gpt(Some(0), 64, 3, false));
        assert!(err.contains("--threads 0 is invalid"), "{err}");
    }

    #[test]
    fn dvae_rejects_bad_values() {
        let err = message(bench_dvae(None, 0, 1, false));
        assert!(err.contains("--runs 0 is invalid"), "{err}");
        for batch in [0, -3, DVAE_MAX_BATCH + 1] {
            let err = message(bench_dvae(None, 1, batch, false));
            assert!(
                err.contains(&format!("--batch {batch} is invalid")),
                "{err}"
            );
        }
        let err = message(bench_dvae(Some(0), 1, 1, false));
        assert!(err.contains("--threads 0 is invalid"), "{err}");
        let err = message(bench_dvae(Some(-2), 1, 1, false));
        assert!(err.contains("--threads -2 is invalid"), "{err}");
    }

    #[test]
    fn ddpm_rejects_bad_values() {
        let err = message(ddpm::bench_ddpm(None, 0, 1, false));
        assert!(err.contains("--runs 0 is invalid"), "{err}");
        for rounds in [0, 21] {
            let err = message(ddpm::bench_ddpm(None, 1, rounds, false));
            assert!(
                err.contains(&format!("--rounds {rounds} is invalid")),
                "{err}"
            );
        }
        let err = message(ddpm::bench_ddpm(Some(0), 1, 1, false));
        assert!(err.contains("--threads 0 is invalid"), "{err}");
        let err = message(ddpm::bench_ddpm(Some(-2), 1, 1, true));
        assert!(err.contains("--threads -2 is invalid"), "{err}");
        let too_many = crate::MAX_THREADS + 1;
        let err = message(ddpm::bench_ddpm(Some(too_many), 1, 1, false));
        assert!(
            err.contains(&format!("--threads {too_many} is invalid")),
            "{err}"
        );
    }

    #[test]
    fn dvae_memory_check_bounds_batch() {
        let Some(total) = total_memory_bytes() else {
            return;
        };
        let fits =
            |batch: i64| DVAE_BASE_BYTES + batch as f64 * DVAE_BYTES_PER_IMAGE <= total as f64;
        for batch in [1, DVAE_MAX_BATCH] {
            let result = check_dvae_memory(batch);
            if fits(batch) {
                assert!(result.is_ok(), "batch {batch}");
            } else {
                let err = result.unwrap_err().to_string();
                assert!(
                    err.contains(&format!("--batch {batch} is too large")),
                    "{err}"
                );
            }
        }
    }

    /// Logits `(1, 3, 1, 2)` whose argmax is code 0 at the first position
    /// (ahead of code 1 by 1e-4 and of code 2 by 0.4) and code 2 at the
    /// second, and decoder output `(1, 2, 2, 2)`.
    fn small_outputs() -> (Tensor, Tensor) {
        let logits =
            Tensor::from_slice(&[0.5f32, -1.0, 0.4999, 0.2, 0.1, 3.0]).reshape([1, 3, 1, 2]);
        let stats = Tensor::arange(8, (Kind::Float, Device::Cpu)).reshape([1, 2, 2, 2]);
        (logits, stats)
    }

    fn write_outputs(dir: &Path, codes: &[i64], logits: &Tensor, stats: &Tensor) -> PathBuf {
        let path = dir.join("outputs.safetensors");
        let codes = Tensor::from_slice(codes).reshape([1, 1, 2]);
        let tensors = [("codes", &codes), ("logits", logits), ("stats", stats)];
        Tensor::write_safetensors(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn dvae_comparison_accepts_equal_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (logits, stats) = small_outputs();
        let path = write_outputs(dir.path(), &[0, 2], &logits, &stats);
        let agreement = compare_dvae_outputs(&logits, &stats, &path).unwrap();
        assert_eq!(agreement.codes_identical, 2);
        assert_eq!(agreement.codes_total, 2);
        assert_eq!(agreement.largest_code_gap, 0.0);
        assert_eq!(agreement.largest_logit_difference, 0.0);
        assert_eq!(agreement.largest_output_difference, 0.0);
        assert!(agreement.agrees());
    }

    #[test]
    fn dvae_comparison_accepts_code_at_near_tie() {
        let dir = tempfile::tempdir().unwrap();
        let (logits, stats) = small_outputs();
        // Code 1 at the first position is 1e-4 below the maximum logit.
        let path = write_outputs(dir.path(), &[1, 2], &logits, &stats);
        let agreement = compare_dvae_outputs(&logits, &stats, &path).unwrap();
        assert_eq!(agreement.codes_identical, 1);
        assert!((agreement.largest_code_gap - 1e-4).abs() < 1e-6);
        assert!(agreement.agrees());
    }

    #[test]
    fn dvae_comparison_rejects_distant_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (logits, stats) = small_outputs();
        // Code 2 at the first position is 0.4 below the maximum logit.
        let path = write_outputs(dir.path(), &[2, 2], &logits, &stats);
        let agreement = compare_dvae_outputs(&logits, &stats, &path).unwrap();
        assert!((agreement.largest_code_gap - 0.4).abs() < 1e-6);
        assert!(!agreement.agrees());

        let shifted = &stats + 0.01;
        let path = write_outputs(dir.path(), &[0, 2], &logits, &shifted);
        let agreement = compare_dvae_outputs(&logits, &stats, &path).unwrap();
        assert!((agreement.largest_output_difference - 0.01).abs() < 1e-6);
        assert!(!agreement.agrees());

        let nan = stats.full_like(f64::NAN);
        let path = write_outputs(dir.path(), &[0, 2], &logits, &nan);
        let agreement = compare_dvae_outputs(&logits, &stats, &path).unwrap();
        assert!(!agreement.agrees());
    }

    #[test]
    fn dvae_comparison_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (logits, stats) = small_outputs();
        let path = dir.path().join("outputs.safetensors");
        Tensor::write_safetensors(&[("logits", &logits), ("stats", &stats)], &path).unwrap();
        let err = compare_dvae_outputs(&logits, &stats, &path)
            .err()
            .expect("a missing tensor is an error")
            .to_string();
        assert!(err.contains("has no tensor \"codes\""), "{err}");

        let wide = Tensor::zeros([1, 2, 2, 3], (Kind::Float, Device::Cpu));
        let path = write_outputs(dir.path(), &[0, 2], &logits, &wide);
        let err = compare_dvae_outputs(&logits, &stats, &path)
            .err()
            .expect("a shape mismatch is an error")
            .to_string();
        assert!(
            err.contains("returned stats of shape [1, 2, 2, 3]"),
            "{err}"
        );

        // A code outside the vocabulary fails in gather, without a panic.
        let path = write_outputs(dir.path(), &[0, 7], &logits, &stats);
        assert!(compare_dvae_outputs(&logits, &stats, &path).is_err());
    }

    #[test]
    fn train_config_matches_benchmark_shape() {
        let config = train_config(gpt::GPT2_VOCAB_SIZE);
        config.validate().unwrap();
        assert_eq!(config.num_heads * config.head_dim, config.hidden_size);
        assert_eq!(config.attention_layers.len() as i64, config.num_layers);
        assert_eq!(config.to_hf()["model_type"], "gpt2");
        assert_eq!(config.num_parameters(), 30_044_544);
    }
}
