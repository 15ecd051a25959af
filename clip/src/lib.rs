//! CLIP (Radford et al., 2021, "Learning Transferable Visual Models From
//! Natural Language Supervision") on libtorch: a text transformer and a
//! vision transformer trained to agree on which caption belongs to which
//! image, and zero-shot classification with prompts.
//!
//! Model directories are those of the Hugging Face `clip` checkpoints
//! (`config.json` and `model.safetensors` with transformers' `CLIPModel`
//! names); OpenAI's TorchScript releases convert to that layout with
//! [`openai::convert_torchscript`]. Text goes through the CLIP byte-pair
//! [`tokenizer`], images through the reference [`preprocess`]ing.
//!
//! ```no_run
//! # fn main() -> common::Result<()> {
//! use std::path::Path;
//! let clip = clip::Clip::load(Path::new("clip-vit-base-patch32"), tch::Device::Cpu)?;
//! let context = clip.config().text_config.max_position_embeddings as usize; // 77
//! let tokenizer = clip::tokenizer::Tokenizer::from_dir(Path::new("clip-vit-base-patch32"), context)?;
//! let preprocess = clip::preprocess::Preprocess::clip(clip.config().vision_config.image_size);
//! let pixels = preprocess.file(Path::new("cat.jpg"))?.unsqueeze(0);
//! let classifier = clip::ZeroShot::new(&clip, &tokenizer, &["cat", "dog"], &["a photo of a {}."])?;
//! let probabilities = classifier.probabilities(&clip, &pixels)?; // (1, 2)
//! # Ok(()) }
//! ```

mod config;
mod model;
pub mod openai;
pub mod preprocess;
pub mod tokenizer;
pub mod train;
mod zero_shot;

pub use config::{Config, TextConfig, VisionConfig};
pub use model::{
    contrastive_loss, normalize, ClipModel, TextTransformer, VisionTransformer, MAX_LOGIT_SCALE,
};
pub use zero_shot::{ZeroShot, PLACEHOLDER};

use common::checkpoint::{self, LoadOptions};
use common::{Error, Result};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// Checkpoint tensors that the model recomputes: the position index buffers
/// that older transformers versions saved.
const IGNORED_SUFFIXES: &[&str] = &[".position_ids"];

/// Writes a model directory: `config.json` and `model.safetensors` with
/// every variable of `vs` under its name, creating `dir` if needed. Each file
/// is written atomically.
pub fn save(vs: &VarStore, config: &Config, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    checkpoint::save(&dir.join(checkpoint::SINGLE_FILE), &tensors, Some(metadata))?;
    config.save(&dir.join("config.json"))
}

/// A CLIP model with the variable store that owns its weights.
#[derive(Debug)]
pub struct Clip {
    config: Config,
    model: ClipModel,
    vs: VarStore,
}

impl std::ops::Deref for Clip {
    type Target = ClipModel;

    fn deref(&self) -> &ClipModel {
        &self.model
    }
}

impl Clip {
    /// Builds a randomly initialised model on `device`.
    pub fn new(config: Config, device: Device) -> Result<Self> {
        config.validate()?;
        common::device::check_parameters_fit(config.num_parameters(), "the CLIP configuration")?;
        let vs = VarStore::new(device);
        let model = ClipModel::new(&vs.root(), &config)?;
        Ok(Self { config, model, vs })
    }

    /// Loads a model directory: `config.json` and `model.safetensors` (or
    /// its shards) with transformers' `CLIPModel` names, as f32 on `device`.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} not found: a CLIP model directory needs config.json and model.safetensors \
                 (`cargo xtask convert clip-torchscript` makes one from OpenAI's releases)",
                config_path.display()
            )));
        }
        let config = Config::from_file(&config_path)?;
        let files = checkpoint::model_files(dir)?;
        let stored = checkpoint::count_elements(&files)?;
        let needed = config.num_parameters();
        // A config.json of a larger model fails here instead of allocating.
        if i128::from(needed) > i128::from(stored) {
            return Err(Error::InvalidInput(format!(
                "{}: the configuration needs {needed} weights but the checkpoint stores \
                 {stored}: check that config.json belongs to these weights",
                config_path.display()
            )));
        }
        let mut clip = Self::new(config, device)?;
        let options = LoadOptions {
            ignore_suffixes: IGNORED_SUFFIXES,
            ..Default::default()
        };
        checkpoint::load_into(&mut clip.vs, &files, &options)?;
        Ok(clip)
    }

    /// Writes `config.json` and `model.safetensors` into `dir`, creating it
    /// if needed; each file is written atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let metadata = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        checkpoint::save(&dir.join(checkpoint::SINGLE_FILE), &tensors, Some(metadata))?;
        self.config.save(&dir.join("config.json"))
    }

    /// Returns the model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Returns the layers, for access to each encoder.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Returns the variable store that owns the weights.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Returns the variable store, mutable, for training and loading.
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Computes the symmetric contrastive loss of a batch of matching images
    /// and texts, where image `i` and text `i` form pair `i`.
    pub fn loss(&self, pixels: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let size = (pixels.size(), ids.size());
        if size.0.first() != size.1.first() {
            return Err(Error::InvalidInput(format!(
                "the contrastive loss needs as many texts as images: pixel values {:?}, \
                 token ids {:?}",
                size.0, size.1
            )));
        }
        let (per_image, _) = self.logits(pixels, ids)?;
        contrastive_loss(&per_image)
    }
}
