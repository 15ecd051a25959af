//! Layers, checkpoint loading and tools shared by the model crates.

pub mod checkpoint;
pub mod device;
pub mod error;
pub mod gguf;
pub mod nn;

pub use error::{Error, Result};
