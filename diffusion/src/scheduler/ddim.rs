//! DDIM's sampler (Song et al., 2021, "Denoising Diffusion Implicit Models"),
//! reproducing `DDIMScheduler` of diffusers 0.42.1.

use super::{
    check_step_tensors, clip_or_threshold, noise_or_draw, spaced_timesteps, SchedulerConfig,
    StepOutput,
};
use crate::schedule::{NoiseSchedule, Prediction};
use common::{Error, Result};
use tch::Tensor;

/// The per-step options of DDIM, the keyword arguments of diffusers'
/// `DDIMScheduler.step`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DdimStepOptions {
    /// The weight of the noise: sigma_t = eta sqrt(beta~_t). 0 is the
    /// deterministic DDIM sampler, 1 has the variance of DDPM's posterior.
    pub eta: f64,
    /// Whether the noise prediction is recomputed from the clipped or
    /// thresholded x_0, as in GLIDE.
    pub use_clipped_model_output: bool,
}

/// DDIM's sampler: x_{t-1} = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev -
/// sigma_t^2) epsilon + sigma_t z (equation 12 of the paper), with x_0 and
/// epsilon predicted by the model.
#[derive(Debug)]
pub struct DdimScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    num_inference_steps: Option<i64>,
    /// abar before the first training timestep: 1, or abar_0 when
    /// `set_alpha_to_one` is false.
    final_alpha_cumprod: f32,
}

impl DdimScheduler {
    /// Builds the scheduler. Like diffusers, it lists all T training
    /// timesteps but cannot step until [`DdimScheduler::set_timesteps`] has
    /// chosen the inference steps.
    ///
    /// DDIM accepts every [`crate::schedule::BetaSchedule`], including the
    /// sigmoid one that diffusers offers for DDPM only.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let schedule = config.noise_schedule()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let timesteps = (0..schedule.len()).rev().collect();
        Ok(DdimScheduler {
            config,
            schedule,
            timesteps,
            num_inference_steps: None,
            final_alpha_cumprod,
        })
    }

    /// Chooses `num_inference_steps` timesteps spread by
    /// `config.timestep_spacing`.
    ///
    /// Returns [`Error::InvalidInput`] for zero steps, more steps than
    /// training timesteps, or a `steps_offset` that pushes a timestep past
    /// T - 1.
    pub fn set_timesteps(&mut self, num_inference_steps: i64) -> Result<()> {
        self.timesteps = spaced_timesteps(&self.config, num_inference_steps)?;
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    /// Returns the timesteps of the sampling loop, from the noisiest down.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Returns the configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Returns the noise schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Runs one step from x_t to the previous inference timestep.
    ///
    /// `model_output` has the shape of `sample`. `noise` is the standard
    /// normal noise of the step, used when `options.eta > 0`. When it is
    /// `None`, the step draws it with `Tensor::randn_like`, so
    /// `tch::manual_seed` makes it reproducible.
    ///
    /// Returns [`Error::InvalidInput`] before [`DdimScheduler::set_timesteps`],
    /// for a timestep outside [0, T), a negative or non-finite eta, or an eta
    /// above 1 so large that 1 - abar_prev - sigma_t^2 is negative.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        options: DdimStepOptions,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let num_inference_steps = self.num_inference_steps.ok_or_else(|| {
            Error::InvalidInput(
                "DDIM step: the number of inference steps is not set. \
                 Call set_timesteps before step."
                    .to_string(),
            )
        })?;
        check_step_tensors("DDIM step", model_output, sample, noise)?;
        if model_output.size() != sample.size() {
            return Err(Error::InvalidInput(format!(
                "DDIM step: model_output has shape {:?}, but sample has shape {:?}. \
                 They must be equal.",
                model_output.size(),
                sample.size()
            )));
        }
        let eta = options.eta;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::InvalidInput(format!(
                "DDIM step: eta is {eta}, but it must be a number >= 0 (0 is deterministic, \
                 1 matches DDPM)"
            )));
        }
        self.schedule.check_timestep(timestep)?;
        // NOTE: like diffusers 0.42.1, the previous timestep is t - T / n for
        // every spacing, which for "trailing" and "linspace" spacing need not
        // be the next element of timesteps().
        let prev_timestep = timestep - self.schedule.len() / num_inference_steps;

        // Scalars are float32, in the order of operations of diffusers.
        let abar = self.schedule.alphas_cumprod();
        let alpha_prod_t = abar[timestep as usize];
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            abar[prev_timestep as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let sqrt_alpha = f64::from(alpha_prod_t.sqrt());
        let sqrt_beta = f64::from(beta_prod_t.sqrt());

        let (pred_original_sample, mut pred_epsilon) = match self.config.prediction_type {
            Prediction::Epsilon => (
                sample
                    .f_sub(&(model_output * sqrt_beta))?
                    .f_div_scalar(sqrt_alpha)?,
                model_output.shallow_clone(),
            ),
            Prediction::Sample => (
                model_output.shallow_clone(),
                sample
                    .f_sub(&(model_output * sqrt_alpha))?
                    .f_div_scalar(sqrt_beta)?,
            ),
            Prediction::VPrediction => (
                (sample * sqrt_alpha).f_sub(&(model_output * sqrt_beta))?,
                (model_output * sqrt_alpha).f_add(&(sample * sqrt_beta))?,
            ),
        };
        let pred_original_sample = clip_or_threshold(&self.config, pred_original_sample)?;

        // sigma_t = eta sqrt(beta~_t), equation 16 of the paper.
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        let std_dev_t = eta as f32 * variance.sqrt();
        if options.use_clipped_model_output {
            pred_epsilon = sample
                .f_sub(&(&pred_original_sample * sqrt_alpha))?
                .f_div_scalar(sqrt_beta)?;
        }

        let mut direction_variance = 1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t;
        if direction_variance < 0.0 {
            if eta > 1.0 {
                return Err(Error::InvalidInput(format!(
                    "DDIM step: eta {eta} is too large at timestep {timestep}: the noise \
                     variance {} exceeds 1 - abar_prev = {}; use eta <= 1",
                    std_dev_t * std_dev_t,
                    1.0 - alpha_prod_t_prev
                )));
            }
            // NOTE: for eta <= 1 this is a float32 rounding error below zero,
            // for example at the zero-SNR timestep with eta = 1, where
            // diffusers returns NaN.
            direction_variance = 0.0;
        }
        let direction = &pred_epsilon * f64::from(direction_variance.sqrt());
        let mut prev_sample =
            (&pred_original_sample * f64::from(alpha_prod_t_prev.sqrt())).f_add(&direction)?;

        if eta > 0.0 {
            let noise = noise_or_draw(noise, model_output)?;
            prev_sample = prev_sample.f_add(&(noise * f64::from(std_dev_t)))?;
        }
        Ok(StepOutput {
            prev_sample,
            pred_original_sample,
        })
    }
}
