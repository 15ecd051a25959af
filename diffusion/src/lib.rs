//! Denoising diffusion probabilistic models (Ho et al., 2020, "Denoising
//! Diffusion Probabilistic Models") on libtorch, with the U-Net of the
//! `diffusers` library (`UNet2DModel`) and its DDPM and DDIM schedulers.
//!
//! Training corrupts data `x_0` with Gaussian noise at a random timestep,
//! `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, and teaches the U-Net to
//! predict `eps` (epsilon prediction). Sampling starts from pure noise and
//! applies the scheduler's reverse steps. A U-Net with class embeddings
//! trains with a null label as well ([`train`]) and samples with
//! classifier-free guidance ([`pipeline::Guidance`]).
//!
//! A U-Net directory is a diffusers model directory: `config.json` and
//! `diffusion_pytorch_model.safetensors` with diffusers' tensor names.
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! let unet = diffusion::load_unet(std::path::Path::new("ddpm-cifar10-32/unet"), tch::Device::Cpu)?;
//! let noisy = tch::Tensor::randn([1, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
//! let timestep = tch::Tensor::from(999i64);
//! let noise = tch::no_grad(|| unet.forward(&noisy, &timestep, false))?;
//! # Ok(()) }
//! ```

mod config;
pub mod digits;
pub mod pipeline;
pub mod schedule;
pub mod scheduler;
pub mod train;
mod unet;

pub use config::{
    Config, DownBlockType, MidBlockType, SampleSize, TimeEmbedding, TimeScaleShift, UpBlockType,
};
pub use unet::{timestep_embedding, UNet2DModel};

use common::checkpoint::{self, LoadOptions};
use common::{Error, Result};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// The configuration file of a U-Net directory.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of a U-Net directory, as diffusers names them.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// The attention names of checkpoints saved before diffusers 0.14, which
/// diffusers still renames at load: `(current, deprecated)` suffixes.
const DEPRECATED_ATTENTION_NAMES: [(&str, &str); 4] = [
    (".to_q.", ".query."),
    (".to_k.", ".key."),
    (".to_v.", ".value."),
    (".to_out.0.", ".proj_attn."),
];

/// Returns the weights file of a U-Net directory: diffusers'
/// `diffusion_pytorch_model.safetensors`, or `model.safetensors`.
fn weights_file(dir: &Path) -> Result<PathBuf> {
    for name in [WEIGHTS_FILE, checkpoint::SINGLE_FILE] {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Error::InvalidInput(format!(
        "no weights in {}: a U-Net directory contains {CONFIG_FILE} and {WEIGHTS_FILE} \
         (diffusers' save_pretrained writes them, and so does cargo xtask train ddpm)",
        dir.display()
    )))
}

/// Loads a U-Net from a diffusers model directory, or from the `unet`
/// folder of a pipeline directory.
pub fn load_unet(dir: &Path, device: Device) -> Result<UNet2DModel> {
    let dir = if !dir.join(CONFIG_FILE).is_file() && dir.join("unet").is_dir() {
        dir.join("unet")
    } else {
        dir.to_path_buf()
    };
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: a U-Net directory contains {CONFIG_FILE} and {WEIGHTS_FILE}",
            config_path.display()
        )));
    }
    let config = Config::from_file(&config_path)?;
    let weights = weights_file(&dir)?;
    let files = [weights.clone()];
    let stored = checkpoint::count_elements(&files)?;
    let needed = config.num_parameters();
    // A config.json of another model fails here, before anything is allocated.
    if i128::from(stored) != i128::from(needed) {
        return Err(Error::format(
            &weights,
            "UNet2DModel checkpoint",
            format!(
                "it contains {stored} parameters but {} describes {needed}, so the \
                 weights belong to another configuration",
                config_path.display()
            ),
        ));
    }
    common::device::check_parameters_fit(needed, "the U-Net")?;

    let mut vs = VarStore::new(device);
    let unet = UNet2DModel::new(&vs.root(), &config)?;
    let aliases: Vec<(String, String)> = vs
        .variables()
        .into_keys()
        .filter_map(|name| {
            DEPRECATED_ATTENTION_NAMES
                .iter()
                .find(|(current, _)| name.contains(current))
                .map(|(current, old)| (name.clone(), name.replacen(current, old, 1)))
        })
        .collect();
    let aliases: Vec<(&str, &str)> = aliases
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let options = LoadOptions {
        aliases: &aliases,
        ..Default::default()
    };
    checkpoint::load_into(&mut vs, &files, &options)
        .map_err(|e| Error::format(&weights, "UNet2DModel checkpoint", e.to_string()))?;
    Ok(unet)
}

/// Writes a diffusers model directory, `config.json` and
/// `diffusion_pytorch_model.safetensors`, from the variables of `vs` under
/// `prefix` (empty when the U-Net is at the root). Each file is written
/// atomically.
pub fn save_unet(vs: &VarStore, prefix: &str, config: &Config, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, t)| Some((name.strip_prefix(prefix)?.to_string(), t)))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    checkpoint::save(&dir.join(WEIGHTS_FILE), &tensors, Some(metadata))?;
    config.save(&dir.join(CONFIG_FILE))
}
