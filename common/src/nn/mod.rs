//! Layers shared by the model crates.
//!
//! Layers take a [`tch::nn::Path`] built segment by segment from the
//! checkpoint key, so that a variable's name equals the tensor name of the
//! reference checkpoint (`model.layers.0.input_layernorm.weight`).

mod activation;
mod attention;
mod norm;
mod rotary;

pub use activation::{silu, swiglu, Activation};
pub use attention::{scaled_dot_product_attention, KvCache, Mask};
pub use norm::{layer_norm, RmsNorm};
pub use rotary::{RotaryAngles, RotaryEmbedding};

use tch::nn;

/// Builds a linear layer `y = x W^T (+ b)` with the PyTorch weight layout
/// `[out_features, in_features]` under `path` (`path.weight`, `path.bias`).
pub fn linear(path: nn::Path, in_features: i64, out_features: i64, bias: bool) -> nn::Linear {
    let config = nn::LinearConfig {
        bias,
        ..Default::default()
    };
    nn::linear(path, in_features, out_features, config)
}

/// Builds a linear layer like [`linear`] with weights drawn from
/// `normal(0, std)` and zero bias, the initialisation of GPT-2 and its
/// descendants.
pub fn linear_normal(
    path: nn::Path,
    in_features: i64,
    out_features: i64,
    bias: bool,
    std: f64,
) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(path, in_features, out_features, config)
}
