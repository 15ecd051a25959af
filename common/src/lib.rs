//! Layers, checkpoint loading and tools shared by the model crates.

pub mod checkpoint;
pub mod device;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod image;
pub mod mnist;
pub mod nn;
pub mod paths;
pub mod progress;
pub mod sampling;
pub mod tokenizer;
pub mod torch_file;
pub mod train;

pub use error::{Error, Result};
