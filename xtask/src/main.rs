//! `cargo xtask`: the command line of the model zoo.
//!
//! - `doctor`: report libtorch, CUDA and the data files, and how to fix gaps
//! - `convert gguf IN.gguf OUT_DIR`: a llama.cpp GGUF file to a model directory
//! - `convert tokenizer gpt2 ENCODER_JSON VOCAB_BPE OUT_DIR`: GPT-2's vocabulary
//!   files to tokenizer.json and tokenizer_config.json
//! - `convert tokenizer clip BPE_GZ OUT_DIR`: CLIP's bpe_simple_vocab_16e6.txt.gz
//!   to tokenizer.json and tokenizer_config.json
//! - `convert torch IN.pkl OUT_DIR`: a `torch.save` file to safetensors, read
//!   without running code from it
//! - `convert clip-torchscript IN.pt OUT_DIR`: an OpenAI CLIP release to a CLIP
//!   model directory
//! - `generate`: stream text from a Llama-architecture model (SmolLM2 by
//!   default) or a GPT model directory
//! - `train gpt`: pretrain a GPT on Shakespeare's plays, or fine-tune it to
//!   tell Shakespeare's lines from Milton's (`--finetune classify`)
//! - `train dvae`: train DALL-E's discrete VAE on MNIST or on photographs
//! - `dvae encode|decode|reconstruct`: an image to its grid of codes and back
//! - `train clip`: train a small CLIP on MNIST's digits with captions from
//!   templates
//! - `clip classify IMAGE... --labels ...`: zero-shot classification
//! - `train ddpm`: train a DDPM on MNIST's digits padded to 32 x 32
//! - `sample ddpm OUT.png`: a grid of samples from a diffusers DDPM pipeline,
//!   optionally scored by a digit classifier
//! - `bench generate`: SmolLM2 prefill and decode speed beside transformers
//! - `bench train-gpt`, `bench decode-gpt`: a GPT-2 training step beside
//!   PyTorch, and GPT-2 124M decoding beside transformers
//! - `bench dvae`: the dVAE encoder and decoder at 256 x 256 beside OpenAI's
//!   `dall_e`
//! - `bench clip`: CLIP ViT-B/32 image and text encoding beside transformers
//! - `bench ddpm`: the `ddpm-cifar10-32` U-Net and a 50-step DDIM sample
//!   beside diffusers

mod bench;
mod clip;
mod compare;
mod convert;
mod ddpm;
mod doctor;
mod dvae;
mod generate;
mod models;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Model zoo tasks: doctor, convert, generate, train, dvae, clip, sample, bench, compare"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the libtorch version and path, CUDA, and every data file.
    Doctor,
    /// Convert checkpoints and vocabularies to model directories.
    #[command(subcommand)]
    Convert(convert::Convert),
    /// Generate text with a Llama-architecture or GPT model.
    Generate(generate::Args),
    /// Train models on real data.
    #[command(subcommand)]
    Train(train::Train),
    /// Turn images into DALL-E dVAE codes and back.
    #[command(subcommand)]
    Dvae(dvae::Command),
    /// Classify images zero-shot with a CLIP model.
    #[command(subcommand)]
    Clip(clip::Command),
    /// Sample images from a diffusion model.
    #[command(subcommand)]
    Sample(ddpm::Command),
    /// Measure speed beside the Python reference implementations.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Compare every preset: parameters, KV cache, FLOPs and architecture.
    Compare(compare::Args),
}

/// Writes `text` to `out` and flushes it. Returns `Ok(false)` when the reader
/// has gone (a closed pipe, as with `| head`), which ends output without an
/// error, and an error for any other failure, such as a full disk.
fn write_output(out: &mut impl std::io::Write, text: &str) -> common::Result<bool> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(common::Error::io("standard output", e)),
    }
}

/// Rejects an output path that exists, so that no file is replaced; the
/// message suggests choosing another `alternative` ("output file", ...).
fn reject_existing(path: &std::path::Path, alternative: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.exists(),
        "{} already exists: remove it, or choose another {alternative}",
        path.display()
    );
    Ok(())
}

/// The largest `--threads` accepted: libgomp fails to start, or overflows
/// the stack, with tens of thousands.
const MAX_THREADS: i32 = 1024;

/// Checks a `--threads` value and returns it, or every core when it is
/// absent.
fn resolve_threads(threads: Option<i32>) -> anyhow::Result<i32> {
    match threads {
        Some(t) if (1..=MAX_THREADS).contains(&t) => Ok(t),
        Some(t) => anyhow::bail!("--threads {t} is invalid: use 1 to {MAX_THREADS}"),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get() as i32)),
    }
}

/// Sets libtorch's intra-op threads to a checked `--threads` value, and
/// leaves libtorch's choice when it is absent.
fn set_threads(threads: Option<i32>) -> anyhow::Result<()> {
    if threads.is_some() {
        tch::set_num_threads(resolve_threads(threads)?);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => doctor::run(),
        Command::Convert(command) => convert::run(command),
        Command::Generate(args) => generate::run(&args),
        Command::Train(command) => train::run(command),
        Command::Dvae(command) => dvae::run(command),
        Command::Clip(command) => clip::run(command),
        Command::Sample(command) => ddpm::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Compare(args) => compare::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
