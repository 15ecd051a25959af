//! Rotary position embeddings (Su et al., 2021, "RoFormer").
//!
//! The rotation pairs dimension `i` with dimension `i + head_dim / 2` (the
//! "half" layout of the Hugging Face checkpoints), not adjacent dimensions.
//! GGUF files store Q and K projections permuted for the adjacent layout, and
//! the GGUF converter undoes that permutation.

use crate::Result;
use tch::{Device, Kind, Tensor};

/// Precomputed cosines and sines of the rotary angles for every position.
#[derive(Debug)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    /// Tabulates the angles `p * theta^(-2i / head_dim)` in f32 for the
    /// positions `0..max_positions`.
    pub fn new(head_dim: i64, max_positions: i64, theta: f64, device: Device) -> Self {
        let options = (Kind::Float, device);
        let exponents = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / head_dim as f64;
        let inv_freq = Tensor::from(theta as f32)
            .to_device(device)
            .pow(&exponents)
            .reciprocal();
        let positions = Tensor::arange(max_positions, options);
        let freqs = positions.outer(&inv_freq);
        let angles = Tensor::cat(&[&freqs, &freqs], -1);
        Self {
            cos: angles.cos(),
            sin: angles.sin(),
        }
    }

    /// The number of tabulated positions.
    pub fn max_positions(&self) -> i64 {
        self.cos.size()[0]
    }

    /// Rotates `xs` of shape `(batch, heads, seq, head_dim)` whose first
    /// position is `offset`.
    pub fn apply(&self, xs: &Tensor, offset: i64) -> Result<Tensor> {
        let seq_len = xs.size()[2];
        let cos = self.cos.f_narrow(0, offset, seq_len)?.to_kind(xs.kind());
        let sin = self.sin.f_narrow(0, offset, seq_len)?.to_kind(xs.kind());
        Ok(xs * cos + rotate_half(xs) * sin)
    }
}

/// Maps `[x1, x2]` to `[-x2, x1]` on the last dimension.
fn rotate_half(xs: &Tensor) -> Tensor {
    let half = xs.size()[xs.dim() - 1] / 2;
    let x1 = xs.narrow(-1, 0, half);
    let x2 = xs.narrow(-1, half, half);
    Tensor::cat(&[x2.neg(), x1], -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_depends_only_on_distance() {
        let rope = RotaryEmbedding::new(8, 64, 10_000.0, Device::Cpu);
        tch::manual_seed(1);
        let q = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        let score = |pq: i64, pk: i64| {
            let q = rope.apply(&q, pq).unwrap();
            let k = rope.apply(&k, pk).unwrap();
            (q * k).sum(Kind::Float).double_value(&[])
        };
        for (a, b) in [(3, 1), (10, 8), (40, 38)] {
            assert!((score(a, b) - score(3, 1)).abs() < 1e-4);
        }
        assert!((score(5, 1) - score(3, 1)).abs() > 1e-3);
    }

    #[test]
    fn position_zero_is_identity() {
        let rope = RotaryEmbedding::new(4, 4, 10_000.0, Device::Cpu);
        let xs = Tensor::randn([2, 3, 1, 4], (Kind::Float, Device::Cpu));
        assert!(rope.apply(&xs, 0).unwrap().allclose(&xs, 1e-6, 1e-6, false));
    }

    #[test]
    fn offset_past_table_is_error() {
        let rope = RotaryEmbedding::new(4, 4, 10_000.0, Device::Cpu);
        let xs = Tensor::zeros([1, 1, 2, 4], (Kind::Float, Device::Cpu));
        assert!(rope.apply(&xs, 3).is_err());
    }
}
