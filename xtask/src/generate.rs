//! `cargo xtask generate`: stream text from a Llama-architecture or GPT model.

use anyhow::{Context, Result};
use common::generation::{self, CausalLm, FinishReason};
use common::sampling::{Sampler, SamplingConfig};
use common::tokenizer::{Message, Tokenizer};
use gpt::Gpt;
use llama::Llama;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::Kind;

/// The prompt used when none is given.
pub const DEFAULT_PROMPT: &str = "Give me three tips for learning a new language.";

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    /// Default: SmolLM2-135M-Instruct, converted into the cache on first use.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The user message, or the raw text to continue with --no-chat.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// Render the prompt with the model's chat template (the default when
    /// the tokenizer has one).
    #[arg(long, conflicts_with = "no_chat")]
    chat: bool,
    /// Use the prompt as raw text, without the chat template.
    #[arg(long)]
    no_chat: bool,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// The maximum number of tokens to generate.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    temperature: f64,
    /// Sample among the k most likely tokens only (0: no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to p
    /// (1: no limit).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    top_p: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Weight dtype: f32, bf16 or f16 (on the CPU, f16 matrix products are
    /// several times slower than f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Intra-op threads of libtorch (default: libtorch's choice).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
    /// Print one JSON object (ids, text, speeds) instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// A loaded model with its tokenizer and stop tokens.
pub struct Session {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub stop_tokens: Vec<u32>,
}

impl Session {
    /// Loads a model directory.
    pub fn load(dir: &Path, device: tch::Device, kind: Kind) -> Result<Self> {
        let model = Llama::load(dir, device, kind)
            .with_context(|| format!("cannot load the model in {}", dir.display()))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let mut stop_tokens = model.config().eos_token_ids.clone();
        if let Some(eos) = tokenizer
            .special_token("eos_token")
            .and_then(|t| tokenizer.token_id(&t))
        {
            if !stop_tokens.contains(&eos) {
                stop_tokens.push(eos);
            }
        }
        Ok(Self {
            model,
            tokenizer,
            stop_tokens,
        })
    }

    /// Tokenizes a prompt, through the chat template when `chat` is set.
    pub fn prompt_ids(&self, prompt: &str, chat: bool, system: Option<&str>) -> Result<Vec<u32>> {
        if !chat {
            return Ok(self.tokenizer.encode(prompt, true)?);
        }
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", prompt));
        let text = self.tokenizer.apply_chat_template(&messages, true)?;
        // The template writes the special tokens itself.
        Ok(self.tokenizer.encode(&text, false)?)
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = common::device::parse_device(&args.device)?;
    let kind = common::device::parse_kind(&args.dtype)?;
    crate::set_threads(args.threads)?;
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(sampling)?;
    anyhow::ensure!(
        args.max_new_tokens > 0,
        "--max-new-tokens 0 is invalid: use 1 or more"
    );
    anyhow::ensure!(
        !args.prompt.is_empty(),
        "the prompt is empty: pass a non-empty --prompt"
    );
    let dir = match &args.model {
        Some(dir) if !dir.is_dir() => anyhow::bail!(
            "--model {} is not a directory: pass a model directory with config.json, \
             model.safetensors and tokenizer.json",
            dir.display()
        ),
        Some(dir) => dir.clone(),
        None => crate::models::ensure_default_model()?,
    };
    match model_type(&dir)?.as_str() {
        "llama" => {
            let session = Session::load(&dir, device, kind)?;
            let chat = !args.no_chat && (args.chat || session.tokenizer.chat_template().is_some());
            let prompt_ids = session.prompt_ids(&args.prompt, chat, args.system.as_deref())?;
            let stop = session.stop_tokens.clone();
            stream(
                &session.model,
                &session.tokenizer,
                &prompt_ids,
                &stop,
                &mut sampler,
                args,
                &dir,
            )
        }
        "openai-gpt" | "gpt2" | "gpt3" | "gpt_neo" => {
            anyhow::ensure!(
                !crate::train::is_classifier(&dir)?,
                "{} contains a sequence classifier, not a language model: generate with the \
                 model it was fine-tuned from",
                dir.display()
            );
            anyhow::ensure!(
                !args.chat && args.system.is_none(),
                "GPT models have no chat template: drop --chat and --system"
            );
            let model = Gpt::load(&dir, device, kind)
                .with_context(|| format!("cannot load the model in {}", dir.display()))?;
            let tokenizer = Tokenizer::from_dir(&dir)?;
            let prompt_ids = tokenizer.encode(&args.prompt, false)?;
            anyhow::ensure!(
                tokenizer.decode(&prompt_ids, false)? == args.prompt,
                "the prompt {:?} has characters that the vocabulary of {} cannot spell",
                args.prompt,
                dir.display()
            );
            let stop: Vec<u32> = tokenizer
                .special_token("eos_token")
                .and_then(|t| tokenizer.token_id(&t))
                .into_iter()
                .collect();
            stream(
                &model,
                &tokenizer,
                &prompt_ids,
                &stop,
                &mut sampler,
                args,
                &dir,
            )
        }
        other => anyhow::bail!(
            "{}: model_type {other:?} cannot generate text: use a llama, gpt2, openai-gpt, \
             gpt_neo or gpt3 model directory",
            dir.join("config.json").display()
        ),
    }
}

/// Reads `model_type` from a model directory's config.json.
fn model_type(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    anyhow::ensure!(
        path.is_file(),
        "{} not found: a model directory needs config.json, model.safetensors and \
         tokenizer.json",
        path.display()
    );
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("llama")
        .to_string())
}

/// Generates from `prompt_ids`, streaming text to standard output (or one
/// JSON record with --json), and reports the speeds on standard error.
fn stream<M: CausalLm>(
    model: &M,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    stop_tokens: &[u32],
    sampler: &mut Sampler,
    args: &Args,
    dir: &Path,
) -> Result<ExitCode> {
    let (device, kind) = (model.device(), common::device::parse_kind(&args.dtype)?);
    let mut stream = tokenizer.decode_stream(true);
    let mut stdout = std::io::stdout().lock();
    let json = args.json;
    let output = generation::generate(
        model,
        prompt_ids,
        args.max_new_tokens,
        sampler,
        stop_tokens,
        |token| {
            if json {
                return Ok(ControlFlow::Continue(()));
            }
            if let Some(text) = stream.step(token)? {
                if !crate::write_output(&mut stdout, &text)? {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    if output.finish == FinishReason::Stopped {
        return Ok(ExitCode::SUCCESS);
    }
    let text = tokenizer.decode(&output.tokens, true)?;
    let prefill = output.prefill_tokens_per_second(prompt_ids.len());
    let decode = output.decode_tokens_per_second();
    if json {
        let finish = match output.finish {
            FinishReason::Stop(_) => "stop",
            FinishReason::Length => "length",
            FinishReason::Context => "context",
            FinishReason::Stopped => "stopped",
        };
        let record = serde_json::json!({
            "model": dir,
            "prompt_ids": prompt_ids,
            "generated_ids": output.tokens,
            "text": text,
            "finish_reason": finish,
            "prefill_tokens_per_second": prefill,
            "decode_tokens_per_second": decode,
            "device": common::device::device_name(device),
            "dtype": common::device::kind_name(kind),
        });
        crate::write_output(&mut stdout, &format!("{record}\n"))?;
    } else {
        crate::write_output(&mut stdout, "\n")?;
        let speed = |rate: Option<f64>| rate.map_or("n/a".to_string(), |r| format!("{r:.1}"));
        eprintln!(
            "[{} prompt tokens at {} tokens/s, {} generated at {} tokens/s]",
            prompt_ids.len(),
            speed(prefill),
            output.tokens.len(),
            speed(decode)
        );
    }
    Ok(ExitCode::SUCCESS)
}
