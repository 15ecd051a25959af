//! `cargo xtask train ddpm` trains a DDPM on MNIST's digits padded to
//! 32 x 32. `cargo xtask sample ddpm` writes a grid of samples from any
//! diffusers `UNet2DModel` pipeline directory, and can score digit samples
//! with a classifier trained on MNIST.

use anyhow::{ensure, Context, Result};
use clap::{Subcommand, ValueEnum};
use common::train::{train, TrainOptions};
use diffusion::digits::DigitClassifier;
use diffusion::pipeline::{Guidance, Pipeline, SamplerKind};
use diffusion::schedule::{BetaSchedule, Prediction};
use diffusion::scheduler::{SchedulerConfig, TimestepSpacing};
use diffusion::train::{DdpmSettings, DdpmTask};
use diffusion::{Config, SampleSize};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tch::nn::VarStore;
use tch::Device;

/// The pipeline directory that `train ddpm` writes and `sample ddpm` reads
/// by default.
const DEFAULT_RUN: &str = "runs/ddpm-mnist";

/// Denoising steps of `sample ddpm` and of the samples at the end of `train
/// ddpm`. On the digits U-Net, ancestral sampling in 100 steps gives more
/// recognisable digits than deterministic DDIM in 50 or 100 steps, and as
/// many as 250 ancestral steps.
const DEFAULT_SAMPLE_STEPS: i64 = 100;

/// Guidance scale of `sample ddpm` and of the samples at the end of `train
/// ddpm` for a class-conditional pipeline.
const DEFAULT_GUIDANCE: f64 = 2.0;

/// The digit classes of MNIST.
const DIGIT_CLASSES: i64 = 10;

/// The class embeddings of a class-conditional digits U-Net: one per digit,
/// and the null label of classifier-free guidance.
const CLASS_EMBEDDINGS: i64 = DIGIT_CLASSES + 1;

/// Maximum `--batch-size` accepted.
const MAX_BATCH: i64 = 4096;

/// Maximum `--guidance-scale` of `sample ddpm`.
const MAX_GUIDANCE: f64 = 100.0;

/// Maximum `--count` of `sample ddpm`.
const MAX_SAMPLES: i64 = 1024;

/// Confidence above which a sample counts as a recognisable digit.
const CONFIDENCE: f64 = 0.9;

/// Training steps and seed of the digit classifier that scores samples: the
/// settings whose accuracy and confidence `diffusion/tests/digits.rs` checks.
const CLASSIFIER_STEPS: u64 = 500;
const CLASSIFIER_SEED: u64 = 1;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Output pipeline directory (unet/, scheduler/, model_index.json), which
    /// also receives the checkpoints.
    #[arg(long, default_value = DEFAULT_RUN)]
    out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// A diffusers `UNet2DModel` config.json to train instead of the MNIST
    /// preset (one input and output channel, 32 x 32 samples).
    #[arg(long, value_name = "CONFIG_JSON", conflicts_with = "resume")]
    unet_config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingArgs,
    /// Optimizer steps in total, including those of a resumed run.
    #[arg(long, default_value_t = 3400)]
    steps: u64,
    /// Evaluate the held-out loss every this many steps.
    #[arg(long, default_value_t = 600)]
    eval_every: u64,
    /// Write a checkpoint every this many steps [default: --eval-every].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Samples drawn and scored at the end (ancestral DDPM sampling, 100
    /// steps, guidance scale 2 for a class-conditional U-Net); 0 skips it.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    samples: i64,
    /// Intra-op threads (default: libtorch's choice, every core).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
}

/// The options that decide what a run computes. A resumed run takes them
/// from [`crate::train::SETTINGS_FILE`], and giving one with another value is an error.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct SettingArgs {
    /// Images per batch [default: 32].
    #[arg(long, allow_negative_numbers = true)]
    batch_size: Option<i64>,
    /// Peak learning rate [default: 2e-3].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Final learning rate of the cosine decay [default: lr / 10].
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f64>,
    /// Steps of linear learning-rate warm-up [default: 200].
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay of matrices [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Clip the gradient norm to this value; 0 disables clipping
    /// [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    grad_clip: Option<f64>,
    /// Decay of the exponential moving average of the weights [default:
    /// 0.995].
    #[arg(long, allow_negative_numbers = true)]
    ema_decay: Option<f64>,
    /// Weight each timestep's error by the Min-SNR-gamma rule with this
    /// gamma; 0 weighs every timestep equally [default: 5].
    #[arg(long, allow_negative_numbers = true)]
    snr_gamma: Option<f64>,
    /// The beta schedule over 1000 training timesteps [default: cosine].
    #[arg(long, value_enum)]
    beta_schedule: Option<BetaArg>,
    /// What the U-Net predicts [default: epsilon].
    #[arg(long, value_enum)]
    prediction: Option<PredictionArg>,
    /// Train on the digits' labels for classifier-free guidance, or
    /// unconditionally [default: class].
    #[arg(long, value_enum)]
    conditioning: Option<ConditioningArg>,
    /// With --conditioning class: the fraction of labels replaced by the
    /// null label, which trains the unconditional prediction [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    label_dropout: Option<f64>,
    /// Seeds the initial weights, the batches and the noise [default: 1337].
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BetaArg {
    /// Linear from 1e-4 to 0.02 (Ho et al.).
    Linear,
    /// The cosine schedule of Nichol and Dhariwal.
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ConditioningArg {
    /// An unconditional model of all digits (Ho et al.).
    None,
    /// Conditioned on the digit, with a null label for classifier-free
    /// guidance (Ho and Salimans).
    Class,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PredictionArg {
    /// The added noise (Ho et al.).
    Epsilon,
    /// The clean image x_0.
    Sample,
    /// The velocity v = sqrt(abar) eps - sqrt(1 - abar) x_0.
    V,
}

impl SettingArgs {
    /// Fills every option not given with its default.
    fn with_defaults(&self) -> Self {
        let lr = self.lr.unwrap_or(2e-3);
        Self {
            batch_size: Some(self.batch_size.unwrap_or(32)),
            lr: Some(lr),
            min_lr: Some(self.min_lr.unwrap_or(lr / 10.0)),
            warmup: Some(self.warmup.unwrap_or(200)),
            weight_decay: Some(self.weight_decay.unwrap_or(0.0)),
            grad_clip: Some(self.grad_clip.unwrap_or(1.0)),
            ema_decay: Some(self.ema_decay.unwrap_or(0.995)),
            snr_gamma: Some(self.snr_gamma.unwrap_or(5.0)),
            beta_schedule: Some(self.beta_schedule.unwrap_or(BetaArg::Cosine)),
            prediction: Some(self.prediction.unwrap_or(PredictionArg::Epsilon)),
            conditioning: Some(self.conditioning.unwrap_or(ConditioningArg::Class)),
            label_dropout: Some(self.label_dropout.unwrap_or(0.1)),
            seed: Some(self.seed.unwrap_or(1337)),
        }
    }

    /// Returns the scheduler configuration of a run with these settings.
    fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: match self.beta_schedule.unwrap_or(BetaArg::Cosine) {
                BetaArg::Linear => BetaSchedule::Linear,
                BetaArg::Cosine => BetaSchedule::SquaredcosCapV2,
            },
            prediction_type: match self.prediction.unwrap_or(PredictionArg::Epsilon) {
                PredictionArg::Epsilon => Prediction::Epsilon,
                PredictionArg::Sample => Prediction::Sample,
                PredictionArg::V => Prediction::VPrediction,
            },
            ..SchedulerConfig::default()
        }
    }
}

pub fn train_ddpm(args: &TrainArgs) -> Result<ExitCode> {
    crate::set_threads(args.threads)?;
    let out = &args.out;
    let defaults = |settings: &SettingArgs| {
        // A settings file without `conditioning` predates class conditioning,
        // so its run is unconditional.
        let conditioning = match (args.resume, settings.conditioning) {
            (true, None) => Some(ConditioningArg::None),
            (_, given) => given,
        };
        SettingArgs {
            conditioning,
            ..settings.clone()
        }
        .with_defaults()
    };
    let settings = crate::train::run_settings(out, args.resume, &args.settings, defaults)?;
    // Every field is Some after `with_defaults`.
    let batch_size = settings.batch_size.unwrap_or_default();
    let seed = settings.seed.unwrap_or_default();
    ensure!(
        (1..=MAX_BATCH).contains(&batch_size),
        "--batch-size {batch_size} is invalid: use 1 to {MAX_BATCH}"
    );
    ensure!(
        (0..=MAX_SAMPLES).contains(&args.samples),
        "--samples {} is invalid: use 0 to {MAX_SAMPLES}",
        args.samples
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
    let ema_decay = settings.ema_decay.unwrap_or_default();
    ensure!(
        (0.0..1.0).contains(&ema_decay),
        "--ema-decay {ema_decay} is invalid: use a value in [0, 1)"
    );

    let snr_gamma = settings.snr_gamma.unwrap_or_default();
    ensure!(
        // Classified by bits: libtorch may treat subnormal numbers as zero.
        match snr_gamma.classify() {
            std::num::FpCategory::Zero => true,
            std::num::FpCategory::Normal => snr_gamma > 0.0 && (snr_gamma as f32).is_normal(),
            _ => false,
        },
        "--snr-gamma {snr_gamma} is invalid: use a positive value of at least {:e} (the \
         weights are f32), or 0 for equal weights",
        f32::MIN_POSITIVE
    );

    let conditional = settings.conditioning == Some(ConditioningArg::Class);
    let label_dropout = settings.label_dropout.unwrap_or_default();
    ensure!(
        (0.0..1.0).contains(&label_dropout),
        "--label-dropout {label_dropout} is invalid: use a value in [0, 1), since 1 would \
         drop every label and leave the class embeddings untrained"
    );
    ensure!(
        conditional || args.settings.label_dropout.is_none(),
        "--label-dropout applies to --conditioning class only: leave it out for an \
         unconditional run"
    );

    let scheduler = settings.scheduler_config();
    let config = training_config(args, conditional)?;
    // The weights, their moving average, the gradients and AdamW's two
    // moments: five f32 copies.
    let needed = config.num_parameters().saturating_mul(5);
    if let Some(total) = common::device::total_memory_bytes() {
        ensure!(
            (needed as f64) * 4.0 < total as f64,
            "the U-Net has {} parameters, and training needs five f32 copies of them \
             ({:.1} GiB), more than the {:.1} GiB of memory of this machine: use a smaller \
             configuration",
            config.num_parameters(),
            needed as f64 * 4.0 / f64::from(1u32 << 30),
            total as f64 / f64::from(1u32 << 30)
        );
    }
    let (images, eval) = diffusion::train::mnist()?;
    eprintln!(
        "data: {} training and {} held-out MNIST digits at 32 x 32; model: U-Net of \
         {:?} channels, {} residual block(s) per level, {:.2}M parameters{}; {} betas, \
         {} prediction{}",
        images.images.size()[0],
        eval.images.size()[0],
        config.block_out_channels,
        config.layers_per_block,
        config.num_parameters() as f64 / 1e6,
        if conditional {
            format!(
                ", conditioned on the digit ({:.1}% of labels dropped)",
                label_dropout * 100.0
            )
        } else {
            String::new()
        },
        scheduler.beta_schedule,
        scheduler.prediction_type,
        if snr_gamma > 0.0 {
            format!(", Min-SNR-{snr_gamma} weighting")
        } else {
            String::new()
        },
    );

    tch::manual_seed(seed as i64);
    let mut vs = VarStore::new(Device::Cpu);
    let task_settings = DdpmSettings {
        batch_size,
        ema_decay,
        snr_gamma: (snr_gamma > 0.0).then_some(snr_gamma),
        label_dropout,
        seed,
    };
    let mut task = DdpmTask::new(
        &vs,
        &config,
        scheduler.clone(),
        (images, eval),
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
    eprintln!(
        "done: held-out loss {:.4} after {} steps, {:.0} images/s; pipeline directory {}",
        last.eval_loss,
        last.step,
        report.items_per_second,
        out.display()
    );
    if args.samples > 0 {
        let pipeline = Pipeline::load(out, Device::Cpu)?;
        let path = out.join("samples.png");
        let sampling = SampleSettings {
            sampler: SamplerKind::Ddpm,
            steps: DEFAULT_SAMPLE_STEPS,
            eta: 0.0,
            count: args.samples,
            guidance: conditional.then(|| Guidance {
                labels: cycle_labels(args.samples, DIGIT_CLASSES),
                scale: DEFAULT_GUIDANCE,
            }),
            seed,
        };
        write_samples(&pipeline, &sampling, &path, true)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Returns the U-Net config of a run: the saved one when resuming, else
/// `--unet-config` or the MNIST preset, with the class embeddings of the
/// digits and the null label for a class-conditional run.
fn training_config(args: &TrainArgs, conditional: bool) -> Result<Config> {
    let out = &args.out;
    let config = if args.resume {
        Config::from_file(&out.join("unet").join(diffusion::CONFIG_FILE))
            .with_context(|| format!("failed to resume from {}", out.display()))?
    } else if let Some(path) = &args.unet_config {
        let config = Config::from_file(path)?;
        ensure!(
            config.in_channels == 1 && config.out_channels == 1,
            "{} has {} input and {} output channels: MNIST digits need 1 and 1",
            path.display(),
            config.in_channels,
            config.out_channels
        );
        ensure!(
            matches!(config.sample_size, None | Some(SampleSize::Square(32))),
            "{} has sample_size {:?}: the padded MNIST digits are 32 x 32, so use 32",
            path.display(),
            config.sample_size
        );
        if let Some(classes) = config.num_class_embeds {
            ensure!(
                conditional && classes == CLASS_EMBEDDINGS,
                "{} sets num_class_embeds {classes}: remove the key, since --conditioning \
                 class adds the {} class embeddings of the digits and the null label, and \
                 --conditioning none has none",
                path.display(),
                CLASS_EMBEDDINGS
            );
        }
        Config {
            sample_size: Some(SampleSize::Square(32)),
            num_class_embeds: conditional.then_some(CLASS_EMBEDDINGS),
            ..config
        }
    } else {
        Config {
            num_class_embeds: conditional.then_some(CLASS_EMBEDDINGS),
            ..Config::mnist()
        }
    };
    ensure!(
        config.num_class_embeds.is_some() == conditional,
        "{} records --conditioning {}, but the U-Net's config.json {} num_class_embeds: \
         the run's files do not match, so restore them or start a new run",
        out.join(crate::train::SETTINGS_FILE).display(),
        if conditional { "class" } else { "none" },
        if conditional { "has no" } else { "sets" }
    );
    Ok(config)
}

#[derive(Subcommand)]
pub enum Command {
    /// Sample images from a DDPM pipeline and write them as a grid.
    Ddpm(SampleArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SamplerArg {
    /// Ancestral sampling of Ho et al.
    Ddpm,
    /// The deterministic (eta 0) or stochastic sampler of Song et al.
    Ddim,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// The image to write: a grid of the samples (PNG, or any format the
    /// image crate writes, by extension).
    #[arg(value_name = "OUT")]
    out: PathBuf,
    /// A diffusers pipeline directory (unet/ and scheduler/), or a U-Net
    /// directory, which samples with the DDPM defaults.
    #[arg(long, default_value = DEFAULT_RUN)]
    model: PathBuf,
    #[arg(long, value_enum, default_value_t = SamplerArg::Ddpm)]
    sampler: SamplerArg,
    /// Denoising steps, 1 to the number of training timesteps.
    #[arg(long, default_value_t = DEFAULT_SAMPLE_STEPS, allow_negative_numbers = true)]
    steps: i64,
    /// The spacing of the steps over the training timesteps: leading,
    /// trailing or linspace [default: the pipeline's scheduler config].
    #[arg(long, value_parser = parse_spacing)]
    timestep_spacing: Option<TimestepSpacing>,
    /// DDIM's eta: 0 is deterministic, 1 has the DDPM posterior variance.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    eta: f64,
    /// Number of samples.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    count: i64,
    /// For a class-conditional pipeline: the class of every sample
    /// [default: the classes 0, 1, 2, ... in turn].
    #[arg(long, allow_negative_numbers = true)]
    class: Option<i64>,
    /// For a class-conditional pipeline: the classifier-free guidance
    /// scale, from 0 (unconditional samples) through 1 (plain conditional
    /// ones) to 100 [default: 2].
    #[arg(long, allow_negative_numbers = true)]
    guidance_scale: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classify the samples with a classifier trained on MNIST (about 20 s)
    /// and print how many are digits with confidence above 0.9.
    #[arg(long)]
    score: bool,
    /// Intra-op threads (default: libtorch's choice, every core).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
}

fn parse_spacing(name: &str) -> Result<TimestepSpacing, String> {
    name.parse().map_err(|e: common::Error| e.to_string())
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Ddpm(args) => sample(&args),
    }
}

struct SampleSettings {
    sampler: SamplerKind,
    steps: i64,
    eta: f64,
    count: i64,
    /// The labels and scale for a class-conditional U-Net.
    guidance: Option<Guidance>,
    seed: u64,
}

/// Returns `count` labels that cycle through the classes: `0, 1, ...,
/// classes - 1, 0, 1, ...`.
fn cycle_labels(count: i64, classes: i64) -> Vec<i64> {
    (0..count).map(|i| i % classes.max(1)).collect()
}

fn sample(args: &SampleArgs) -> Result<ExitCode> {
    crate::set_threads(args.threads)?;
    crate::reject_existing(&args.out, "output file")?;
    common::image::check_output(&args.out)?;
    ensure!(
        (1..=MAX_SAMPLES).contains(&args.count),
        "--count {} is invalid: use 1 to {MAX_SAMPLES}",
        args.count
    );
    ensure!(
        (0.0..=1.0).contains(&args.eta),
        "--eta {} is invalid: use a value in [0, 1]",
        args.eta
    );
    ensure!(
        args.eta == 0.0 || args.sampler == SamplerArg::Ddim,
        "--eta {} applies to --sampler ddim only: ancestral DDPM sampling always adds the \
         posterior noise",
        args.eta
    );
    let mut pipeline = Pipeline::load(&args.model, Device::Cpu).with_context(|| {
        let hint = if args.model == Path::new(DEFAULT_RUN) {
            " (train one with `cargo xtask train ddpm`, or pass --model)"
        } else {
            ""
        };
        format!("failed to load the pipeline {}{hint}", args.model.display())
    })?;
    let scheduler_file = args
        .model
        .join("scheduler")
        .join(diffusion::pipeline::SCHEDULER_FILE);
    if !scheduler_file.is_file() {
        eprintln!(
            "warning: {} not found: sampling with the scheduler defaults (1000 linear betas \
             from 1e-4 to 0.02, epsilon prediction), which fit only a U-Net trained on them",
            scheduler_file.display()
        );
    }
    if let Some(spacing) = args.timestep_spacing {
        pipeline.scheduler.timestep_spacing = spacing;
    }
    let timesteps = pipeline.scheduler.num_train_timesteps;
    ensure!(
        (1..=timesteps).contains(&args.steps),
        "--steps {} is invalid: use 1 to {timesteps}, the number of timesteps the model was \
         trained with",
        args.steps
    );
    let guidance = match diffusion::train::null_label(pipeline.unet.config()) {
        None => {
            ensure!(
                args.class.is_none() && args.guidance_scale.is_none(),
                "--class and --guidance-scale apply to a class-conditional U-Net, and {} has \
                 no num_class_embeds: leave them out",
                args.model.display()
            );
            None
        }
        Some(classes) => {
            ensure!(
                classes >= 1,
                "the U-Net of {} has num_class_embeds {}, which leaves no class besides the \
                 null label of guidance",
                args.model.display(),
                classes + 1
            );
            let scale = args.guidance_scale.unwrap_or(DEFAULT_GUIDANCE);
            ensure!(
                scale.is_finite() && (0.0..=MAX_GUIDANCE).contains(&scale),
                "--guidance-scale {scale} is invalid: use 0 to {MAX_GUIDANCE}"
            );
            let labels = match args.class {
                Some(class) => {
                    ensure!(
                        (0..classes).contains(&class),
                        "--class {class} is invalid: the U-Net of {} has classes 0 to {}",
                        args.model.display(),
                        classes - 1
                    );
                    vec![class; args.count as usize]
                }
                None => cycle_labels(args.count, classes),
            };
            Some(Guidance { labels, scale })
        }
    };
    let settings = SampleSettings {
        sampler: match args.sampler {
            SamplerArg::Ddpm => SamplerKind::Ddpm,
            SamplerArg::Ddim => SamplerKind::Ddim,
        },
        steps: args.steps,
        eta: args.eta,
        count: args.count,
        guidance,
        seed: args.seed,
    };
    write_samples(&pipeline, &settings, &args.out, args.score)?;
    Ok(ExitCode::SUCCESS)
}

/// Samples, writes the grid to `path`, and with `score` prints the share of
/// confident digits.
fn write_samples(
    pipeline: &Pipeline,
    settings: &SampleSettings,
    path: &Path,
    score: bool,
) -> Result<()> {
    if score {
        let config = pipeline.unet.config();
        let size = config.sample_size.map(|s| s.height_width());
        ensure!(
            config.in_channels == 1 && size == Some((32, 32)),
            "--score needs 32 x 32 single-channel samples of digits, and this U-Net has {} \
             channel(s) and sample_size {:?}: leave --score out",
            config.in_channels,
            size
        );
    }
    let started = Instant::now();
    let images = match &settings.guidance {
        None => pipeline.sample(
            settings.sampler,
            settings.steps,
            settings.eta,
            settings.count,
            settings.seed,
        )?,
        Some(guidance) => pipeline.sample_guided(
            settings.sampler,
            settings.steps,
            settings.eta,
            guidance,
            settings.seed,
        )?,
    };
    let seconds = started.elapsed().as_secs_f64();
    // Guided samples cycle through the classes: one column per class.
    let columns = match &settings.guidance {
        Some(guidance) if guidance.labels.iter().any(|&l| l != guidance.labels[0]) => {
            guidance.labels.iter().max().map_or(1, |&l| l + 1)
        }
        _ => (settings.count as f64).sqrt().ceil() as i64,
    };
    let grid = common::image::grid(&images, columns, 2)?;
    common::image::save(path, &grid)?;
    eprintln!(
        "wrote {} sample(s) ({}, {} steps{}, seed {}) to {} in {seconds:.1} s",
        settings.count,
        match settings.sampler {
            SamplerKind::Ddpm => "ancestral DDPM",
            SamplerKind::Ddim => "DDIM",
        },
        settings.steps,
        match &settings.guidance {
            Some(guidance) => format!(", guidance scale {}", guidance.scale),
            None => String::new(),
        },
        settings.seed,
        path.display()
    );
    if score {
        eprintln!("training the digit classifier on MNIST...");
        let (digits, _) = common::mnist::load(0.1)?;
        let classifier = DigitClassifier::train(&digits, CLASSIFIER_STEPS, CLASSIFIER_SEED)?;
        let score = classifier.score(&images, CONFIDENCE)?;
        let mut text = format!(
            "{} of {} samples ({:.1}%) are digits with confidence above {CONFIDENCE}; \
             per digit: {:?}\n",
            score.confident,
            score.total,
            100.0 * score.fraction(),
            score.per_digit
        );
        if let Some(guidance) = &settings.guidance {
            let digits = classifier.confident_digits(&images, CONFIDENCE)?;
            let matching = digits
                .iter()
                .zip(&guidance.labels)
                .filter(|(digit, &label)| **digit == Some(label))
                .count();
            text.push_str(&format!(
                "{matching} of {} samples ({:.1}%) are confidently the digit they were \
                 conditioned on\n",
                score.total,
                100.0 * matching as f64 / score.total.max(1) as f64
            ));
        }
        crate::write_output(&mut std::io::stdout().lock(), &text)?;
    }
    Ok(())
}
