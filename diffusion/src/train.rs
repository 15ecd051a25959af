//! Training on images: the [`common::train::Task`] of a DDPM, with the
//! simplified objective of Ho et al. (2020), an exponential moving average
//! of the weights, and a held-out loss.
//!
//! Each step draws a batch `x_0`, a timestep `t` uniformly from `0..T` and
//! noise `eps ~ N(0, I)` per image, and minimises the mean squared error
//! between the U-Net's output at `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
//! eps` and the target of the prediction type (`eps` for epsilon
//! prediction). After every optimizer update the moving average
//! `ema = decay * ema + (1 - decay) * w` follows the weights, with diffusers'
//! warm-up `decay = min(decay, (1 + n) / (10 + n))` after `n` updates. The
//! averaged weights are the ones evaluated and exported.
//!
//! With [`DdpmSettings::snr_gamma`], each image's error is weighted by the
//! Min-SNR-gamma rule of Hang et al. (2023): with `snr = abar_t / (1 -
//! abar_t)`, the weight is `min(snr, gamma) / snr` for epsilon prediction,
//! `min(snr, gamma) / (snr + 1)` for v-prediction and `min(snr, gamma)` for
//! sample prediction. The low-noise timesteps, where the error is small and
//! the image is nearly known, then weigh less, and training spends its
//! updates on the noisy timesteps that decide a sample's shape. The held-out
//! loss stays the unweighted mean squared error.
//!
//! A U-Net with `num_class_embeds` trains class-conditionally for
//! classifier-free guidance (Ho and Salimans, 2022). Its last class
//! embedding is the null label, which replaces a fraction
//! [`DdpmSettings::label_dropout`] of the training labels. One network so
//! learns both the conditional and the unconditional prediction.

use crate::pipeline::Pipeline;
use crate::schedule::{NoiseSchedule, Prediction};
use crate::scheduler::SchedulerConfig;
use crate::{Config, UNet2DModel};
use common::train::{step_rng, Task};
use common::{Error, Result};
use rand::Rng;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// The prefix of the trained weights in the variable store.
pub const MODEL_PREFIX: &str = "unet.";
/// The prefix of the moving average of the weights in the variable store.
pub const EMA_PREFIX: &str = "ema.";

/// Held-out images scored by [`Task::eval_loss`], each at one fixed
/// timestep and noise.
const EVAL_IMAGES: i64 = 512;

/// Images `(n, channels, height, width)` in `[-1, 1]`, with their class
/// labels `(n)` in `i64` where known.
#[derive(Debug)]
pub struct ImageSet {
    pub images: Tensor,
    pub labels: Option<Tensor>,
}

impl ImageSet {
    /// Returns the first `n` images and labels (all of them if there are
    /// fewer).
    pub fn head(&self, n: i64) -> Self {
        let n = n.min(self.images.size()[0]);
        Self {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.as_ref().map(|l| l.narrow(0, 0, n)),
        }
    }
}

/// Loads MNIST's digits zero-padded to 32 x 32 and scaled to `[-1, 1]`, as
/// `(train, eval)` sets of `(n, 1, 32, 32)` images and their digits, with
/// the last 10% of each digit held out.
pub fn mnist() -> Result<(ImageSet, ImageSet)> {
    let (train, eval) = common::mnist::load(0.1)?;
    let scale = |digits: common::mnist::Digits| -> Result<ImageSet> {
        Ok(ImageSet {
            images: crate::digits::pad_to_32(&digits.images)? * 2.0 - 1.0,
            labels: Some(digits.labels),
        })
    };
    Ok((scale(train)?, scale(eval)?))
}

/// Returns the null label of a class-conditional U-Net, the index of its
/// last class embedding, which means "no class" in classifier-free
/// guidance. Returns `None` for an unconditional U-Net.
pub fn null_label(config: &Config) -> Option<i64> {
    config.num_class_embeds.map(|n| n - 1)
}

/// The DDPM training task over a fixed set of images.
pub struct DdpmTask {
    unet: UNet2DModel,
    ema: UNet2DModel,
    /// `(trained, averaged)` pairs of the same variable.
    pairs: Vec<(Tensor, Tensor)>,
    ema_decay: f64,
    snr_gamma: Option<f64>,
    /// The training and held-out labels and the null label, for a
    /// class-conditional U-Net.
    labels: Option<(Tensor, Tensor, i64)>,
    label_dropout: f64,
    schedule: NoiseSchedule,
    prediction: Prediction,
    images: Tensor,
    eval: Tensor,
    eval_timesteps: Tensor,
    eval_noise: Tensor,
    batch_size: i64,
    seed: u64,
    config: Config,
    scheduler: SchedulerConfig,
}

/// Settings of [`DdpmTask::new`].
pub struct DdpmSettings {
    pub batch_size: i64,
    /// The moving average's decay per update, in `[0, 1)`.
    pub ema_decay: f64,
    /// The gamma of Min-SNR-gamma loss weighting (5 in Hang et al.); `None`
    /// weighs every timestep equally, as Ho et al. do.
    pub snr_gamma: Option<f64>,
    /// The fraction of training labels replaced by the null label, in
    /// `[0, 1)`, for a class-conditional U-Net. A U-Net without class
    /// embeddings ignores it.
    pub label_dropout: f64,
    pub seed: u64,
}

impl DdpmTask {
    /// Builds the trained U-Net under `unet.` and its moving average under
    /// `ema.` of `vs` (the average is not trainable but is saved with the
    /// training state), over `(train, eval)` image sets. A U-Net with
    /// `num_class_embeds` trains on the sets' labels, which must lie below
    /// its null label ([`null_label`]). The noise schedule and the
    /// prediction type come from `scheduler`, which is exported with the
    /// U-Net as a diffusers pipeline directory.
    pub fn new(
        vs: &VarStore,
        config: &Config,
        scheduler: SchedulerConfig,
        (train, eval): (ImageSet, ImageSet),
        settings: DdpmSettings,
    ) -> Result<Self> {
        let schedule = scheduler.noise_schedule()?;
        if !(0.0..1.0).contains(&settings.ema_decay) {
            return Err(Error::InvalidInput(format!(
                "EMA decay {} is out of range: it must be in [0, 1)",
                settings.ema_decay
            )));
        }
        if let Some(gamma) = settings.snr_gamma {
            schedule.min_snr_weight(0, scheduler.prediction_type, gamma)?;
        }
        if settings.batch_size < 1 {
            return Err(Error::InvalidInput(format!(
                "batch size {} is invalid: it must be at least 1",
                settings.batch_size
            )));
        }
        if !(0.0..1.0).contains(&settings.label_dropout) {
            return Err(Error::InvalidInput(format!(
                "label dropout {} is out of range: it must be in [0, 1)",
                settings.label_dropout
            )));
        }
        for (name, set) in [("training", &train), ("held-out", &eval)] {
            let size = set.images.size();
            if size.len() != 4 || size[0] == 0 || size[1] != config.in_channels {
                return Err(Error::InvalidInput(format!(
                    "the {name} images have shape {size:?}: expected a non-empty \
                     (n, {}, height, width) set",
                    config.in_channels
                )));
            }
        }
        let labels = match null_label(config) {
            None => None,
            Some(null) if null < 1 => {
                return Err(Error::InvalidInput(format!(
                    "num_class_embeds {} leaves no class besides the null label: use at \
                     least 2",
                    null + 1
                )))
            }
            Some(null) => {
                let train_labels = check_labels("training", &train, null)?;
                let eval_labels = check_labels("held-out", &eval, null)?;
                Some((train_labels, eval_labels, null))
            }
        };
        let (images, eval) = (train.images, eval.images);
        let unet = UNet2DModel::new(&(vs.root() / "unet"), config)?;
        let ema = UNet2DModel::new(&(vs.root() / "ema"), config)?;
        let variables = vs.variables();
        let mut pairs = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, trained) in &variables {
                let Some(rest) = name.strip_prefix(MODEL_PREFIX) else {
                    continue;
                };
                let averaged = variables[&format!("{EMA_PREFIX}{rest}")].set_requires_grad(false);
                averaged.shallow_clone().f_copy_(trained)?;
                pairs.push((trained.shallow_clone(), averaged));
            }
            Ok(())
        })?;

        // One fixed (timestep, noise) per held-out image, so that every
        // evaluation scores the same problems.
        let eval = eval.narrow(0, 0, eval.size()[0].min(EVAL_IMAGES));
        let n = eval.size()[0];
        let labels = labels.map(|(train, eval, null)| (train, eval.narrow(0, 0, n), null));
        let mut rng = step_rng(settings.seed, u64::MAX);
        let timesteps: Vec<i64> = (0..n)
            .map(|_| rng.random_range(0..schedule.len()))
            .collect();
        let eval_timesteps = Tensor::from_slice(&timesteps).to_device(eval.device());
        tch::manual_seed(settings.seed as i64);
        let eval_noise = eval.randn_like();

        Ok(Self {
            unet,
            ema,
            pairs,
            ema_decay: settings.ema_decay,
            snr_gamma: settings.snr_gamma,
            labels,
            label_dropout: settings.label_dropout,
            schedule,
            prediction: scheduler.prediction_type,
            images,
            eval,
            eval_timesteps,
            eval_noise,
            batch_size: settings.batch_size,
            seed: settings.seed,
            config: config.clone(),
            scheduler,
        })
    }

    /// The U-Net with the averaged weights.
    pub fn ema(&self) -> &UNet2DModel {
        &self.ema
    }

    /// Returns the mean squared error of `model` on `problem`, each image's
    /// error multiplied by its entry of `weights` `(n)` when given.
    fn loss(
        &self,
        model: &UNet2DModel,
        problem: &Problem,
        weights: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let Problem {
            original,
            timesteps,
            labels,
            noise,
        } = problem;
        let noisy = self.schedule.add_noise(original, noise, timesteps)?;
        let target = self
            .schedule
            .target(self.prediction, original, noise, timesteps)?;
        let output = model.forward_with_labels(&noisy, timesteps, labels.as_ref(), train)?;
        let Some(weights) = weights else {
            return Ok(output.mse_loss(&target, tch::Reduction::Mean));
        };
        let per_image =
            (output - target)
                .square()
                .flatten(1, -1)
                .mean_dim(1, false, tch::Kind::Float);
        Ok((per_image * weights).mean(tch::Kind::Float))
    }

    /// Returns the Min-SNR-gamma weight of each timestep, or `None`
    /// without weighting.
    fn snr_weights(&self, timesteps: &[i64]) -> Result<Option<Tensor>> {
        let Some(gamma) = self.snr_gamma else {
            return Ok(None);
        };
        let weights = timesteps
            .iter()
            .map(|&t| {
                let w = self.schedule.min_snr_weight(t, self.prediction, gamma)?;
                Ok(w as f32)
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(Some(
            Tensor::from_slice(&weights).to_device(self.images.device()),
        ))
    }
}

/// Images `x_0` `(n, channels, height, width)` to denoise at `timesteps`
/// `(n)` with `noise` like the images, and the labels `(n)` of a
/// class-conditional U-Net.
struct Problem {
    original: Tensor,
    timesteps: Tensor,
    labels: Option<Tensor>,
    noise: Tensor,
}

/// Returns the labels of a set for a U-Net whose null label is `null`,
/// checked to be one per image and in `0..null`.
fn check_labels(name: &str, set: &ImageSet, null: i64) -> Result<Tensor> {
    let n = set.images.size()[0];
    let Some(labels) = &set.labels else {
        return Err(Error::InvalidInput(format!(
            "the U-Net is class-conditional, but the {name} images have no labels: pass \
             labels or remove num_class_embeds from the config"
        )));
    };
    if labels.size() != [n] || labels.kind() != tch::Kind::Int64 {
        return Err(Error::InvalidInput(format!(
            "the {name} labels have shape {:?} and type {:?}: expected ({n}) in i64",
            labels.size(),
            labels.kind()
        )));
    }
    let (min, max) = (
        labels.f_min()?.f_int64_value(&[])?,
        labels.f_max()?.f_int64_value(&[])?,
    );
    if min < 0 || max >= null {
        return Err(Error::InvalidInput(format!(
            "{name} label {} is out of range: a U-Net with {} class embeddings takes labels \
             0 to {}, the last embedding being the null label of classifier-free guidance",
            if min < 0 { min } else { max },
            null + 1,
            null - 1
        )));
    }
    Ok(labels.shallow_clone())
}

impl Task for DdpmTask {
    fn train_loss(&mut self, step: u64) -> Result<Tensor> {
        let mut rng = step_rng(self.seed, step);
        let n = self.images.size()[0];
        let index: Vec<i64> = (0..self.batch_size)
            .map(|_| rng.random_range(0..n))
            .collect();
        let timesteps: Vec<i64> = (0..self.batch_size)
            .map(|_| rng.random_range(0..self.schedule.len()))
            .collect();
        let device = self.images.device();
        let index = Tensor::from_slice(&index).to_device(device);
        let batch = self.images.index_select(0, &index);
        let labels = match &self.labels {
            None => None,
            Some((labels, _, null)) => {
                let dropped: Vec<bool> = (0..self.batch_size)
                    .map(|_| rng.random::<f64>() < self.label_dropout)
                    .collect();
                let dropped = Tensor::from_slice(&dropped).to_device(device);
                Some(labels.index_select(0, &index).masked_fill(&dropped, *null))
            }
        };
        let weights = self.snr_weights(&timesteps)?;
        let timesteps = Tensor::from_slice(&timesteps).to_device(device);
        // The training loop seeds libtorch's generator per step, so the noise
        // of a resumed run equals that of an uninterrupted one.
        let noise = batch.randn_like();
        let problem = Problem {
            original: batch,
            timesteps,
            labels,
            noise,
        };
        self.loss(&self.unet, &problem, weights.as_ref(), true)
    }

    fn after_step(&mut self, step: u64) -> Result<()> {
        let updates = (step + 1) as f64;
        let decay = self.ema_decay.min((1.0 + updates) / (10.0 + updates));
        for (trained, averaged) in &self.pairs {
            // ema + (1 - decay) (w - ema) = decay ema + (1 - decay) w
            let _ = averaged.shallow_clone().f_lerp_(trained, 1.0 - decay)?;
        }
        Ok(())
    }

    fn eval_loss(&mut self) -> Result<f64> {
        let mut total = 0.0;
        let n = self.eval.size()[0];
        let chunk = self.batch_size.max(64);
        tch::no_grad(|| -> Result<()> {
            for start in (0..n).step_by(chunk as usize) {
                let len = chunk.min(n - start);
                let problem = Problem {
                    original: self.eval.narrow(0, start, len),
                    timesteps: self.eval_timesteps.narrow(0, start, len),
                    labels: self
                        .labels
                        .as_ref()
                        .map(|(_, eval, _)| eval.narrow(0, start, len)),
                    noise: self.eval_noise.narrow(0, start, len),
                };
                let loss = self.loss(&self.ema, &problem, None, false)?;
                total += loss.f_double_value(&[])? * len as f64;
            }
            Ok(())
        })?;
        Ok(total / n as f64)
    }

    fn items_per_step(&self) -> u64 {
        self.batch_size as u64
    }

    fn item_name(&self) -> &'static str {
        "img"
    }

    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        let unet_dir = dir.join("unet");
        crate::save_unet(vs, EMA_PREFIX, &self.config, &unet_dir)?;
        Pipeline::save_scheduler(dir, &self.scheduler)
    }
}
