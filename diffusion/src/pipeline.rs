//! A U-Net with its scheduler, in the directory layout of diffusers'
//! `DDPMPipeline`: `model_index.json`, `unet/` (a U-Net directory) and
//! `scheduler/scheduler_config.json`. The reverse process starts from
//! Gaussian noise and applies the scheduler's steps to the U-Net's
//! predictions.

use crate::scheduler::{DdimScheduler, DdimStepOptions, DdpmScheduler, SchedulerConfig};
use crate::UNet2DModel;
use common::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use tch::{Device, Tensor};

/// The file that names a pipeline's components.
pub const MODEL_INDEX_FILE: &str = "model_index.json";
/// The scheduler configuration inside `scheduler/`.
pub const SCHEDULER_FILE: &str = "scheduler_config.json";

/// The reverse-process sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    /// Ancestral sampling with the posterior variance (Ho et al., 2020).
    Ddpm,
    /// DDIM (Song et al., 2021): deterministic at eta 0.
    Ddim,
}

/// Classifier-free guidance (Ho and Salimans, 2022) for a class-conditional
/// U-Net whose last class embedding is the null label, as
/// [`crate::train::DdpmTask`] trains it. Each step predicts with and without
/// the labels and moves the prediction `scale` times the difference away
/// from the unconditional one: `uncond + scale (cond - uncond)`. Scale 1 is
/// the plain conditional model, 0 the unconditional one.
#[derive(Clone, Debug)]
pub struct Guidance {
    /// One class label per sample, each below the null label.
    pub labels: Vec<i64>,
    pub scale: f64,
}

/// A U-Net and the noise schedule it was trained with.
#[derive(Debug)]
pub struct Pipeline {
    pub unet: UNet2DModel,
    pub scheduler: SchedulerConfig,
}

impl Pipeline {
    /// Loads a pipeline directory, or a bare U-Net directory with the DDPM
    /// scheduler defaults (1000 linear betas from 1e-4 to 0.02, epsilon
    /// prediction).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let scheduler_path = dir.join("scheduler").join(SCHEDULER_FILE);
        let scheduler = if scheduler_path.is_file() {
            SchedulerConfig::from_file(&scheduler_path)?
        } else {
            SchedulerConfig::default()
        };
        let unet = crate::load_unet(dir, device)?;
        Ok(Self { unet, scheduler })
    }

    /// Writes `model_index.json` and `scheduler/scheduler_config.json` into
    /// a pipeline directory whose `unet/` is written separately, so that
    /// diffusers' `DDPMPipeline.from_pretrained` reads it.
    pub fn save_scheduler(dir: &Path, scheduler: &SchedulerConfig) -> Result<()> {
        let scheduler_dir = dir.join("scheduler");
        std::fs::create_dir_all(&scheduler_dir).map_err(|e| Error::io(&scheduler_dir, e))?;
        let mut config = serde_json::to_value(scheduler)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise the scheduler: {e}")))?;
        if let Some(map) = config.as_object_mut() {
            map.insert("_class_name".into(), "DDPMScheduler".into());
        }
        write_json(&scheduler_dir.join(SCHEDULER_FILE), &config)?;
        let index = serde_json::json!({
            "_class_name": "DDPMPipeline",
            "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["diffusers", "UNet2DModel"],
        });
        write_json(&dir.join(MODEL_INDEX_FILE), &index)
    }

    /// Draws `count` samples with `steps` denoising steps from an
    /// unconditional U-Net and returns them as images in `[0, 1]`, `(count,
    /// channels, height, width)` at the U-Net's `sample_size`. The seed
    /// fixes the initial noise and every step's noise; `eta` applies to
    /// DDIM only.
    pub fn sample(
        &self,
        sampler: SamplerKind,
        steps: i64,
        eta: f64,
        count: i64,
        seed: u64,
    ) -> Result<Tensor> {
        if self.unet.config().num_class_embeds.is_some() {
            return Err(Error::InvalidInput(
                "this U-Net is class-conditional: sample it with class labels and a \
                 guidance scale"
                    .into(),
            ));
        }
        self.run(sampler, steps, eta, count, seed, None)
    }

    /// [`Pipeline::sample`] for a class-conditional U-Net, one sample per
    /// label of `guidance`.
    ///
    /// ```no_run
    /// use diffusion::pipeline::{Guidance, Pipeline, SamplerKind};
    /// let pipeline = Pipeline::load(std::path::Path::new("runs/ddpm-mnist"), tch::Device::Cpu)?;
    /// let guidance = Guidance { labels: vec![7; 16], scale: 2.0 };
    /// // 16 sevens from 100 ancestral steps, (16, 1, 32, 32) in [0, 1].
    /// let sevens = pipeline.sample_guided(SamplerKind::Ddpm, 100, 0.0, &guidance, 0)?;
    /// # Ok::<(), common::Error>(())
    /// ```
    pub fn sample_guided(
        &self,
        sampler: SamplerKind,
        steps: i64,
        eta: f64,
        guidance: &Guidance,
        seed: u64,
    ) -> Result<Tensor> {
        let Some(null) = crate::train::null_label(self.unet.config()) else {
            return Err(Error::InvalidInput(
                "guidance needs a class-conditional U-Net, and this one has no \
                 num_class_embeds: sample it without labels"
                    .into(),
            ));
        };
        if null < 1 {
            return Err(Error::InvalidInput(format!(
                "this U-Net has num_class_embeds {}, which leaves no class besides the null \
                 label of guidance",
                null + 1
            )));
        }
        if !(guidance.scale.is_finite() && guidance.scale >= 0.0) {
            return Err(Error::InvalidInput(format!(
                "guidance scale {} is invalid: use 0 (unconditional), 1 (conditional) or \
                 more",
                guidance.scale
            )));
        }
        if let Some(&label) = guidance.labels.iter().find(|&&l| !(0..null).contains(&l)) {
            return Err(Error::InvalidInput(format!(
                "class label {label} is out of range: this U-Net takes labels 0 to {}",
                null - 1
            )));
        }
        let count = guidance.labels.len() as i64;
        self.run(sampler, steps, eta, count, seed, Some((guidance, null)))
    }

    fn run(
        &self,
        sampler: SamplerKind,
        steps: i64,
        eta: f64,
        count: i64,
        seed: u64,
        guidance: Option<(&Guidance, i64)>,
    ) -> Result<Tensor> {
        let config = self.unet.config();
        let (height, width) = config
            .sample_size
            .map(|s| s.height_width())
            .ok_or_else(|| {
                Error::InvalidInput(
                    "the U-Net's config.json has no sample_size: set it to the training \
                     resolution"
                        .into(),
                )
            })?;
        if count < 1 {
            return Err(Error::InvalidInput(format!(
                "{count} samples requested: ask for at least 1"
            )));
        }
        let device = self.unet_device();
        // The noise comes from a generator of its own, not libtorch's global
        // one, so that samples depend on the seed alone, even with other
        // threads drawing random numbers.
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = [count, config.in_channels, height, width];
        let mut sample = gaussian(&mut rng, &shape)?.to_device(device);
        // The conditional and unconditional predictions run as one batch.
        let predict = |sample: &Tensor, timestep: &Tensor| -> Result<Tensor> {
            let Some((guidance, null)) = guidance else {
                return self.unet.forward(sample, timestep, false);
            };
            let labels = Tensor::from_slice(&guidance.labels).to_device(device);
            // Scales 1 and 0 need only one of the two predictions.
            if guidance.scale == 1.0 {
                return self
                    .unet
                    .forward_with_labels(sample, timestep, Some(&labels), false);
            }
            if guidance.scale == 0.0 {
                let null_labels = labels.full_like(null);
                return self
                    .unet
                    .forward_with_labels(sample, timestep, Some(&null_labels), false);
            }
            let both = Tensor::cat(&[sample, sample], 0);
            let labels = Tensor::cat(&[labels.shallow_clone(), labels.full_like(null)], 0);
            let output = self
                .unet
                .forward_with_labels(&both, timestep, Some(&labels), false)?;
            let (conditional, unconditional) =
                (output.narrow(0, 0, count), output.narrow(0, count, count));
            Ok(&unconditional + (conditional - &unconditional) * guidance.scale)
        };
        let bar = common::progress::bar(steps.max(0) as u64, "denoising");
        let samples = tch::no_grad(|| -> Result<Tensor> {
            match sampler {
                SamplerKind::Ddpm => {
                    let mut scheduler = DdpmScheduler::new(self.scheduler.clone())?;
                    scheduler.set_timesteps(steps)?;
                    for &t in scheduler.timesteps().to_vec().iter() {
                        let timestep = Tensor::from(t).to_device(device);
                        let output = predict(&sample, &timestep)?;
                        let noise = gaussian(&mut rng, &shape)?.to_device(device);
                        sample = scheduler
                            .step(&output, t, &sample, Some(&noise))?
                            .prev_sample;
                        bar.inc(1);
                    }
                }
                SamplerKind::Ddim => {
                    let mut scheduler = DdimScheduler::new(self.scheduler.clone())?;
                    scheduler.set_timesteps(steps)?;
                    for &t in scheduler.timesteps().to_vec().iter() {
                        let timestep = Tensor::from(t).to_device(device);
                        let output = predict(&sample, &timestep)?;
                        let options = DdimStepOptions {
                            eta,
                            use_clipped_model_output: false,
                        };
                        sample = scheduler
                            .step(&output, t, &sample, options, None)?
                            .prev_sample;
                        bar.inc(1);
                    }
                }
            }
            Ok(sample)
        })?;
        bar.finish_and_clear();
        Ok(((samples + 1.0) / 2.0).clamp(0.0, 1.0))
    }

    fn unet_device(&self) -> Device {
        self.unet.device()
    }
}

/// Writes `value` as indented JSON, atomically.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("cannot serialise {}: {e}", path.display())))?;
    common::checkpoint::write_atomic(path, text.as_bytes())
}

/// Draws standard normal values of `shape` with the Box-Muller transform.
fn gaussian(rng: &mut StdRng, shape: &[i64]) -> Result<Tensor> {
    let count: i64 = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| {
            // 1 - u lies in (0, 1], so its logarithm is finite.
            let (u, v): (f64, f64) = (rng.random(), rng.random());
            ((-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Ok(Tensor::from_slice(&values).f_view(shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_unit_moments() {
        let mut rng = StdRng::seed_from_u64(0);
        let values = gaussian(&mut rng, &[100, 1000]).unwrap();
        let mean = values.mean(tch::Kind::Double).double_value(&[]);
        let variance = values.var(true).double_value(&[]);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.02, "variance {variance}");
        assert!(values.isfinite().all().int64_value(&[]) == 1);
    }
}
