//! Samplers of the reverse diffusion process: DDPM's ancestral sampling (Ho
//! et al., 2020, "Denoising Diffusion Probabilistic Models") and DDIM (Song
//! et al., 2021, "Denoising Diffusion Implicit Models"). They reproduce
//! `DDPMScheduler` and `DDIMScheduler` of `diffusers` 0.42.1
//! (`schedulers/scheduling_ddpm.py` and `scheduling_ddim.py`), and read the
//! `scheduler_config.json` files that diffusers writes.
//!
//! A sampling loop starts from Gaussian noise and calls `step` once per
//! timestep of `timesteps()`:
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! use diffusion::scheduler::{DdpmScheduler, Sampler, SchedulerConfig};
//! use tch::{Kind, Tensor};
//!
//! let mut sampler = Sampler::Ddpm(DdpmScheduler::new(SchedulerConfig::default())?);
//! sampler.set_timesteps(50)?;
//! let mut sample = Tensor::randn([1, 3, 32, 32], (Kind::Float, tch::Device::Cpu))
//!     * sampler.init_noise_sigma();
//! for &t in sampler.timesteps() {
//!     let model_output = sample.zeros_like(); // the denoiser's prediction at t
//!     sample = sampler.step(&model_output, t, &sample, None)?.prev_sample;
//! }
//! # Ok(())
//! # }
//! ```

mod ddim;
mod ddpm;

pub use ddim::{DdimScheduler, DdimStepOptions};
pub use ddpm::{DdpmScheduler, VarianceType};

use crate::schedule::{
    check_float, check_same, diffusers_names, BetaSchedule, NoiseSchedule, Prediction,
};
use common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;
use tch::{Kind, Tensor};

diffusers_names! {
    /// The rule by which `set_timesteps` spreads the inference timesteps over
    /// the training timesteps (Lin et al., 2024, "Common Diffusion Noise
    /// Schedules and Sample Steps Are Flawed", table 2).
    pub enum TimestepSpacing in "timestep_spacing" {
        /// Multiples of T / n (integer division) starting at 0, plus
        /// `steps_offset`. This is diffusers' default.
        Leading = "leading",
        /// round(T - i T / n) - 1, so sampling starts at t = T - 1.
        Trailing = "trailing",
        /// round(linspace(0, T - 1, n)), so both ends are included.
        Linspace = "linspace",
    }
}

/// The configuration of [`DdpmScheduler`] and [`DdimScheduler`], with the
/// field names and defaults of diffusers' `scheduler_config.json`.
///
/// The defaults of `DDPMScheduler` and `DDIMScheduler` agree on every field
/// they share. `variance_type` is read by DDPM only and `set_alpha_to_one` by
/// DDIM only, so one default serves both. Deserializing ignores unknown keys
/// such as `_class_name` and `_diffusers_version`, and treats `null` as the
/// default. [`SchedulerConfig::from_json`] reports unsupported values as
/// [`Error::Unsupported`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct SchedulerConfig {
    /// The number of diffusion steps T the model was trained with (1000).
    pub num_train_timesteps: i64,
    /// The first beta of the linear, scaled linear and sigmoid schedules
    /// (0.0001).
    pub beta_start: f64,
    /// The last beta of the linear, scaled linear and sigmoid schedules (0.02).
    pub beta_end: f64,
    /// The rule for the betas (linear).
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, one per training timestep, that replace
    /// `beta_schedule` (none).
    pub trained_betas: Option<Vec<f64>>,
    /// DDPM only: the variance of each step (fixed_small).
    pub variance_type: VarianceType,
    /// Whether the predicted x_0 is clamped to
    /// [-clip_sample_range, clip_sample_range] (true).
    pub clip_sample: bool,
    /// The bound of `clip_sample` (1.0).
    pub clip_sample_range: f64,
    /// The quantity that the model predicts (epsilon).
    pub prediction_type: Prediction,
    /// Whether the predicted x_0 goes through dynamic thresholding (Saharia
    /// et al., 2022, "Photorealistic Text-to-Image Diffusion Models with Deep
    /// Language Understanding"), which then replaces `clip_sample` (false).
    pub thresholding: bool,
    /// The quantile of |x_0| that dynamic thresholding scales by (0.995).
    pub dynamic_thresholding_ratio: f64,
    /// The largest scale of dynamic thresholding (1.0).
    pub sample_max_value: f64,
    /// The spacing of the inference timesteps (leading).
    pub timestep_spacing: TimestepSpacing,
    /// An offset added to "leading" timesteps, 1 in Stable Diffusion (0).
    pub steps_offset: i64,
    /// DDIM only: whether abar before the first timestep is 1, or else
    /// abar_0 (true).
    pub set_alpha_to_one: bool,
    /// Whether betas are rescaled to zero terminal SNR (false). abar_{T-1} is
    /// then 0, so epsilon prediction divides by zero at t = T - 1, as in
    /// diffusers. Lin et al. (2024) pair the rescaling with v prediction.
    pub rescale_betas_zero_snr: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: Prediction::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            set_alpha_to_one: true,
            rescale_betas_zero_snr: false,
        }
    }
}

impl TryFrom<serde_json::Value> for SchedulerConfig {
    type Error = Error;

    /// Reads the fields of a parsed `scheduler_config.json`. Missing and
    /// `null` fields take the default, and unknown keys are ignored.
    fn try_from(value: serde_json::Value) -> Result<Self> {
        let serde_json::Value::Object(fields) = value else {
            return Err(Error::InvalidInput(format!(
                "a scheduler config must be a JSON object, got {}",
                abbreviate(&value)
            )));
        };
        let fields = ConfigFields(&fields);
        let default = SchedulerConfig::default();
        let config = SchedulerConfig {
            num_train_timesteps: fields
                .integer("num_train_timesteps", default.num_train_timesteps)?,
            beta_start: fields.number("beta_start", default.beta_start)?,
            beta_end: fields.number("beta_end", default.beta_end)?,
            beta_schedule: fields.name("beta_schedule", default.beta_schedule)?,
            trained_betas: fields.numbers("trained_betas")?,
            variance_type: fields.name("variance_type", default.variance_type)?,
            clip_sample: fields.boolean("clip_sample", default.clip_sample)?,
            clip_sample_range: fields.number("clip_sample_range", default.clip_sample_range)?,
            prediction_type: fields.name("prediction_type", default.prediction_type)?,
            thresholding: fields.boolean("thresholding", default.thresholding)?,
            dynamic_thresholding_ratio: fields.number(
                "dynamic_thresholding_ratio",
                default.dynamic_thresholding_ratio,
            )?,
            sample_max_value: fields.number("sample_max_value", default.sample_max_value)?,
            timestep_spacing: fields.name("timestep_spacing", default.timestep_spacing)?,
            steps_offset: fields.integer("steps_offset", default.steps_offset)?,
            set_alpha_to_one: fields.boolean("set_alpha_to_one", default.set_alpha_to_one)?,
            rescale_betas_zero_snr: fields
                .boolean("rescale_betas_zero_snr", default.rescale_betas_zero_snr)?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The fields of a config object, read with errors that name the field.
struct ConfigFields<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl ConfigFields<'_> {
    fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn read<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        convert: impl Fn(&serde_json::Value) -> Option<T>,
    ) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => convert(value).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "scheduler config field {name} must be {expected}, got {}",
                    abbreviate(value)
                ))
            }),
        }
    }

    fn integer(&self, name: &str, default: i64) -> Result<i64> {
        self.read(name, default, "an integer", serde_json::Value::as_i64)
    }

    fn number(&self, name: &str, default: f64) -> Result<f64> {
        self.read(name, default, "a number", serde_json::Value::as_f64)
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool> {
        self.read(name, default, "true or false", serde_json::Value::as_bool)
    }

    fn numbers(&self, name: &str) -> Result<Option<Vec<f64>>> {
        self.read(name, None, "a list of numbers", |value| {
            let list = value.as_array()?;
            list.iter()
                .map(serde_json::Value::as_f64)
                .collect::<Option<Vec<f64>>>()
                .map(Some)
        })
    }

    /// Parses a name such as `beta_schedule`. An unknown name returns
    /// [`Error::Unsupported`].
    fn name<T: FromStr<Err = Error>>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(serde_json::Value::String(text)) => text.parse(),
            Some(value) => Err(Error::InvalidInput(format!(
                "scheduler config field {name} must be a string, got {}",
                abbreviate(value)
            ))),
        }
    }
}

/// Returns the JSON text of `value`, cut to 60 characters for error messages.
fn abbreviate(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

impl SchedulerConfig {
    /// Parses the JSON of a diffusers `scheduler_config.json`.
    ///
    /// Returns [`Error::InvalidInput`] for malformed JSON, a field of the wrong
    /// type or a value out of range, and [`Error::Unsupported`] for an
    /// unknown `beta_schedule`, `variance_type`, `prediction_type` or
    /// `timestep_spacing`.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("invalid scheduler config JSON: {e}")))?;
        SchedulerConfig::try_from(value)
    }

    /// Reads a diffusers `scheduler_config.json` file, with the errors of
    /// [`SchedulerConfig::from_json`] prefixed by the path.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, "scheduler config", e.to_string()))?;
        // Building the noise schedule checks the betas and the number of
        // timesteps, so that their errors name the file too.
        let config = SchedulerConfig::try_from(value).and_then(|config| {
            config.noise_schedule()?;
            Ok(config)
        });
        config.map_err(|e| match e {
            Error::Unsupported(message) => {
                Error::Unsupported(format!("{}: {message}", path.display()))
            }
            Error::InvalidInput(message) => Error::format(path, "scheduler config", message),
            other => other,
        })
    }

    /// Checks the values that the noise schedule does not: the clipping and
    /// thresholding parameters, `steps_offset`, and the length of
    /// `trained_betas`. [`SchedulerConfig::noise_schedule`] checks the rest.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "{name} is {value}, but it must be a positive number"
                )))
            }
        };
        positive("clip_sample_range", self.clip_sample_range)?;
        positive("sample_max_value", self.sample_max_value)?;
        if !(0.0..=1.0).contains(&self.dynamic_thresholding_ratio) {
            return Err(Error::InvalidInput(format!(
                "dynamic_thresholding_ratio is {}, but it is a quantile and must lie in [0, 1]",
                self.dynamic_thresholding_ratio
            )));
        }
        if self.steps_offset < 0 {
            return Err(Error::InvalidInput(format!(
                "steps_offset is {}, but it must not be negative",
                self.steps_offset
            )));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() as i64 != self.num_train_timesteps {
                return Err(Error::InvalidInput(format!(
                    "trained_betas has {} values, but num_train_timesteps is {}. \
                     They must be equal.",
                    betas.len(),
                    self.num_train_timesteps
                )));
            }
        }
        Ok(())
    }

    /// Builds the noise schedule: `trained_betas` if present, else
    /// `beta_schedule`, then rescaled to zero terminal SNR if
    /// `rescale_betas_zero_snr` is set.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        self.validate()?;
        let schedule = match &self.trained_betas {
            Some(betas) => NoiseSchedule::from_betas(betas)?,
            None => NoiseSchedule::new(
                self.beta_schedule,
                self.num_train_timesteps,
                self.beta_start,
                self.beta_end,
            )?,
        };
        if self.rescale_betas_zero_snr {
            schedule.rescale_zero_terminal_snr()
        } else {
            Ok(schedule)
        }
    }
}

/// The result of one denoising step.
#[derive(Debug)]
pub struct StepOutput {
    /// The sample at the previous timestep, x_{t-1}: the input of the next
    /// step.
    pub prev_sample: Tensor,
    /// The model's estimate of the clean sample x_0 at this step, after
    /// clipping or thresholding.
    pub pred_original_sample: Tensor,
}

/// Either sampler, for a sampling loop that serves both.
#[derive(Debug)]
pub enum Sampler {
    /// DDPM's ancestral sampling.
    Ddpm(DdpmScheduler),
    /// DDIM, with the options of every step.
    Ddim {
        /// The DDIM scheduler.
        scheduler: DdimScheduler,
        /// The eta (0 is deterministic) and clipping option of every step.
        options: DdimStepOptions,
    },
}

impl Sampler {
    /// Chooses `num_inference_steps` timesteps, as
    /// [`DdpmScheduler::set_timesteps`] does.
    pub fn set_timesteps(&mut self, num_inference_steps: i64) -> Result<()> {
        match self {
            Sampler::Ddpm(scheduler) => scheduler.set_timesteps(num_inference_steps),
            Sampler::Ddim { scheduler, .. } => scheduler.set_timesteps(num_inference_steps),
        }
    }

    /// Returns the timesteps of the sampling loop, from the noisiest down.
    pub fn timesteps(&self) -> &[i64] {
        match self {
            Sampler::Ddpm(scheduler) => scheduler.timesteps(),
            Sampler::Ddim { scheduler, .. } => scheduler.timesteps(),
        }
    }

    /// Runs one denoising step with [`DdpmScheduler::step`] or
    /// [`DdimScheduler::step`].
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        match self {
            Sampler::Ddpm(scheduler) => scheduler.step(model_output, timestep, sample, noise),
            Sampler::Ddim { scheduler, options } => {
                scheduler.step(model_output, timestep, sample, *options, noise)
            }
        }
    }

    /// Returns the configuration of the scheduler.
    pub fn config(&self) -> &SchedulerConfig {
        match self {
            Sampler::Ddpm(scheduler) => scheduler.config(),
            Sampler::Ddim { scheduler, .. } => scheduler.config(),
        }
    }

    /// Returns the noise schedule of the scheduler.
    pub fn schedule(&self) -> &NoiseSchedule {
        match self {
            Sampler::Ddpm(scheduler) => scheduler.schedule(),
            Sampler::Ddim { scheduler, .. } => scheduler.schedule(),
        }
    }

    /// Returns the standard deviation of the initial noise, 1 for both
    /// samplers (diffusers' `init_noise_sigma`).
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }
}

/// Computes the `num_inference_steps` timesteps of `config.timestep_spacing`,
/// from the noisiest down, as diffusers' `set_timesteps` does with NumPy.
///
/// Returns [`Error::InvalidInput`] when `num_inference_steps` is outside
/// [1, num_train_timesteps] or `steps_offset` pushes a timestep past T - 1.
fn spaced_timesteps(config: &SchedulerConfig, num_inference_steps: i64) -> Result<Vec<i64>> {
    let total = config.num_train_timesteps;
    let n = num_inference_steps;
    if n < 1 {
        return Err(Error::InvalidInput(format!(
            "num_inference_steps is {n}, but sampling needs at least 1 step"
        )));
    }
    if n > total {
        return Err(Error::InvalidInput(format!(
            "num_inference_steps is {n}, but the model was trained with \
             num_train_timesteps = {total}, so it can take at most {total} steps"
        )));
    }
    let timesteps: Vec<i64> = match config.timestep_spacing {
        TimestepSpacing::Linspace => {
            // np.linspace(0, T - 1, n): i * step, with the last value exact.
            let last = (total - 1) as f64;
            let step = if n > 1 { last / (n - 1) as f64 } else { 0.0 };
            (0..n)
                .rev()
                .map(|i| {
                    let value = if n > 1 && i == n - 1 {
                        last
                    } else {
                        i as f64 * step
                    };
                    value.round_ties_even() as i64
                })
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = total / n;
            (0..n)
                .rev()
                .map(|i| i * ratio + config.steps_offset)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // np.arange(T, 0, -T / n) stores start and start + step, then
            // fills element i with start + i * (second - start).
            let start = total as f64;
            let second = start - total as f64 / n as f64;
            let delta = second - start;
            // NOTE: np.arange sometimes returns n + 1 elements here (for
            // T = 1000 and n = 61, for example), and diffusers 0.42.1 then
            // ends with the timestep -1. This takes the first n.
            (0..n)
                .map(|i| {
                    let value = match i {
                        0 => start,
                        1 => second,
                        _ => start + i as f64 * delta,
                    };
                    value.round_ties_even() as i64 - 1
                })
                .collect()
        }
    };
    if let Some(&t) = timesteps.iter().find(|&&t| t < 0 || t >= total) {
        return Err(Error::InvalidInput(format!(
            "{} spacing with {n} steps and steps_offset {} gives timestep {t}, \
             outside [0, {total}): lower steps_offset or num_inference_steps",
            config.timestep_spacing, config.steps_offset
        )));
    }
    Ok(timesteps)
}

/// Checks the tensors of a step: a floating-point `sample` with a batch
/// dimension, `model_output` of its kind and device, and `noise`, if given,
/// of its shape, kind and device. The shape of `model_output` is left to the
/// scheduler.
fn check_step_tensors(
    function: &str,
    model_output: &Tensor,
    sample: &Tensor,
    noise: Option<&Tensor>,
) -> Result<()> {
    if sample.dim() == 0 {
        return Err(Error::InvalidInput(format!(
            "{function}: sample is a scalar, but it needs a batch dimension"
        )));
    }
    check_float(function, "sample", sample)?;
    if model_output.kind() != sample.kind() || model_output.device() != sample.device() {
        return Err(Error::InvalidInput(format!(
            "{function}: model_output is {:?} on {:?}, but sample is {:?} on {:?}. \
             They must match.",
            model_output.kind(),
            model_output.device(),
            sample.kind(),
            sample.device()
        )));
    }
    if let Some(noise) = noise {
        check_same(function, "noise", noise, "sample", sample)?;
    }
    Ok(())
}

/// Returns `noise`, or draws standard normal noise like `like` from torch's
/// global generator (seeded by `tch::manual_seed`).
fn noise_or_draw(noise: Option<&Tensor>, like: &Tensor) -> Result<Tensor> {
    match noise {
        Some(noise) => Ok(noise.shallow_clone()),
        None => Ok(like.f_randn_like()?),
    }
}

/// Clamps the predicted x_0 to [-clip_sample_range, clip_sample_range], or
/// applies dynamic thresholding when `thresholding` is set, as diffusers does.
fn clip_or_threshold(config: &SchedulerConfig, x0: Tensor) -> Result<Tensor> {
    if config.thresholding {
        threshold(config, &x0)
    } else if config.clip_sample {
        let range = config.clip_sample_range;
        Ok(x0.f_clamp(-range, range)?)
    } else {
        Ok(x0)
    }
}

/// Applies dynamic thresholding. For each batch element,
/// s = clamp(quantile(|x_0|, ratio), 1, sample_max_value), and x_0 is
/// clamped to [-s, s] and divided by s. Half-precision input is computed in
/// float32, as diffusers does, because `quantile` needs float32 or float64.
fn threshold(config: &SchedulerConfig, x0: &Tensor) -> Result<Tensor> {
    let kind = x0.kind();
    let shape = x0.size();
    let work = if matches!(kind, Kind::Float | Kind::Double) {
        x0.shallow_clone()
    } else {
        x0.f_to_kind(Kind::Float)?
    };
    let per_element: i64 = shape[1..].iter().product();
    let flat = work.f_reshape([shape[0], per_element])?;
    let s = flat
        .f_abs()?
        .f_quantile_scalar(config.dynamic_thresholding_ratio, 1, false, "linear")?
        .f_clamp(1.0, config.sample_max_value)?
        .f_unsqueeze(1)?;
    let thresholded = flat
        .f_clamp_tensor(Some(&s.f_neg()?), Some(&s))?
        .f_div(&s)?;
    Ok(thresholded.f_reshape(&shape)?.f_to_kind(kind)?)
}
