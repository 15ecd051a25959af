//! Layers shared by the model crates.
//!
//! Layers take a [`tch::nn::Path`] built segment by segment from the
//! checkpoint key, so that a variable's name equals the tensor name of the
//! reference checkpoint (`model.layers.0.input_layernorm.weight`).

mod activation;
mod attention;
mod norm;
mod rotary;

pub use activation::{silu, swiglu};
pub use attention::{scaled_dot_product_attention, KvCache, Mask};
pub use norm::RmsNorm;
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
