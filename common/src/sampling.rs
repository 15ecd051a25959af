//! Next-token sampling: greedy, temperature, top-k and top-p (nucleus), seeded.

use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

/// The settings that choose the next token from the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 selects the most likely token (greedy decoding).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities add up
    /// to at least `p` (1 keeps all).
    pub top_p: f64,
    /// Seed of the random number generator.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A seeded sampler; the same seed and logits give the same tokens.
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// Checks the configuration and seeds the generator.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        if !(config.temperature >= 0.0 && config.temperature.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "temperature {} is invalid: use 0 for greedy decoding or a positive number",
                config.temperature
            )));
        }
        if !(config.top_p > 0.0 && config.top_p <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "top-p {} is invalid: use a value in (0, 1]",
                config.top_p
            )));
        }
        let rng = StdRng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// Picks a token from the logits of one position, shape `(vocab,)`.
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let logits: Vec<f32> = Vec::try_from(logits.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
        self.sample_slice(&logits)
    }

    /// Picks a token from logits given as a slice.
    pub fn sample_slice(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidInput(
                "cannot sample from empty logits".into(),
            ));
        }
        if self.config.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if candidates.is_empty() {
            return Err(Error::InvalidInput("all logits are NaN".into()));
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.config.top_k > 0 {
            candidates.truncate(self.config.top_k);
        }

        // Softmax over the candidates at the temperature, in f64.
        let max = candidates[0].1 as f64;
        let weights: Vec<f64> = candidates
            .iter()
            .map(|&(_, l)| ((l as f64 - max) / self.config.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut probs: Vec<f64> = weights.iter().map(|w| w / total).collect();

        if self.config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.config.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let kept: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= kept);
        }

        let mut u: f64 = self.rng.random();
        for (i, p) in probs.iter().enumerate() {
            if u < *p {
                return Ok(candidates[i].0);
            }
            u -= p;
        }
        Ok(candidates[probs.len() - 1].0)
    }
}

/// Returns the index of the largest value, the first one on ties as in
/// `torch.argmax`.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> Sampler {
        Sampler::new(SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed,
        })
        .unwrap()
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = sampler(0.0, 0, 1.0, 0);
        assert_eq!(s.sample_slice(&[0.1, 2.0, 2.0, -1.0]).unwrap(), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = sampler(1.5, 1, 1.0, 7);
        for _ in 0..20 {
            assert_eq!(s.sample_slice(&[0.0, 0.5, 3.0, 2.9]).unwrap(), 2);
        }
    }

    #[test]
    fn top_p_keeps_nucleus() {
        // Probabilities at temperature 1: about 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut s = sampler(1.0, 0, 0.8, 3);
        for _ in 0..200 {
            assert!(s.sample_slice(&logits).unwrap() < 2);
        }
    }

    #[test]
    fn frequencies_follow_softmax() {
        let logits = [0.0f32, (3.0f32).ln()];
        let mut s = sampler(1.0, 0, 1.0, 11);
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| s.sample_slice(&logits).unwrap() == 1)
            .count();
        let freq = ones as f64 / n as f64;
        assert!((freq - 0.75).abs() < 0.02, "frequency {freq}");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut a = sampler(0.9, 20, 0.95, 42);
        let mut b = sampler(0.9, 20, 0.95, 42);
        for _ in 0..50 {
            assert_eq!(
                a.sample_slice(&logits).unwrap(),
                b.sample_slice(&logits).unwrap()
            );
        }
    }

    #[test]
    fn invalid_settings_are_errors() {
        let bad_temperature = SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad_temperature).is_err());
        let bad_top_p = SamplingConfig {
            top_p: 0.0,
            ..Default::default()
        };
        let err = Sampler::new(bad_top_p).unwrap_err().to_string();
        assert!(err.contains("top-p 0"), "{err}");
    }
}
