//! Noise schedules of denoising diffusion: the betas, alphas and their
//! cumulative products that define the forward process
//! q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).
//!
//! The schedules are the linear one of DDPM (Ho et al., 2020, "Denoising
//! Diffusion Probabilistic Models"), the "scaled linear" one of latent
//! diffusion, a sigmoid one, and the cosine schedule of Nichol and Dhariwal
//! (2021, "Improved Denoising Diffusion Probabilistic Models"). The reference
//! implementation is `diffusers` 0.42.1 (`DDPMScheduler.__init__`,
//! `betas_for_alpha_bar` and `rescale_zero_terminal_snr` in
//! `schedulers/scheduling_ddpm.py`).
//!
//! # Precision
//!
//! diffusers stores betas, alphas and alphas_cumprod as float32 tensors, and
//! the DDPM and DDIM steps do their scalar arithmetic on them in float32. This
//! module stores the same float32 values, because a float64 schedule would
//! drift from the reference: the cumulative product of 1000 alphas that were
//! rounded to float32 differs from the float64 product by up to about 3e-5
//! relative, and dividing by sqrt(abar_t) near t = T amplifies that past 1e-5.
//! The values come out as follows.
//!
//! - Linear, scaled linear and sigmoid: the float64 `linspace` rounded to
//!   float32. torch's float32 `linspace` can differ from that by an ulp or
//!   three, depending on the CPU's vector width.
//! - Cosine: computed in float64 and rounded to float32, as diffusers does.
//! - `alphas = 1 - betas` in float32, as diffusers does.
//! - `alphas_cumprod`: the running product in float64, each value rounded to
//!   float32. That is what torch's CPU `cumprod` does for float32 tensors, so
//!   the values are bit-identical to diffusers' for identical betas.

use common::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The largest number of training timesteps that [`NoiseSchedule::new`]
/// accepts. Published schedules use 1000 (DDPM) or 4000 (improved DDPM), so
/// the bound only rejects mistyped values, which could allocate gigabytes.
pub const MAX_TRAIN_TIMESTEPS: i64 = 1_000_000;

/// The largest beta of the cosine schedule (diffusers' `max_beta`). Without
/// the cap the last beta would be 1, because abar(1) = cos(pi / 2)^2 = 0.
const COSINE_MAX_BETA: f64 = 0.999;

/// The offset s of the cosine schedule's abar(t) = cos((t + s) / (1 + s) * pi / 2)^2.
const COSINE_OFFSET: f64 = 0.008;

/// Defines an enum whose variants are the values of one field of diffusers'
/// configs. Each variant carries its diffusers name, which serde, `as_str`,
/// `Display` and `FromStr` use; `FromStr` reports any other name as
/// [`Error::Unsupported`], listing the supported ones.
macro_rules! diffusers_names {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $field:literal {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            #[doc = concat!("Returns the name in the `", $field, "` field of diffusers' configs.")]
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = common::Error;

            #[doc = concat!("Parses a diffusers `", $field, "` name.")]
            fn from_str(name: &str) -> common::Result<Self> {
                $crate::schedule::parse_name($field, name, Self::ALL, |v| v.as_str())
            }
        }
    };
}
pub(crate) use diffusers_names;

diffusers_names! {
    /// The rule that sets the beta of each training timestep, named as in the
    /// `beta_schedule` field of diffusers' scheduler configs.
    pub enum BetaSchedule in "beta_schedule" {
        /// Betas evenly spaced from `beta_start` to `beta_end` (DDPM).
        Linear = "linear",
        /// Square roots of the betas evenly spaced, then squared (latent diffusion,
        /// Stable Diffusion).
        ScaledLinear = "scaled_linear",
        /// The cosine schedule of improved DDPM with betas capped at 0.999. It
        /// ignores `beta_start` and `beta_end`.
        SquaredcosCapV2 = "squaredcos_cap_v2",
        /// `sigmoid(linspace(-6, 6))` scaled to run from `beta_start` to
        /// `beta_end`. diffusers offers it in `DDPMScheduler` only.
        Sigmoid = "sigmoid",
    }
}

diffusers_names! {
    /// The quantity that the denoising model predicts, named as in diffusers'
    /// `prediction_type`.
    pub enum Prediction in "prediction_type" {
        /// The noise epsilon added to x_0.
        Epsilon = "epsilon",
        /// The clean sample x_0 itself.
        Sample = "sample",
        /// The velocity v = sqrt(abar_t) epsilon - sqrt(1 - abar_t) x_0
        /// (Salimans and Ho, 2022, "Progressive Distillation for Fast Sampling of
        /// Diffusion Models").
        VPrediction = "v_prediction",
    }
}

/// Finds `name` among the names of `variants`, or returns an
/// [`Error::Unsupported`] that lists the supported names.
pub(crate) fn parse_name<T: Copy>(
    field: &str,
    name: &str,
    variants: &[T],
    as_str: impl Fn(T) -> &'static str,
) -> Result<T> {
    variants
        .iter()
        .copied()
        .find(|&v| as_str(v) == name)
        .ok_or_else(|| {
            let supported: Vec<&str> = variants.iter().map(|&v| as_str(v)).collect();
            Error::Unsupported(format!(
                "unsupported {field} {name:?}: the supported values are {}",
                supported.join(", ")
            ))
        })
}

/// The betas of a diffusion process and the quantities derived from them,
/// all in float32 like diffusers (see the module documentation).
///
/// Timestep t runs from 0 (least noise) to `len() - 1` (most noise), and
/// `alphas_cumprod()[t]` is abar_t = prod_{s <= t} (1 - beta_s).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Builds the schedule of `num_train_timesteps` betas. `beta_start` and
    /// `beta_end` are the first and last beta of the linear, scaled linear
    /// and sigmoid schedules. The cosine schedule ignores them, as diffusers
    /// does.
    ///
    /// Returns [`Error::InvalidInput`] when `num_train_timesteps` is outside
    /// [1, [`MAX_TRAIN_TIMESTEPS`]] or a beta falls outside (0, 1).
    pub fn new(
        schedule: BetaSchedule,
        num_train_timesteps: i64,
        beta_start: f64,
        beta_end: f64,
    ) -> Result<Self> {
        check_num_train_timesteps(num_train_timesteps)?;
        if schedule != BetaSchedule::SquaredcosCapV2 {
            check_beta("beta_start", beta_start)?;
            check_beta("beta_end", beta_end)?;
        }
        let n = num_train_timesteps as usize;
        let betas = match schedule {
            BetaSchedule::Linear => linspace_f32(beta_start, beta_end, n),
            BetaSchedule::ScaledLinear => linspace_f32(beta_start.sqrt(), beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::SquaredcosCapV2 => cosine_betas(n),
            BetaSchedule::Sigmoid => sigmoid_betas(beta_start, beta_end, n),
        };
        Self::from_f32_betas(betas)
    }

    /// Builds the schedule from explicit betas, such as the `trained_betas`
    /// of a diffusers config. They are rounded to float32, as diffusers does.
    ///
    /// Returns [`Error::InvalidInput`] when `betas` is empty, longer than
    /// [`MAX_TRAIN_TIMESTEPS`], or has a value outside (0, 1).
    pub fn from_betas(betas: &[f64]) -> Result<Self> {
        check_num_train_timesteps(betas.len() as i64)?;
        Self::from_f32_betas(betas.iter().map(|&b| b as f32).collect())
    }

    fn from_f32_betas(betas: Vec<f32>) -> Result<Self> {
        for (t, &beta) in betas.iter().enumerate() {
            if !(beta > 0.0 && beta < 1.0) {
                return Err(Error::InvalidInput(format!(
                    "beta at timestep {t} is {beta}, but every beta must lie in (0, 1). \
                     Check beta_start, beta_end or trained_betas."
                )));
            }
        }
        Ok(Self::from_checked_betas(betas))
    }

    fn from_checked_betas(betas: Vec<f32>) -> Self {
        let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
        let alphas_cumprod = cumprod(&alphas);
        NoiseSchedule {
            betas,
            alphas,
            alphas_cumprod,
        }
    }

    /// Rescales the betas so that the last timestep has zero signal-to-noise
    /// ratio (abar_{T-1} = 0) and abar_0 is kept, by algorithm 1 of Lin et
    /// al., 2024, "Common Diffusion Noise Schedules and Sample Steps Are
    /// Flawed". It computes in float32 like diffusers'
    /// `rescale_zero_terminal_snr`, and the last beta becomes exactly 1.
    ///
    /// Returns [`Error::InvalidInput`] for a schedule of a single timestep,
    /// whose first and last timestep coincide.
    pub fn rescale_zero_terminal_snr(&self) -> Result<Self> {
        let n = self.betas.len();
        if n < 2 {
            return Err(Error::InvalidInput(
                "rescaling to zero terminal SNR needs at least 2 training timesteps, got 1"
                    .to_string(),
            ));
        }
        let mut sqrt_abar: Vec<f32> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let first = sqrt_abar[0];
        let last = sqrt_abar[n - 1];
        // Shift so the last value is 0, then scale so the first is unchanged.
        let scale = first / (first - last);
        for value in &mut sqrt_abar {
            *value -= last;
            *value *= scale;
        }
        let abar: Vec<f32> = sqrt_abar.iter().map(|s| s * s).collect();
        let mut betas = Vec::with_capacity(n);
        betas.push(1.0 - abar[0]);
        for t in 1..n {
            betas.push(1.0 - abar[t] / abar[t - 1]);
        }
        Ok(Self::from_checked_betas(betas))
    }

    /// The number of training timesteps T.
    #[allow(clippy::len_without_is_empty)] // A schedule has at least one timestep.
    pub fn len(&self) -> i64 {
        self.betas.len() as i64
    }

    /// Returns the betas beta_t, in float32.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// Returns the alphas 1 - beta_t, in float32.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// Returns the cumulative products abar_t = prod_{s <= t} alpha_s, in
    /// float32 (the precision diffusers stores them in).
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Returns abar_t, or [`Error::InvalidInput`] when `timestep` is outside
    /// [0, T).
    pub fn alpha_cumprod(&self, timestep: i64) -> Result<f32> {
        self.check_timestep(timestep)?;
        Ok(self.alphas_cumprod[timestep as usize])
    }

    /// Returns the signal-to-noise ratio abar_t / (1 - abar_t) of a
    /// timestep, computed in float64 from the stored abar_t.
    pub fn snr(&self, timestep: i64) -> Result<f64> {
        let abar = f64::from(self.alpha_cumprod(timestep)?);
        Ok(abar / (1.0 - abar))
    }

    /// Returns the Min-SNR-gamma loss weight of Hang et al. (2023) at a
    /// timestep: `min(snr, gamma) / snr` for epsilon prediction (1 wherever
    /// `snr <= gamma`), `min(snr, gamma) / (snr + 1)` for v-prediction and
    /// `min(snr, gamma)` for sample prediction. Each is the weight that
    /// turns the prediction's squared error into `min(snr, gamma)` times
    /// the squared error of x_0.
    pub fn min_snr_weight(&self, timestep: i64, prediction: Prediction, gamma: f64) -> Result<f64> {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::InvalidInput(format!(
                "Min-SNR gamma {gamma} is invalid: it must be a positive number"
            )));
        }
        let snr = self.snr(timestep)?;
        Ok(match prediction {
            Prediction::Epsilon => (gamma / snr).min(1.0),
            Prediction::VPrediction => snr.min(gamma) / (snr + 1.0),
            Prediction::Sample => snr.min(gamma),
        })
    }

    pub(crate) fn check_timestep(&self, timestep: i64) -> Result<()> {
        if timestep < 0 || timestep >= self.len() {
            return Err(Error::InvalidInput(format!(
                "timestep {timestep} is outside [0, {}), the training timesteps of the schedule",
                self.len()
            )));
        }
        Ok(())
    }

    /// Samples q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, like
    /// diffusers' `add_noise`.
    ///
    /// `original` and `noise` are floating-point tensors of one shape whose
    /// first dimension is the batch. `timesteps` is an integer tensor of shape
    /// (batch,), or a single timestep for the whole batch. The timesteps are
    /// copied to the CPU to check that they lie in [0, T), and the
    /// coefficients are computed in the kind of `original`.
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        let (sqrt_abar, sqrt_one_minus_abar) =
            self.coefficients("add_noise", original, noise, timesteps)?;
        Ok(original
            .f_mul(&sqrt_abar)?
            .f_add(&noise.f_mul(&sqrt_one_minus_abar)?)?)
    }

    /// Computes the velocity v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0,
    /// like diffusers' `get_velocity`. The arguments are those of
    /// [`NoiseSchedule::add_noise`].
    pub fn velocity(
        &self,
        original: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        let (sqrt_abar, sqrt_one_minus_abar) =
            self.coefficients("velocity", original, noise, timesteps)?;
        Ok(noise
            .f_mul(&sqrt_abar)?
            .f_sub(&original.f_mul(&sqrt_one_minus_abar)?)?)
    }

    /// Returns the training target of a model with the given prediction
    /// type: `noise` for epsilon, `original` for sample (both shallow
    /// clones), or [`NoiseSchedule::velocity`]. The arguments are checked as
    /// in [`NoiseSchedule::add_noise`] for every prediction type.
    pub fn target(
        &self,
        prediction: Prediction,
        original: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor> {
        match prediction {
            Prediction::Epsilon => {
                self.check_arguments("target", original, noise, timesteps)?;
                Ok(noise.shallow_clone())
            }
            Prediction::Sample => {
                self.check_arguments("target", original, noise, timesteps)?;
                Ok(original.shallow_clone())
            }
            Prediction::VPrediction => self.velocity(original, noise, timesteps),
        }
    }

    /// Checks the arguments of `add_noise`, `velocity` and `target`, and
    /// returns the timesteps.
    fn check_arguments(
        &self,
        function: &str,
        original: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Vec<i64>> {
        let shape = original.size();
        if shape.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{function}: original is a scalar, but it needs a batch dimension"
            )));
        }
        check_float(function, "original", original)?;
        check_float(function, "noise", noise)?;
        check_same(function, "noise", noise, "original", original)?;
        self.read_timesteps(function, timesteps, shape[0])
    }

    /// Returns sqrt(abar_t) and sqrt(1 - abar_t) shaped (batch, 1, ..., 1) in
    /// the kind and on the device of `original`. Like diffusers, it converts
    /// abar_t to that kind before taking the square roots.
    fn coefficients(
        &self,
        function: &str,
        original: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let timesteps = self.check_arguments(function, original, noise, timesteps)?;
        let shape = original.size();
        let abar: Vec<f32> = timesteps
            .iter()
            .map(|&t| self.alphas_cumprod[t as usize])
            .collect();
        let mut coefficient_shape = vec![1i64; shape.len()];
        coefficient_shape[0] = abar.len() as i64;
        let abar = Tensor::f_from_slice(&abar)?.f_to_kind(original.kind())?;
        let sqrt_abar = abar.f_sqrt()?;
        let sqrt_one_minus_abar = abar.f_rsub_scalar(1.0)?.f_sqrt()?;
        let device = original.device();
        Ok((
            sqrt_abar
                .f_reshape(&coefficient_shape)?
                .f_to_device(device)?,
            sqrt_one_minus_abar
                .f_reshape(&coefficient_shape)?
                .f_to_device(device)?,
        ))
    }

    /// Reads an integer tensor of timesteps, one per batch element or one for
    /// the whole batch, and checks that each lies in [0, T).
    fn read_timesteps(&self, function: &str, timesteps: &Tensor, batch: i64) -> Result<Vec<i64>> {
        if !matches!(
            timesteps.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(Error::InvalidInput(format!(
                "{function}: timesteps must be an integer tensor, got kind {:?}",
                timesteps.kind()
            )));
        }
        let count = timesteps.numel() as i64;
        if timesteps.dim() > 1 || (count != batch && count != 1) {
            return Err(Error::InvalidInput(format!(
                "{function}: timesteps has shape {:?}, but it must have shape [{batch}] \
                 (one per batch element) or hold a single timestep",
                timesteps.size()
            )));
        }
        let values = timesteps
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Int64)?
            .f_reshape([-1])?;
        let values = Vec::<i64>::try_from(&values)?;
        for &t in &values {
            self.check_timestep(t)
                .map_err(|e| Error::InvalidInput(format!("{function}: {e}")))?;
        }
        Ok(values)
    }
}

fn check_num_train_timesteps(num_train_timesteps: i64) -> Result<()> {
    if !(1..=MAX_TRAIN_TIMESTEPS).contains(&num_train_timesteps) {
        return Err(Error::InvalidInput(format!(
            "num_train_timesteps is {num_train_timesteps}, but it must lie in \
             [1, {MAX_TRAIN_TIMESTEPS}] (DDPM uses 1000)"
        )));
    }
    Ok(())
}

fn check_beta(name: &str, value: f64) -> Result<()> {
    if !(value > 0.0 && value < 1.0) {
        return Err(Error::InvalidInput(format!(
            "{name} is {value}, but it must lie in (0, 1) (DDPM uses 0.0001 to 0.02)"
        )));
    }
    Ok(())
}

/// Checks that `tensor` is a floating-point tensor.
pub(crate) fn check_float(function: &str, name: &str, tensor: &Tensor) -> Result<()> {
    if !matches!(
        tensor.kind(),
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    ) {
        return Err(Error::InvalidInput(format!(
            "{function}: {name} must be a floating-point tensor, got kind {:?}",
            tensor.kind()
        )));
    }
    Ok(())
}

/// Checks that `tensor` has the shape, kind and device of `reference`.
pub(crate) fn check_same(
    function: &str,
    name: &str,
    tensor: &Tensor,
    reference_name: &str,
    reference: &Tensor,
) -> Result<()> {
    if tensor.size() != reference.size() {
        return Err(Error::InvalidInput(format!(
            "{function}: {name} has shape {:?}, but {reference_name} has shape {:?}. \
             They must be equal.",
            tensor.size(),
            reference.size()
        )));
    }
    if tensor.kind() != reference.kind() {
        return Err(Error::InvalidInput(format!(
            "{function}: {name} has kind {:?}, but {reference_name} has kind {:?}. \
             Convert one of them.",
            tensor.kind(),
            reference.kind()
        )));
    }
    if tensor.device() != reference.device() {
        return Err(Error::InvalidInput(format!(
            "{function}: {name} is on {:?}, but {reference_name} is on {:?}. \
             Move them to one device.",
            tensor.device(),
            reference.device()
        )));
    }
    Ok(())
}

/// Returns `n` values evenly spaced from `start` to `end`, computed in
/// float64 and rounded to float32.
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start as f32];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i == n - 1 {
                end as f32
            } else {
                (start + step * i as f64) as f32
            }
        })
        .collect()
}

/// Computes the cosine schedule,
/// beta_t = min(1 - abar((t + 1) / T) / abar(t / T), 0.999).
///
/// t / T is a floating-point division. In integer arithmetic it is 0 for
/// every t < T, which makes every beta but the last 0.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    let total = n as f64;
    (0..n)
        .map(|i| {
            let t1 = i as f64 / total;
            let t2 = (i + 1) as f64 / total;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(COSINE_MAX_BETA) as f32
        })
        .collect()
}

/// Computes sigmoid(linspace(-6, 6, n)) * (end - start) + start. The scale
/// and offset are applied in float32, as torch applies Python floats to a
/// float32 tensor.
fn sigmoid_betas(start: f64, end: f64, n: usize) -> Vec<f32> {
    let scale = (end - start) as f32;
    let offset = start as f32;
    linspace_f32(-6.0, 6.0, n)
        .into_iter()
        .map(|x| {
            let sigmoid = (1.0 / (1.0 + (-f64::from(x)).exp())) as f32;
            sigmoid * scale + offset
        })
        .collect()
}

/// Computes the running product in float64 and rounds each value to float32.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut product = 1.0f64;
    values
        .iter()
        .map(|&v| {
            product *= f64::from(v);
            product as f32
        })
        .collect()
}
