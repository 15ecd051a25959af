//! Training on images: the data, the task that [`common::train::train`]
//! runs, and the held-out measurements (PSNR and code usage).
//!
//! Each step draws a batch and dequantizes its 8-bit pixel values with
//! uniform noise, so that the continuous logit-Laplace density of discrete
//! data stays bounded. It then relaxes the codes with Gumbel-Softmax at the
//! scheduled temperature and minimises `(reconstruction + beta * KL) / D`, the
//! negative ELBO in nats per pixel value (`D = channels * height * width`).

use crate::relax::{kl_weight_schedule, temperature_schedule, Schedule};
use crate::{Codes, Config, Decoder, Dvae, Encoder};
use common::train::{step_rng, Task};
use common::{Error, Result};
use rand::Rng;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Source of the training batches.
#[derive(Debug)]
pub enum Images {
    /// A fixed set `(n, channels, side, side)`, sampled with replacement.
    Set(Tensor),
    /// Random `side x side` crops of larger images, each `(channels, h, w)`.
    Crops { images: Vec<Tensor>, side: i64 },
}

impl Images {
    /// Returns the channels and side of the images in each batch.
    fn shape(&self) -> (i64, i64) {
        match self {
            Images::Set(t) => {
                let size = t.size();
                (size[1], size[3])
            }
            Images::Crops { images, side } => (images[0].size()[0], *side),
        }
    }

    fn batch(&self, rng: &mut impl Rng, batch_size: i64) -> Tensor {
        match self {
            Images::Set(set) => {
                let n = set.size()[0];
                let index: Vec<i64> = (0..batch_size).map(|_| rng.random_range(0..n)).collect();
                set.index_select(0, &Tensor::from_slice(&index))
            }
            Images::Crops { images, side } => {
                let crops: Vec<Tensor> = (0..batch_size)
                    .map(|_| {
                        let image = &images[rng.random_range(0..images.len())];
                        let size = image.size();
                        let top = rng.random_range(0..=size[1] - side);
                        let left = rng.random_range(0..=size[2] - side);
                        image.narrow(1, top, *side).narrow(2, left, *side)
                    })
                    .collect();
                Tensor::stack(&crops, 0)
            }
        }
    }
}

/// Loads MNIST's 28 x 28 digits as training and held-out sets `(n, 1, 28, 28)`,
/// with the last 10% of each digit held out. 28 is a multiple of 4, so 3
/// groups give 7 x 7 codes.
pub fn mnist() -> Result<(Images, Tensor)> {
    let (train, eval) = common::mnist::load(0.1)?;
    Ok((
        Images::Set(train.images.unsqueeze(1)),
        eval.images.unsqueeze(1),
    ))
}

/// Names of the photographs held out of training.
pub const HELD_OUT_PHOTOGRAPHS: &[&str] = &["chelsea.png", "coffee.png"];

/// Loads scikit-image's photographs in RGB as `side x side` crops. Training
/// takes random crops of all but [`HELD_OUT_PHOTOGRAPHS`], and evaluation a
/// fixed grid of crops of those. Photographs smaller than `side` are skipped.
pub fn photographs(side: i64) -> Result<(Images, Tensor)> {
    let dir = common::paths::PHOTOGRAPHS.find()?;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".png") || name.ends_with(".jpg"))
        .collect();
    names.sort();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for name in names {
        let image = common::image::read(&dir.join(&name))?;
        if i64::from(image.width().min(image.height())) < side {
            continue;
        }
        let tensor = common::image::to_tensor(&image, 3)?;
        if HELD_OUT_PHOTOGRAPHS.contains(&name.as_str()) {
            let size = tensor.size();
            for top in (0..=size[1] - side).step_by(side as usize) {
                for left in (0..=size[2] - side).step_by(side as usize) {
                    eval.push(tensor.narrow(1, top, side).narrow(2, left, side));
                }
            }
        } else {
            train.push(tensor);
        }
    }
    if train.is_empty() || eval.is_empty() {
        return Err(Error::InvalidInput(format!(
            "not enough photographs of at least {side} x {side} pixels in {}: training \
             needs one and evaluation needs one of {HELD_OUT_PHOTOGRAPHS:?}, so use a \
             smaller crop side",
            dir.display()
        )));
    }
    Ok((
        Images::Crops {
            images: train,
            side,
        },
        Tensor::stack(&eval, 0),
    ))
}

/// Settings of [`DvaeTask`] beyond the optimizer's.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: i64,
    /// The KL weight after its warm-up.
    pub beta: f64,
    /// Number of steps over which the KL weight rises from 0 to `beta`.
    pub beta_warmup_steps: u64,
    /// Number of steps over which the temperature falls from 1 to 1/16.
    pub temperature_steps: u64,
    /// If true, the decoder gets one-hot samples with straight-through
    /// gradients instead of relaxed ones.
    pub straight_through: bool,
    /// Seed of the batch sampling.
    pub seed: u64,
}

/// Held-out measurements of an encoder and decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// The reconstruction term of the negative ELBO at the most likely
    /// codes, in nats per pixel value.
    pub reconstruction: f64,
    /// The KL term, in nats per pixel value.
    pub kl: f64,
    /// Peak signal-to-noise ratio of the reconstructions from the most likely
    /// codes, `10 log10(1 / MSE)` for pixels in `[0, 1]`, averaged over
    /// images, in dB.
    pub psnr: f64,
    /// `exp(entropy)` of the frequencies of the most likely codes, which is
    /// the number of equally used codes with the same spread.
    pub perplexity: f64,
    /// Number of codes chosen at least once.
    pub codes_used: i64,
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PSNR {:.2} dB, code perplexity {:.1} ({} codes used)",
            self.psnr, self.perplexity, self.codes_used
        )
    }
}

/// Measures `encoder` and `decoder` on `images` `(n, channels, h, w)` in
/// `[0, 1]`, `batch_size` images at a time.
pub fn evaluate(
    encoder: &Encoder,
    decoder: &Decoder,
    images: &Tensor,
    batch_size: i64,
) -> Result<Metrics> {
    let _guard = tch::no_grad_guard();
    let n = images.size()[0];
    if n == 0 || batch_size < 1 {
        return Err(Error::InvalidInput(format!(
            "invalid evaluation input: got {n} images and batch size {batch_size}, but \
             evaluation needs at least one image and a batch size of at least 1"
        )));
    }
    let vocab = encoder.config().vocab_size;
    let mut counts = Tensor::zeros([vocab], (Kind::Int64, images.device()));
    let (mut reconstruction, mut kl, mut psnr) = (0.0, 0.0, 0.0);
    let dims = images.get(0).numel() as f64;
    for start in (0..n).step_by(batch_size as usize) {
        let len = batch_size.min(n - start);
        let pixels = images.narrow(0, start, len);
        let (elbo, codes) = crate::elbo_of(encoder, decoder, &midpoints(&pixels), Codes::Argmax)?;
        reconstruction += elbo.reconstruction.double_value(&[]) * len as f64;
        kl += elbo.kl.double_value(&[]) * len as f64;
        let image = crate::reconstruct(&elbo.stats);
        let mse = (image - &pixels)
            .square()
            .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)
            .clamp_min(1e-10);
        psnr += (mse.log10() * -10.0).sum(Kind::Float).double_value(&[]);
        counts += codes.flatten(0, -1).bincount(None::<Tensor>, vocab);
    }
    let p = counts.to_kind(Kind::Double) / counts.sum(Kind::Double);
    let entropy = -(&p * p.clamp_min(1e-300).log()).sum(Kind::Double);
    Ok(Metrics {
        reconstruction: reconstruction / n as f64 / dims,
        kl: kl / n as f64 / dims,
        psnr: psnr / n as f64,
        perplexity: entropy.exp().double_value(&[]),
        codes_used: counts.gt(0).sum(Kind::Int64).int64_value(&[]),
    })
}

/// Moves 8-bit pixel values to the middle of their quantization bins, the
/// deterministic counterpart of the training noise.
fn midpoints(pixels: &Tensor) -> Tensor {
    ((pixels * 255.0).round() + 0.5) / 256.0
}

/// Dequantizes 8-bit pixel values with uniform noise over their bins.
fn dequantize(pixels: &Tensor) -> Tensor {
    ((pixels * 255.0).round() + pixels.rand_like()) / 256.0
}

/// Training task of a [`Dvae`] on images, run by [`common::train::train`].
pub struct DvaeTask {
    model: Dvae,
    config: Config,
    train: Images,
    eval: Tensor,
    settings: Settings,
    temperature: Schedule,
    beta: Schedule,
    last: Option<Metrics>,
}

impl DvaeTask {
    /// Creates the task after checking that the images fit the model and that
    /// the settings are valid.
    pub fn new(model: Dvae, train: Images, eval: Tensor, settings: Settings) -> Result<Self> {
        let config = model.encoder.config().clone();
        let (channels, side) = train.shape();
        let f = config.downsample_factor();
        if channels != config.input_channels || channels != config.output_channels {
            return Err(Error::InvalidInput(format!(
                "invalid training images: they have {channels} channels but the model \
                 reads {} and writes {}",
                config.input_channels, config.output_channels
            )));
        }
        if side != config.image_size || side % f != 0 {
            return Err(Error::InvalidInput(format!(
                "invalid training images: they are {side} pixels a side but the model's \
                 image_size is {} (a multiple of its down-sampling factor {f})",
                config.image_size
            )));
        }
        if settings.batch_size < 1 {
            return Err(Error::InvalidInput(format!(
                "invalid batch size {}: it must be at least 1",
                settings.batch_size
            )));
        }
        if !(settings.beta >= 0.0 && settings.beta.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "invalid KL weight beta {}: it must be finite and 0 or more",
                settings.beta
            )));
        }
        Ok(Self {
            temperature: temperature_schedule(settings.temperature_steps),
            beta: kl_weight_schedule(settings.beta, settings.beta_warmup_steps),
            model,
            config,
            train,
            eval,
            settings,
            last: None,
        })
    }

    /// Returns the measurements of the last evaluation, or `None` before the
    /// first.
    pub fn last_metrics(&self) -> Option<&Metrics> {
        self.last.as_ref()
    }

    pub fn model(&self) -> &Dvae {
        &self.model
    }
}

impl Task for DvaeTask {
    fn train_loss(&mut self, step: u64) -> Result<Tensor> {
        let mut rng = step_rng(self.settings.seed, step);
        let pixels = dequantize(&self.train.batch(&mut rng, self.settings.batch_size));
        let temperature = self.temperature.at(step);
        let codes = if self.settings.straight_through {
            Codes::StraightThrough { temperature }
        } else {
            Codes::Relaxed { temperature }
        };
        let elbo = self.model.elbo(&pixels, codes)?;
        let dims = pixels.get(0).numel() as f64;
        Ok(elbo.loss(self.beta.at(step)) / dims)
    }

    /// Evaluates the held-out images and returns the negative ELBO (KL weight
    /// 1) at the most likely codes, in nats per pixel value.
    fn eval_loss(&mut self) -> Result<f64> {
        let metrics = evaluate(
            &self.model.encoder,
            &self.model.decoder,
            &self.eval,
            self.settings.batch_size.max(64),
        )?;
        let loss = metrics.reconstruction + metrics.kl;
        self.last = Some(metrics);
        Ok(loss)
    }

    fn items_per_step(&self) -> u64 {
        self.settings.batch_size as u64
    }

    fn item_name(&self) -> &'static str {
        "img"
    }

    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        crate::save(vs, &self.config, dir)
    }

    fn eval_summary(&self) -> Option<String> {
        self.last.as_ref().map(|m| m.to_string())
    }
}
