//! The discrete VAE of DALL-E (Ramesh et al., 2021, "Zero-Shot Text-to-Image
//! Generation") on libtorch: OpenAI's encoder and decoder, the logit-Laplace
//! likelihood, and training with the Gumbel-Softmax relaxation.
//!
//! The encoder turns a 256 x 256 image into a 32 x 32 grid of logits over
//! 8192 codes. The decoder turns a grid of code distributions back into a
//! location and a log-scale per pixel. Training maximises the evidence lower
//! bound
//!
//! ```text
//! ELBO = E_q[ln p(x | z)] - beta * KL(q(z | x) || uniform)
//! ```
//!
//! with `q` relaxed by Gumbel-Softmax and `p` the logit-Laplace density of
//! the mapped pixels (see [`pixels`]).
//!
//! A model directory contains `config.json`, `encoder.safetensors` and
//! `decoder.safetensors`, with the tensor names of OpenAI's `encoder.pkl`
//! and `decoder.pkl` (`blocks.group_1.block_1.res_path.conv_1.w`, ...).
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! let dir = std::path::Path::new("dall-e-dvae");
//! let encoder = dvae::load_encoder(dir, tch::Device::Cpu)?;
//! let decoder = dvae::load_decoder(dir, tch::Device::Cpu)?;
//! let image = tch::Tensor::rand([1, 3, 256, 256], (tch::Kind::Float, tch::Device::Cpu));
//! let codes = tch::no_grad(|| encoder.codes(&dvae::map_pixels(&image)))?; // (1, 32, 32)
//! let again = tch::no_grad(|| decoder.decode_codes(&codes))?; // (1, 3, 256, 256)
//! # Ok(()) }
//! ```

mod config;
mod model;
pub mod pixels;
pub mod relax;
pub mod train;

pub use config::Config;
pub use model::{one_hot_codes, Decoder, Encoder};
pub use pixels::{logit_laplace_log_prob, map_pixels, reconstruct, unmap_pixels};

use common::checkpoint::{self, LoadOptions};
use common::{Error, Result};
use std::path::Path;
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

/// The configuration file of a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The encoder's weights in a model directory.
pub const ENCODER_FILE: &str = "encoder.safetensors";
/// The decoder's weights in a model directory.
pub const DECODER_FILE: &str = "decoder.safetensors";

/// The encoder and the decoder, built under `encoder.` and `decoder.` of one
/// variable store for training.
#[derive(Debug)]
pub struct Dvae {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

/// The terms of the negative ELBO of a batch, each in nats per image
/// (averaged over the batch).
#[derive(Debug)]
pub struct Elbo {
    /// The logit-Laplace negative log-likelihood `-ln p(x | z)` of the
    /// mapped pixels, summed over pixels and channels.
    pub reconstruction: Tensor,
    /// `KL(q(z | x) || uniform)`, summed over the grid.
    pub kl: Tensor,
    /// The decoder's output, for reconstructions.
    pub stats: Tensor,
}

impl Elbo {
    /// Returns the loss to minimise, `reconstruction + beta * kl`.
    pub fn loss(&self, beta: f64) -> Tensor {
        &self.reconstruction + &self.kl * beta
    }
}

/// Form of the codes that [`Dvae::elbo`] feeds to the decoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Codes {
    /// Gumbel-Softmax samples at this temperature.
    Relaxed { temperature: f64 },
    /// One-hot Gumbel samples with straight-through gradients.
    StraightThrough { temperature: f64 },
    /// The one-hot argmax of the logits, as at inference.
    Argmax,
}

impl Dvae {
    /// Creates both halves under `p / "encoder"` and `p / "decoder"`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(&(p / "encoder"), config)?,
            decoder: Decoder::new(&(p / "decoder"), config)?,
        })
    }

    /// Returns the terms of the negative ELBO of `pixels` in `[0, 1]`,
    /// `(batch, channels, height, width)`.
    pub fn elbo(&self, pixels: &Tensor, codes: Codes) -> Result<Elbo> {
        Ok(elbo_of(&self.encoder, &self.decoder, pixels, codes)?.0)
    }
}

/// Computes the negative ELBO of `pixels` and returns it with the most likely
/// code at each position.
fn elbo_of(
    encoder: &Encoder,
    decoder: &Decoder,
    pixels: &Tensor,
    codes: Codes,
) -> Result<(Elbo, Tensor)> {
    let (input, output) = (
        encoder.config().input_channels,
        decoder.config().output_channels,
    );
    if input != output {
        return Err(Error::InvalidInput(format!(
            "invalid model: the encoder reads {input} channels but the decoder writes \
             {output}, and the ELBO needs the same channels on both sides"
        )));
    }

    let x = map_pixels(pixels);
    let logits = encoder.forward(&x)?;
    let argmax = logits.argmax(1, false);
    let z = match codes {
        Codes::Relaxed { temperature } => relax::gumbel_softmax(&logits, temperature, false, 1),
        Codes::StraightThrough { temperature } => {
            relax::gumbel_softmax(&logits, temperature, true, 1)
        }
        Codes::Argmax => one_hot_codes(&argmax, encoder.config().vocab_size)?,
    };
    let stats = decoder.forward(&z)?;

    let (mu, log_b) = pixels::split_stats(&stats);
    let batch = pixels.size()[0] as f64;
    let nll = -logit_laplace_log_prob(&x, &mu, &log_b).sum(Kind::Float) / batch;
    let kl = relax::kl_to_uniform(&logits, 1).sum(Kind::Float) / batch;
    let elbo = Elbo {
        reconstruction: nll,
        kl,
        stats,
    };
    Ok((elbo, argmax))
}

/// Loads the encoder of a model directory (`config.json` and
/// `encoder.safetensors`).
pub fn load_encoder(dir: &Path, device: Device) -> Result<Encoder> {
    let config = read_config(dir)?;
    let path = dir.join(ENCODER_FILE);
    check_size(&path, config.encoder_parameters())?;
    let mut vs = VarStore::new(device);
    let encoder = Encoder::new(&vs.root(), &config)?;
    load_file(&mut vs, &path)?;
    Ok(encoder)
}

/// Loads the decoder of a model directory (`config.json` and
/// `decoder.safetensors`).
pub fn load_decoder(dir: &Path, device: Device) -> Result<Decoder> {
    let config = read_config(dir)?;
    let path = dir.join(DECODER_FILE);
    check_size(&path, config.decoder_parameters())?;
    let mut vs = VarStore::new(device);
    let decoder = Decoder::new(&vs.root(), &config)?;
    load_file(&mut vs, &path)?;
    Ok(decoder)
}

/// Description of a dVAE directory, appended to errors about missing files.
const DIRECTORY_HINT: &str = "a dVAE directory contains config.json, encoder.safetensors and \
     decoder.safetensors (cargo xtask train dvae writes them, and cargo xtask convert torch \
     converts OpenAI's pickles to them)";

/// Reads the `config.json` of a model directory.
fn read_config(dir: &Path) -> Result<Config> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: {DIRECTORY_HINT}",
            path.display()
        )));
    }
    Config::from_file(&path)
}

/// Loads one half's file, naming the file in errors about its tensors.
fn load_file(vs: &mut VarStore, path: &Path) -> Result<()> {
    checkpoint::load_into(vs, &[path.to_path_buf()], &LoadOptions::default())
        .map_err(|e| Error::format(path, "dVAE checkpoint", e.to_string()))
}

/// Rejects a missing checkpoint, or one whose parameter count differs from the
/// configuration's, before anything is allocated for it.
fn check_size(path: &Path, expected: u64) -> Result<()> {
    if !path.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} not found: {DIRECTORY_HINT}",
            path.display()
        )));
    }
    let found = checkpoint::count_elements(&[path.to_path_buf()])?;
    if found != expected {
        return Err(Error::format(
            path,
            "dVAE checkpoint",
            format!(
                "it contains {found} parameters but {CONFIG_FILE} describes {expected}, \
                 so the weights belong to another configuration"
            ),
        ));
    }
    Ok(())
}

/// Writes a model directory from a variable store that contains a [`Dvae`]
/// at its root: `config.json`, and each half under OpenAI's tensor names.
pub fn save(vs: &VarStore, config: &Config, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (prefix, file) in [("encoder.", ENCODER_FILE), ("decoder.", DECODER_FILE)] {
        let mut tensors: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter_map(|(name, t)| Some((name.strip_prefix(prefix)?.to_string(), t)))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint::save(&dir.join(file), &tensors, None)?;
    }
    config.save(&dir.join(CONFIG_FILE))
}
