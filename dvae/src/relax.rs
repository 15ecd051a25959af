//! The Gumbel-Softmax relaxation of the code distribution, the KL divergence
//! to the uniform prior, and the schedules of the temperature and of the KL
//! weight.
//!
//! A sample of a categorical distribution with logits `l` is
//! `argmax(l + g)`, with `g` standard Gumbel noise. Replacing the argmax by
//! `softmax((l + g) / tau)` (Jang et al., 2017; Maddison et al., 2017) gives
//! a differentiable sample that tends to the one-hot sample as the
//! temperature `tau` falls to 0.

use tch::{Kind, Tensor};

/// Draws standard Gumbel noise `-ln(-ln u)` with `u` uniform, shaped like
/// `like`.
pub fn gumbel_noise(like: &Tensor) -> Tensor {
    gumbel_from_uniform(&like.rand_like())
}

/// Maps uniform values `u` in `[0, 1]` to Gumbel noise `-ln(-ln u)`. Both
/// logarithms take arguments bounded away from 0, so that even `u = 0` and
/// `u = 1` give finite noise.
pub fn gumbel_from_uniform(u: &Tensor) -> Tensor {
    let tiny = f64::from(f32::MIN_POSITIVE);
    let u = u.clamp(tiny, 1.0 - f64::from(f32::EPSILON));
    -(-u.log()).clamp_min(tiny).log()
}

/// Draws relaxed samples of the categorical distributions with logits
/// `logits` along `dim`, at temperature `tau`.
///
/// With `hard`, the forward value is the one-hot sample and the gradient is
/// that of the relaxed sample (the straight-through estimator).
pub fn gumbel_softmax(logits: &Tensor, tau: f64, hard: bool, dim: i64) -> Tensor {
    let soft = ((logits + gumbel_noise(logits)) / tau).softmax(dim, Kind::Float);
    if !hard {
        return soft;
    }
    let index = soft.argmax(dim, true);
    let one_hot = soft.zeros_like().scatter_value(dim, &index, 1.0);
    one_hot - soft.detach() + soft
}

/// Returns the KL divergence from the code distribution `softmax(logits)`
/// along `dim` to the uniform distribution over its `K` codes,
/// `sum_k q_k (ln q_k + ln K)`, at each position, with `dim` removed.
pub fn kl_to_uniform(logits: &Tensor, dim: i64) -> Tensor {
    let codes = logits.size()[dim as usize] as f64;
    let log_q = logits.log_softmax(dim, Kind::Float);
    (log_q.exp() * (&log_q + codes.ln())).sum_dim_intlist(dim, false, Kind::Float)
}

/// A value that moves from `start` to `end` over the first `steps` steps
/// along a half cosine, then stays at `end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub start: f64,
    pub end: f64,
    pub steps: u64,
}

impl Schedule {
    /// Returns the value at step `step` (from 0).
    pub fn at(&self, step: u64) -> f64 {
        if step >= self.steps {
            return self.end;
        }
        let progress = step as f64 / self.steps as f64;
        let weight = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.end + weight * (self.start - self.end)
    }
}

/// Returns the temperature schedule from 1 to 1/16 over `steps` steps, the
/// range that DALL-E used (Ramesh et al., 2021).
pub fn temperature_schedule(steps: u64) -> Schedule {
    Schedule {
        start: 1.0,
        end: 1.0 / 16.0,
        steps,
    }
}

/// Returns a warm-up of the KL weight from 0 to `beta` over `steps` steps.
pub fn kl_weight_schedule(beta: f64, steps: u64) -> Schedule {
    Schedule {
        start: 0.0,
        end: beta,
        steps,
    }
}
