//! Rotary position embeddings (Su et al., 2021, "RoFormer").
//!
//! The rotation pairs dimension `i` with dimension `i + head_dim / 2` (the
//! "half" layout of the Hugging Face checkpoints), not adjacent dimensions.
//! GGUF files store Q and K projections permuted for the adjacent layout, and
//! the GGUF converter undoes that permutation.

use crate::Result;
use tch::{Device, Kind, Tensor};

/// The inverse frequencies of the rotary angles of one head.
///
/// The cosines and sines are computed for the positions of each forward
/// pass, so memory does not grow with the context length.
#[derive(Debug)]
pub struct RotaryEmbedding {
    inv_freq: Tensor,
}

/// Cosines and sines of the rotary angles for a run of positions, each of
/// shape `(seq, head_dim)`.
#[derive(Debug)]
pub struct RotaryAngles {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    /// Computes `theta^(-2i / head_dim)` for `i < head_dim / 2`, in f32.
    pub fn new(head_dim: i64, theta: f64, device: Device) -> Result<Self> {
        let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Int64, device))?
            .f_to_kind(Kind::Float)?
            / head_dim as f64;
        let inv_freq = Tensor::from(theta as f32)
            .f_to_device(device)?
            .f_pow(&exponents)?
            .f_reciprocal()?;
        Ok(Self { inv_freq })
    }

    /// Returns the angles `p * inv_freq` of positions `offset..offset + seq`
    /// in f32, converted to `kind`.
    pub fn angles(&self, offset: i64, seq: i64, kind: Kind) -> Result<RotaryAngles> {
        let device = self.inv_freq.device();
        let positions = Tensor::f_arange_start(offset, offset + seq, (Kind::Float, device))?;
        let freqs = positions.f_outer(&self.inv_freq)?;
        let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        Ok(RotaryAngles {
            cos: angles.f_cos()?.f_to_kind(kind)?,
            sin: angles.f_sin()?.f_to_kind(kind)?,
        })
    }
}

impl RotaryAngles {
    /// Rotates `xs` of shape `(batch, heads, seq, head_dim)`.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_mul(&self.cos)? + rotate_half(xs)?.f_mul(&self.sin)?)
    }
}

/// Maps `[x1, x2]` to `[-x2, x1]` on the last dimension.
fn rotate_half(xs: &Tensor) -> Result<Tensor> {
    let half = xs.size()[xs.dim() - 1] / 2;
    let x1 = xs.f_narrow(-1, 0, half)?;
    let x2 = xs.f_narrow(-1, half, half)?;
    Ok(Tensor::f_cat(&[x2.f_neg()?, x1], -1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate(rope: &RotaryEmbedding, xs: &Tensor, position: i64) -> Tensor {
        let angles = rope.angles(position, xs.size()[2], xs.kind()).unwrap();
        angles.apply(xs).unwrap()
    }

    #[test]
    fn score_depends_only_on_distance() {
        let rope = RotaryEmbedding::new(8, 10_000.0, Device::Cpu).unwrap();
        tch::manual_seed(1);
        let q = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu));
        let score = |pq: i64, pk: i64| {
            let product = rotate(&rope, &q, pq) * rotate(&rope, &k, pk);
            product.sum(Kind::Float).double_value(&[])
        };
        for (a, b) in [(3, 1), (10, 8), (40, 38)] {
            assert!((score(a, b) - score(3, 1)).abs() < 1e-4);
        }
        assert!((score(5, 1) - score(3, 1)).abs() > 1e-3);
    }

    #[test]
    fn position_zero_is_identity() {
        let rope = RotaryEmbedding::new(4, 10_000.0, Device::Cpu).unwrap();
        let xs = Tensor::randn([2, 3, 1, 4], (Kind::Float, Device::Cpu));
        assert!(rotate(&rope, &xs, 0).allclose(&xs, 1e-6, 1e-6, false));
    }

    #[test]
    fn run_angles_equal_single_angles() {
        let rope = RotaryEmbedding::new(8, 500.0, Device::Cpu).unwrap();
        let xs = Tensor::randn([1, 2, 5, 8], (Kind::Float, Device::Cpu));
        let whole = rotate(&rope, &xs, 7);
        for t in 0..5 {
            let one = rotate(&rope, &xs.narrow(2, t, 1), 7 + t);
            assert!(one.allclose(&whole.narrow(2, t, 1), 1e-6, 1e-6, false));
        }
    }
}
