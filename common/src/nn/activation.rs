//! Activation functions.

use crate::{Error, Result};
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

/// An element-wise activation named as in Hugging Face configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The exact GELU `x * Phi(x)` (`"gelu"`).
    Gelu,
    /// The tanh approximation of GELU used by GPT-1, GPT-2 and BERT:
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (`"gelu_new"`,
    /// `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// `x * sigmoid(1.702 x)`, the GELU approximation of the OpenAI CLIP
    /// models (`"quick_gelu"`).
    QuickGelu,
    /// `max(x, 0)` (`"relu"`).
    Relu,
    /// `x * sigmoid(x)` (`"silu"`, `"swish"`).
    Silu,
}

impl Activation {
    /// Parses a Hugging Face `activation_function` / `hidden_act` name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => {
                return Err(Error::Unsupported(format!(
                    "activation {other:?} is not supported: use gelu, gelu_new, \
                     gelu_pytorch_tanh, quick_gelu, relu or silu"
                )))
            }
        })
    }

    /// Returns the Hugging Face name of the activation.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
            Self::QuickGelu => "quick_gelu",
            Self::Relu => "relu",
            Self::Silu => "silu",
        }
    }

    /// Applies the activation element-wise.
    pub fn forward(self, xs: &Tensor) -> Tensor {
        match self {
            Self::Gelu => xs.gelu("none"),
            Self::GeluTanh => xs.gelu("tanh"),
            Self::QuickGelu => xs * (xs * 1.702).sigmoid(),
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn grid() -> Tensor {
        Tensor::linspace(-6.0, 6.0, 101, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn silu_matches_definition() {
        let xs = grid();
        let expected = &xs * xs.sigmoid();
        assert!(silu(&xs).allclose(&expected, 1e-12, 1e-12, false));
    }

    #[test]
    fn gelu_tanh_matches_formula() {
        let xs = grid();
        let inner =
            (&xs + xs.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
        let expected = &xs * 0.5 * (inner.tanh() + 1.0);
        let ys = Activation::GeluTanh.forward(&xs);
        assert!(ys.allclose(&expected, 1e-12, 1e-12, false));
    }

    #[test]
    fn exact_gelu_uses_erf() {
        let xs = grid();
        let expected = &xs * 0.5 * ((&xs / 2f64.sqrt()).erf() + 1.0);
        assert!(Activation::Gelu
            .forward(&xs)
            .allclose(&expected, 1e-12, 1e-12, false));
    }

    #[test]
    fn names_round_trip() {
        for a in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::QuickGelu,
            Activation::Relu,
            Activation::Silu,
        ] {
            assert_eq!(Activation::from_name(a.name()).unwrap(), a);
        }
        let err = Activation::from_name("tanhshrink").unwrap_err();
        assert!(err.to_string().contains("tanhshrink"), "{err}");
    }
}
