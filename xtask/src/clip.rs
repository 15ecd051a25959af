//! `cargo xtask train clip` trains a small CLIP on MNIST's digits with
//! captions from templates. `cargo xtask clip classify` classifies images
//! zero-shot with any CLIP model directory.

use anyhow::{ensure, Context, Result};
use clap::Subcommand;
use clip::preprocess::Preprocess;
use clip::tokenizer::Tokenizer;
use clip::train::{ClipTask, Settings};
use clip::{Clip, ClipModel, Config, ZeroShot};
use common::train::{train, TrainOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::nn::VarStore;
use tch::Device;

/// The model directory that `train clip` writes and `clip classify` reads
/// by default.
const DEFAULT_RUN: &str = "runs/clip-mnist";

/// Maximum `--batch-size` accepted.
const MAX_BATCH: i64 = 4096;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Output model directory, which also receives the checkpoints.
    #[arg(long, default_value = DEFAULT_RUN)]
    out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    settings: SettingArgs,
    /// Optimizer steps in total, including those of a resumed run.
    #[arg(long, default_value_t = 2400)]
    steps: u64,
    /// Evaluate (held-out loss and zero-shot accuracy) every this many steps.
    #[arg(long, default_value_t = 200)]
    eval_every: u64,
    /// Write a checkpoint every this many steps [default: --eval-every].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Intra-op threads (default: libtorch's choice, every core).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
}

/// The options that decide what a run computes. A resumed run takes them
/// from [`crate::train::SETTINGS_FILE`], and giving one with another value is an error,
/// so that it ends as an uninterrupted run would.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct SettingArgs {
    /// Image-caption pairs per batch [default: 128].
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<i64>,
    /// Move each training digit by up to this many pixels in each
    /// direction, a random translation; 0 disables it [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    max_shift: Option<i64>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Final learning rate of the cosine decay [default: lr / 10].
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f64>,
    /// Steps of linear learning-rate warm-up [default: 100].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay of matrices and embeddings [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Clip the gradient norm to this value; 0 disables clipping
    /// [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    grad_clip: Option<f64>,
    /// Seeds the initial weights and the batches [default: 1337].
    #[arg(long)]
    seed: Option<u64>,
}

impl SettingArgs {
    /// Fills every option not given with its default.
    fn with_defaults(&self) -> Self {
        let lr = self.lr.unwrap_or(1e-3);
        Self {
            batch_size: Some(self.batch_size.unwrap_or(128)),
            max_shift: Some(self.max_shift.unwrap_or(2)),
            lr: Some(lr),
            min_lr: Some(self.min_lr.unwrap_or(lr / 10.0)),
            warmup: Some(self.warmup.unwrap_or(100)),
            weight_decay: Some(self.weight_decay.unwrap_or(0.1)),
            grad_clip: Some(self.grad_clip.unwrap_or(1.0)),
            seed: Some(self.seed.unwrap_or(1337)),
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Classify images zero-shot: print the probability of each label.
    Classify(ClassifyArgs),
}

#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Images in any format the image crate reads (PNG, JPEG, GIF, BMP,
    /// TIFF, WebP).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// The labels to choose from, separated by commas ("cat,dog"); repeat
    /// --labels for labels that contain commas.
    #[arg(long, required = true, value_delimiter = ',')]
    labels: Vec<String>,
    /// A caption template with {} where the label goes; repeat it for a
    /// prompt ensemble [default: "a photo of a {}."].
    #[arg(long = "template")]
    templates: Vec<String>,
    /// A CLIP model directory: config.json, model.safetensors and
    /// tokenizer.json (or no tokenizer.json, for the CLIP vocabulary of the
    /// installed openai-clip package).
    #[arg(long, default_value = DEFAULT_RUN)]
    model: PathBuf,
    /// Intra-op threads (default: libtorch's choice, every core).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Classify(args) => classify(&args),
    }
}

pub fn train_clip(args: &TrainArgs) -> Result<ExitCode> {
    crate::set_threads(args.threads)?;
    let out = &args.out;
    let settings =
        crate::train::run_settings(out, args.resume, &args.settings, SettingArgs::with_defaults)?;
    // Every field is Some after `with_defaults`.
    let batch_size = settings.batch_size.unwrap_or_default();
    let max_shift = settings.max_shift.unwrap_or_default();
    let seed = settings.seed.unwrap_or_default();
    ensure!(
        (2..=MAX_BATCH).contains(&batch_size),
        "--batch-size {batch_size} is invalid: use 2 to {MAX_BATCH}"
    );
    let side = common::mnist::SIDE;
    ensure!(
        (0..side / 2).contains(&max_shift),
        "--max-shift {max_shift} is invalid: use 0 to {}",
        side / 2 - 1
    );
    let options = TrainOptions {
        steps: args.steps,
        learning_rate: settings.lr.unwrap_or_default(),
        min_learning_rate: settings.min_lr.unwrap_or_default(),
        warmup_steps: settings.warmup.unwrap_or_default(),
        weight_decay: settings.weight_decay.unwrap_or_default(),
        grad_clip: settings.grad_clip.unwrap_or_default(),
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every.unwrap_or(args.eval_every),
        seed,
        ..Default::default()
    };
    options.validate()?;

    let config = if args.resume {
        Config::from_file(&out.join("config.json"))
            .with_context(|| format!("failed to resume from {}", out.display()))?
    } else {
        Config::mnist()
    };
    let tokenizer = Tokenizer::from_vocab(
        &common::paths::CLIP_VOCAB.find()?,
        config.text_config.max_position_embeddings as usize,
    )?;
    let (train_digits, eval_digits) = common::mnist::load(0.1)?;
    eprintln!(
        "data: {} training and {} held-out MNIST digits; model: vision {} layers x {}, \
         {}-pixel patches; text {} layers x {}, {} positions; {:.2}M parameters",
        train_digits.len(),
        eval_digits.len(),
        config.vision_config.num_hidden_layers,
        config.vision_config.hidden_size,
        config.vision_config.patch_size,
        config.text_config.num_hidden_layers,
        config.text_config.hidden_size,
        config.text_config.max_position_embeddings,
        config.num_parameters() as f64 / 1e6
    );

    tch::manual_seed(seed as i64);
    let mut vs = VarStore::new(Device::Cpu);
    let model = ClipModel::new(&vs.root(), &config)?;
    let task_settings = Settings {
        batch_size,
        max_shift,
        seed,
    };
    let mut task = ClipTask::new(
        model,
        config,
        tokenizer,
        train_digits,
        eval_digits,
        task_settings,
    )?;
    if !args.resume {
        crate::train::write_settings(out, &settings)?;
    }
    let report = train(&mut vs, &mut task, &options, out, args.resume)?;
    let last = report
        .evaluations
        .last()
        .context("internal error: training returned no held-out evaluation")?;
    let accuracy = task
        .last_accuracy()
        .context("internal error: the task stored no zero-shot accuracy")?;
    eprintln!(
        "done: held-out contrastive loss {:.4}, zero-shot accuracy {:.1}% on held-out digits \
         with held-out templates, after {} steps, {:.0} images/s; model directory {}",
        last.eval_loss,
        100.0 * accuracy,
        last.step,
        report.items_per_second,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads the tokenizer of a model directory, or the CLIP vocabulary of the
/// installed openai-clip package when the directory has none.
fn load_tokenizer(dir: &Path, config: &Config) -> Result<Tokenizer> {
    let context = config.text_config.max_position_embeddings as usize;
    if dir.join("tokenizer.json").is_file() {
        return Ok(Tokenizer::from_dir(dir, context)?);
    }
    let vocab = common::paths::CLIP_VOCAB.find()?;
    let tokenizer = Tokenizer::from_vocab(&vocab, context)?;
    ensure!(
        config.text_config.vocab_size == tokenizer.inner().vocab_size() as i64,
        "{} has no tokenizer.json, and the model's vocabulary of {} tokens is not CLIP's \
         ({}): add the model's tokenizer.json",
        dir.display(),
        config.text_config.vocab_size,
        tokenizer.inner().vocab_size()
    );
    Ok(tokenizer)
}

fn classify(args: &ClassifyArgs) -> Result<ExitCode> {
    crate::set_threads(args.threads)?;
    let labels: Vec<&str> = args.labels.iter().map(|l| l.trim()).collect();
    ensure!(
        labels.iter().all(|l| !l.is_empty()),
        "--labels {:?} contains an empty label: give labels separated by commas, such as \
         --labels cat,dog",
        args.labels.join(",")
    );
    let templates: Vec<&str> = if args.templates.is_empty() {
        vec!["a photo of a {}."]
    } else {
        args.templates.iter().map(String::as_str).collect()
    };

    let clip = Clip::load(&args.model, Device::Cpu).with_context(|| {
        let hint = if args.model == Path::new(DEFAULT_RUN) {
            " (train one with `cargo xtask train clip`, or pass --model)"
        } else {
            ""
        };
        format!(
            "failed to load the CLIP model {}{hint}",
            args.model.display()
        )
    })?;
    let tokenizer = load_tokenizer(&args.model, clip.config())?;
    let classifier = ZeroShot::new(&clip, &tokenizer, &labels, &templates)?;
    let preprocess = Preprocess::clip(clip.config().vision_config.image_size);
    let pixels = preprocess.files(&args.images)?;
    let probabilities = classifier.probabilities(&clip, &pixels)?;
    ensure!(
        probabilities.isfinite().all().int64_value(&[]) != 0,
        "the model gives probabilities that are not numbers: its weights in {} contain \
         NaN or infinite values",
        args.model.display()
    );

    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut text = String::new();
    for (i, image) in args.images.iter().enumerate() {
        let row = Vec::<f64>::try_from(probabilities.get(i as i64).to_kind(tch::Kind::Double))?;
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        text.push_str(&format!("{}\n", image.display()));
        for j in order {
            text.push_str(&format!("  {:<width$}  {:.4}\n", labels[j], row[j]));
        }
    }
    crate::write_output(&mut std::io::stdout().lock(), &text)?;
    Ok(ExitCode::SUCCESS)
}
