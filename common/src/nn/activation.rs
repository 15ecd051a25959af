//! Activation functions.

use tch::Tensor;

/// SiLU, also called Swish with beta 1: `x * sigmoid(x)`.
pub fn silu(xs: &Tensor) -> Tensor {
    xs.silu()
}

/// Computes the SwiGLU gate of Shazeer (2020), "GLU Variants Improve Transformer":
/// `silu(gate) * up`, where `gate` and `up` are two projections of the input.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Tensor {
    gate.silu() * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn silu_matches_definition() {
        let xs = Tensor::linspace(-6.0, 6.0, 101, (Kind::Double, tch::Device::Cpu));
        let expected = &xs * xs.sigmoid();
        assert!(silu(&xs).allclose(&expected, 1e-12, 1e-12, false));
    }
}
