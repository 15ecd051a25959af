//! Normalisation layers.

use tch::{nn, Kind, Tensor};

/// Root-mean-square layer normalisation (Zhang and Sennrich, 2019):
/// `x / sqrt(mean(x^2) + eps) * weight`, with no mean subtraction and no bias.
///
/// The statistics are computed in f32 whatever the input dtype, and the
/// result is cast back before the weight is applied, as the Hugging Face
/// Llama reference does.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Creates the layer with its weight at `path.weight`, initialised to ones.
    pub fn new(path: nn::Path, size: i64, eps: f64) -> Self {
        let weight = path.ones("weight", &[size]);
        Self { weight, eps }
    }
}

/// Layer normalisation (Ba et al., 2016) over the last dimension, with
/// `path.weight` initialised to ones and `path.bias` to zeros.
pub fn layer_norm(path: nn::Path, size: i64, eps: f64) -> nn::LayerNorm {
    let config = nn::LayerNormConfig {
        eps,
        ..Default::default()
    };
    nn::layer_norm(path, vec![size], config)
}

impl nn::Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let xs32 = xs.to_kind(Kind::Float);
        let variance = xs32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = xs32 * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Module;

    #[test]
    fn rms_norm_matches_formula() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let norm = RmsNorm::new(vs.root() / "norm", 8, 1e-5);
        tch::manual_seed(0);
        let xs = Tensor::randn([3, 8], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let ys = norm.forward(&xs);
        for row in 0..3 {
            let x: Vec<f32> = Vec::try_from(xs.get(row)).unwrap();
            let y: Vec<f32> = Vec::try_from(ys.get(row)).unwrap();
            let rms = (x.iter().map(|v| v * v).sum::<f32>() / 8.0 + 1e-5).sqrt();
            for (a, b) in x.iter().zip(&y) {
                assert!((a / rms - b).abs() < 1e-5, "{a} / {rms} != {b}");
            }
        }
    }
}
