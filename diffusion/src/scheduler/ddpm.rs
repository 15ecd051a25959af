//! DDPM's ancestral sampler (Ho et al., 2020, "Denoising Diffusion
//! Probabilistic Models"), with the learned variances of improved DDPM
//! (Nichol and Dhariwal, 2021), reproducing `DDPMScheduler` of diffusers
//! 0.42.1.

use super::{
    check_step_tensors, clip_or_threshold, noise_or_draw, spaced_timesteps, SchedulerConfig,
    StepOutput,
};
use crate::schedule::{diffusers_names, NoiseSchedule, Prediction};
use common::{Error, Result};
use tch::Tensor;

diffusers_names! {
    /// The variance of the noise that a DDPM step adds, named as in diffusers'
    /// `variance_type`.
    ///
    /// With abar_prev the abar of the next timestep of the sampling loop (1
    /// after the last), beta_t = 1 - abar_t / abar_prev, and
    /// beta~_t = (1 - abar_prev) / (1 - abar_t) beta_t is the variance of the
    /// posterior q(x_prev | x_t, x_0). Like diffusers, beta~_t is clamped below
    /// at 1e-20.
    pub enum VarianceType in "variance_type" {
        /// beta~_t, the posterior variance (DDPM's sigma_t^2 = beta~_t).
        FixedSmall = "fixed_small",
        /// beta~_t, with the standard deviation computed through its logarithm.
        FixedSmallLog = "fixed_small_log",
        /// beta_t (DDPM's sigma_t^2 = beta_t).
        FixedLarge = "fixed_large",
        /// beta_t, with the standard deviation computed through its logarithm.
        FixedLargeLog = "fixed_large_log",
        /// The model outputs the variance itself in a second half of its
        /// channels.
        Learned = "learned",
        /// The model outputs v in [-1, 1] in a second half of its channels, and
        /// the log-variance is the interpolation ((1 + v) / 2) log beta_t +
        /// ((1 - v) / 2) log beta~_t of improved DDPM.
        LearnedRange = "learned_range",
    }
}

impl VarianceType {
    /// Returns whether the model predicts the variance in extra channels.
    pub fn is_learned(self) -> bool {
        matches!(self, VarianceType::Learned | VarianceType::LearnedRange)
    }
}

/// DDPM's sampler: each step samples x_{t-1} from the Gaussian posterior
/// q(x_{t-1} | x_t, x_0) with x_0 predicted by the model.
#[derive(Debug)]
pub struct DdpmScheduler {
    config: SchedulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<i64>,
    /// Whether `timesteps` was chosen by `set_timesteps` or
    /// `set_custom_timesteps`. Until then every training timestep is used
    /// and the step after t is t - 1, even for a t outside `timesteps`.
    chosen: bool,
}

impl DdpmScheduler {
    /// Builds the scheduler, with all T training timesteps until
    /// [`DdpmScheduler::set_timesteps`] chooses fewer.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        let schedule = config.noise_schedule()?;
        let timesteps = (0..schedule.len()).rev().collect();
        Ok(DdpmScheduler {
            config,
            schedule,
            timesteps,
            chosen: false,
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
        self.chosen = true;
        Ok(())
    }

    /// Uses the given timesteps, which must be strictly decreasing and lie in
    /// [0, T).
    pub fn set_custom_timesteps(&mut self, timesteps: &[i64]) -> Result<()> {
        let total = self.schedule.len();
        if timesteps.is_empty() {
            return Err(Error::InvalidInput(
                "custom timesteps are empty, but sampling needs at least 1 step".to_string(),
            ));
        }
        if let Some(pair) = timesteps.windows(2).find(|pair| pair[1] >= pair[0]) {
            return Err(Error::InvalidInput(format!(
                "custom timesteps must be strictly decreasing, but {} follows {}",
                pair[1], pair[0]
            )));
        }
        let (first, last) = (timesteps[0], timesteps[timesteps.len() - 1]);
        if first >= total || last < 0 {
            return Err(Error::InvalidInput(format!(
                "custom timesteps run from {first} to {last}, but they must lie in [0, {total})"
            )));
        }
        self.timesteps = timesteps.to_vec();
        self.chosen = true;
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

    /// Returns the timestep after `timestep` in the sampling loop, or -1
    /// after the last.
    fn previous_timestep(&self, timestep: i64) -> Result<i64> {
        if !self.chosen {
            return Ok(timestep - 1);
        }
        let index = self
            .timesteps
            .iter()
            .position(|&t| t == timestep)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "timestep {timestep} is not one of the {} timesteps that \
                     set_timesteps chose; step through timesteps()",
                    self.timesteps.len()
                ))
            })?;
        Ok(self.timesteps.get(index + 1).copied().unwrap_or(-1))
    }

    /// Runs one step from x_t to x_{t-1}, the next timestep of
    /// [`DdpmScheduler::timesteps`].
    ///
    /// `model_output` has the shape of `sample`, or twice its channels
    /// (dimension 1) for the learned variance types, whose second half is
    /// the predicted variance. `noise` is the standard normal noise of the
    /// step. When it is `None`, the step draws it with `Tensor::randn_like`,
    /// so `tch::manual_seed` makes it reproducible. The step at t = 0 adds
    /// no noise.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_step_tensors("DDPM step", model_output, sample, noise)?;
        let (model_output, predicted_variance) = self.split_model_output(model_output, sample)?;
        self.schedule.check_timestep(timestep)?;
        let prev_timestep = self.previous_timestep(timestep)?;

        // Scalars are float32, in the order of operations of diffusers.
        let abar = self.schedule.alphas_cumprod();
        let alpha_prod_t = abar[timestep as usize];
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            abar[prev_timestep as usize]
        } else {
            1.0
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;

        let pred_original_sample = match self.config.prediction_type {
            Prediction::Epsilon => sample
                .f_sub(&(&model_output * f64::from(beta_prod_t.sqrt())))?
                .f_div_scalar(f64::from(alpha_prod_t.sqrt()))?,
            Prediction::Sample => model_output.shallow_clone(),
            Prediction::VPrediction => (sample * f64::from(alpha_prod_t.sqrt()))
                .f_sub(&(&model_output * f64::from(beta_prod_t.sqrt())))?,
        };
        let pred_original_sample = clip_or_threshold(&self.config, pred_original_sample)?;

        // The mean of the posterior q(x_{t-1} | x_t, x_0), equation 7 of DDPM.
        let original_coeff = alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t;
        let sample_coeff = current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t;
        let mean = (&pred_original_sample * f64::from(original_coeff))
            .f_add(&(sample * f64::from(sample_coeff)))?;
        if timestep == 0 {
            return Ok(StepOutput {
                prev_sample: mean,
                pred_original_sample,
            });
        }

        let noise = noise_or_draw(noise, &model_output)?;
        let variance = (beta_prod_t_prev / beta_prod_t * current_beta_t).max(1e-20);
        let scaled_noise = match self.config.variance_type {
            VarianceType::FixedSmall => &noise * f64::from(variance.sqrt()),
            VarianceType::FixedSmallLog => &noise * f64::from((0.5 * variance.ln()).exp()),
            VarianceType::FixedLarge => &noise * f64::from(current_beta_t.sqrt()),
            // NOTE: diffusers 0.42.1 takes the square root of the
            // log-variance here, which is NaN. This uses the standard
            // deviation exp(log(beta_t) / 2), the value fixed_large gives.
            VarianceType::FixedLargeLog => &noise * f64::from((0.5 * current_beta_t.ln()).exp()),
            VarianceType::Learned => {
                let predicted_variance = predicted_variance.ok_or_else(missing_variance)?;
                predicted_variance.f_sqrt()?.f_mul(&noise)?
            }
            VarianceType::LearnedRange => {
                let predicted_variance = predicted_variance.ok_or_else(missing_variance)?;
                let min_log = f64::from(variance.ln());
                let max_log = f64::from(current_beta_t.ln());
                let frac = (predicted_variance + 1.0) / 2.0;
                let log_variance =
                    (&frac * max_log).f_add(&(frac.f_rsub_scalar(1.0)? * min_log))?;
                (log_variance * 0.5).f_exp()?.f_mul(&noise)?
            }
        };
        Ok(StepOutput {
            prev_sample: mean.f_add(&scaled_noise)?,
            pred_original_sample,
        })
    }

    /// Splits the predicted variance off a model output with twice the
    /// channels of `sample`, for the learned variance types, and checks the
    /// shapes.
    fn split_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let output_shape = model_output.size();
        let sample_shape = sample.size();
        let variance_type = self.config.variance_type;
        if variance_type.is_learned() {
            if sample_shape.len() < 2 {
                return Err(Error::InvalidInput(format!(
                    "DDPM step: variance_type {variance_type} needs samples with a channel \
                     dimension (batch, channels, ...), but sample has shape {sample_shape:?}"
                )));
            }
            let mut expected = sample_shape.clone();
            expected[1] *= 2;
            if output_shape != expected {
                return Err(Error::InvalidInput(format!(
                    "DDPM step: variance_type {variance_type} needs a model output of shape \
                     {expected:?}, with twice the channels (dimension 1) of the sample, but it \
                     has shape {output_shape:?}"
                )));
            }
            let channels = sample_shape[1];
            let parts = model_output.f_split(channels, 1)?;
            let [prediction, variance]: [Tensor; 2] = parts.try_into().map_err(|_| {
                Error::InvalidInput("DDPM step: could not split the model output".to_string())
            })?;
            return Ok((prediction, Some(variance)));
        }
        if output_shape != sample_shape {
            return Err(Error::InvalidInput(format!(
                "DDPM step: model_output has shape {output_shape:?}, but sample has shape \
                 {sample_shape:?}. They must be equal unless variance_type is learned or \
                 learned_range (it is {variance_type})."
            )));
        }
        Ok((model_output.shallow_clone(), None))
    }
}

fn missing_variance() -> Error {
    Error::InvalidInput("DDPM step: the model output has no predicted variance".to_string())
}
