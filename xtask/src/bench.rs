//! `cargo xtask bench`: speed beside the Python reference, in one run, on the
//! same threads.

use crate::generate::{Session, DEFAULT_PROMPT};
use anyhow::{Context, Result};
use clap::Subcommand;
use common::generation;
use common::sampling::{Sampler, SamplingConfig};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use tch::Device;

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
    let threads = match threads {
        Some(t) if t > 0 => t,
        Some(t) => anyhow::bail!("--threads {t} is invalid: use 1 or more"),
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
    };
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
    let python = common::paths::python();
    let output = Command::new(&python)
        .current_dir(reference_dir())
        .arg("bench_generate.py")
        .args(["--threads", &threads.to_string()])
        .args(["--dtype", dtype])
        .args(["--new-tokens", &new_tokens.to_string()])
        .args(["--runs", &runs.to_string()])
        .args(["--prompt-ids", &ids.join(",")])
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
        "reference/bench_generate.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reference: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .context("reference/bench_generate.py printed no JSON")?;
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
