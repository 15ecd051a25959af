//! Contrastive training on MNIST's handwritten digits with captions written
//! from templates, and zero-shot evaluation with templates the model never
//! saw.
//!
//! Each training image is paired with a caption from [`TRAIN_TEMPLATES`]
//! that names its digit as a word or a numeral ("a handwritten 7", "a photo
//! of the digit seven."). A batch of `n` pairs is an `n`-way classification
//! in both directions, CLIP's symmetric loss. Captions of the same digit
//! recur within a batch; as in CLIP, they count as negatives.
//!
//! Evaluation classifies the held-out digits zero-shot: each digit's
//! embedding is the prompt ensemble of [`EVAL_TEMPLATES`], which share no
//! template with training.

use crate::model::{contrastive_loss, ClipModel};
use crate::preprocess::{CLIP_MEAN, CLIP_STD};
use crate::tokenizer::Tokenizer;
use crate::zero_shot::ZeroShot;
use crate::Config;
use common::mnist::Digits;
use common::train::{step_rng, Task};
use common::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The names of the digits 0 to 9, the labels of zero-shot evaluation.
pub const DIGIT_NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Caption templates of training; `{}` stands for the digit, written as a
/// word or as a numeral with equal chance.
pub const TRAIN_TEMPLATES: &[&str] = &[
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}.",
    "a picture of a {}.",
    "a drawing of the number {}.",
    "{}",
    "a scan of a handwritten {}.",
    "an image of the digit {}.",
];

/// Templates of zero-shot evaluation, none of them used in training.
pub const EVAL_TEMPLATES: &[&str] = &[
    "a black and white photo of the number {}.",
    "a blurry image of a {}.",
    "a digit {}, written by hand.",
];

/// Settings of [`ClipTask`] beyond the optimizer's.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Image-caption pairs per batch.
    pub batch_size: i64,
    /// Training images move by up to this many pixels in each direction, a
    /// random translation per image; 0 keeps them in place.
    pub max_shift: i64,
    /// Seed of the batch sampling.
    pub seed: u64,
}

/// Turns MNIST images `(n, 28, 28)` in `[0, 1]` into the model's input:
/// three equal channels normalised with CLIP's mean and standard deviation,
/// as [`crate::preprocess::Preprocess`] makes of a grayscale image file.
pub fn digits_to_pixels(images: &Tensor) -> Tensor {
    let device = images.device();
    let mean = Tensor::from_slice(&CLIP_MEAN)
        .to_kind(Kind::Float)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&CLIP_STD)
        .to_kind(Kind::Float)
        .view([1, 3, 1, 1]);
    (images.unsqueeze(1).to_kind(Kind::Float) - mean.to_device(device)) / std.to_device(device)
}

/// Moves each image of `pixels` (batch, channels, size, size) by a random
/// offset of up to `max_shift` pixels in each direction, filling the border
/// with the background (the normalised value of black).
fn random_shift(pixels: &Tensor, max_shift: i64, rng: &mut impl Rng) -> Tensor {
    if max_shift == 0 {
        return pixels.shallow_clone();
    }
    let size = pixels.size();
    let side = size[2];
    let background = digits_to_pixels(&Tensor::zeros([1, 1, 1], (Kind::Float, pixels.device())));
    let padded = background
        .expand(
            [size[0], size[1], side + 2 * max_shift, side + 2 * max_shift],
            false,
        )
        .copy();
    padded
        .narrow(2, max_shift, side)
        .narrow(3, max_shift, side)
        .copy_(pixels);
    let shifted: Vec<Tensor> = (0..size[0])
        .map(|i| {
            let (dy, dx) = (
                rng.random_range(0..=2 * max_shift),
                rng.random_range(0..=2 * max_shift),
            );
            padded.get(i).narrow(1, dy, side).narrow(2, dx, side)
        })
        .collect();
    Tensor::stack(&shifted, 0)
}

/// Encodes every caption of the training templates, and returns the ids
/// with the digit of each: `(ids (captions, context), digits (captions,))`.
fn training_captions(tokenizer: &Tokenizer) -> Result<(Tensor, Vec<i64>)> {
    let mut captions = Vec::new();
    let mut digits = Vec::new();
    for (digit, name) in DIGIT_NAMES.iter().enumerate() {
        for template in TRAIN_TEMPLATES {
            for form in [name.to_string(), digit.to_string()] {
                captions.push(template.replace(crate::zero_shot::PLACEHOLDER, &form));
                digits.push(digit as i64);
            }
        }
    }
    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    let encoded = tokenizer.encode_batch(&texts)?;
    if let Some(i) = encoded.truncated.iter().position(|&t| t) {
        return Err(Error::InvalidInput(format!(
            "the caption {:?} does not fit the context of {} tokens",
            captions[i],
            tokenizer.context_length()
        )));
    }
    Ok((encoded.ids, digits))
}

/// Contrastive training of a [`ClipModel`] on MNIST digits.
pub struct ClipTask {
    model: ClipModel,
    config: Config,
    tokenizer: Tokenizer,
    train: Digits,
    eval: Digits,
    /// For each digit, the rows of `caption_ids` that name it.
    captions_of: Vec<Vec<i64>>,
    caption_ids: Tensor,
    settings: Settings,
    device: Device,
    last_accuracy: Option<f64>,
}

impl ClipTask {
    /// Prepares training of `model` (built with `config`) on `train`,
    /// evaluated on `eval`.
    pub fn new(
        model: ClipModel,
        config: Config,
        tokenizer: Tokenizer,
        train: Digits,
        eval: Digits,
        settings: Settings,
    ) -> Result<Self> {
        let size = config.vision_config.image_size;
        if size != common::mnist::SIDE || config.vision_config.num_channels != 3 {
            return Err(Error::InvalidInput(format!(
                "MNIST training needs a model for 3-channel images of {0} x {0} pixels; this \
                 one reads {1}-channel images of {size} x {size}",
                common::mnist::SIDE,
                config.vision_config.num_channels
            )));
        }
        if !(0..size / 2).contains(&settings.max_shift) {
            return Err(Error::InvalidInput(format!(
                "a shift of {} pixels is invalid: use 0 to {}",
                settings.max_shift,
                size / 2 - 1
            )));
        }
        if settings.batch_size < 2 || settings.batch_size > train.len() {
            return Err(Error::InvalidInput(format!(
                "batch size {} is invalid: contrastive training needs 2 to {} pairs",
                settings.batch_size,
                train.len()
            )));
        }
        if tokenizer.context_length() as i64 > config.text_config.max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "the tokenizer's context of {} tokens exceeds the model's {} positions",
                tokenizer.context_length(),
                config.text_config.max_position_embeddings
            )));
        }
        let device = model.device();
        let (caption_ids, digits) = training_captions(&tokenizer)?;
        let mut captions_of = vec![Vec::new(); DIGIT_NAMES.len()];
        for (row, &digit) in digits.iter().enumerate() {
            captions_of[digit as usize].push(row as i64);
        }
        Ok(Self {
            model,
            config,
            tokenizer,
            train,
            eval,
            captions_of,
            caption_ids: caption_ids.to_device(device),
            settings,
            device,
            last_accuracy: None,
        })
    }

    /// Returns the model being trained.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Returns the zero-shot accuracy of the last evaluation.
    pub fn last_accuracy(&self) -> Option<f64> {
        self.last_accuracy
    }

    /// Returns the pixel values and caption ids of images `indices` of
    /// `digits`, each with a caption drawn by `rng` among those of its digit.
    fn pairs(&self, digits: &Digits, indices: &[i64], rng: &mut impl Rng) -> (Tensor, Tensor) {
        let index = Tensor::from_slice(indices);
        let labels =
            Vec::<i64>::try_from(digits.labels.index_select(0, &index)).expect("labels are Int64");
        let rows: Vec<i64> = labels
            .iter()
            .map(|&digit| {
                let options = &self.captions_of[digit as usize];
                options[rng.random_range(0..options.len())]
            })
            .collect();
        let pixels =
            digits_to_pixels(&digits.images.index_select(0, &index)).to_device(self.device);
        let ids = self
            .caption_ids
            .index_select(0, &Tensor::from_slice(&rows).to_device(self.device));
        (pixels, ids)
    }

    /// Zero-shot accuracy on the held-out digits with [`EVAL_TEMPLATES`].
    pub fn zero_shot_accuracy(&self) -> Result<f64> {
        let classifier = ZeroShot::new(&self.model, &self.tokenizer, &DIGIT_NAMES, EVAL_TEMPLATES)?;
        let mut correct = 0i64;
        let n = self.eval.len();
        let chunk = 500;
        for start in (0..n).step_by(chunk) {
            let len = (n - start).min(chunk as i64);
            let pixels =
                digits_to_pixels(&self.eval.images.narrow(0, start, len)).to_device(self.device);
            let predicted = Tensor::from_slice(&classifier.predict(&self.model, &pixels)?);
            let labels = self.eval.labels.narrow(0, start, len);
            correct += predicted
                .eq_tensor(&labels)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        Ok(correct as f64 / n as f64)
    }
}

impl Task for ClipTask {
    fn train_loss(&mut self, step: u64) -> Result<Tensor> {
        let mut rng = step_rng(self.settings.seed, step);
        let n = self.train.len();
        let indices: Vec<i64> = (0..self.settings.batch_size)
            .map(|_| rng.random_range(0..n))
            .collect();
        let (pixels, ids) = self.pairs(&self.train, &indices, &mut rng);
        let pixels = random_shift(&pixels, self.settings.max_shift, &mut rng);
        let (per_image, _) = self.model.logits(&pixels, &ids)?;
        contrastive_loss(&per_image)
    }

    /// Returns the contrastive loss on held-out digits in fixed batches with
    /// captions from the training templates, and measures the zero-shot
    /// accuracy.
    fn eval_loss(&mut self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut rng = step_rng(self.settings.seed ^ 0x5EED, 0);
        let (n, batch) = (
            self.eval.len(),
            self.settings.batch_size.min(self.eval.len()),
        );
        // The held-out set lists the digits in order: shuffle it, the same
        // way at every evaluation, so that each batch mixes digits as
        // training batches do.
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut total = 0.0;
        let mut batches = 0;
        for indices in order.chunks_exact(batch as usize) {
            let (pixels, ids) = self.pairs(&self.eval, indices, &mut rng);
            let (per_image, _) = self.model.logits(&pixels, &ids)?;
            total += contrastive_loss(&per_image)?.double_value(&[]);
            batches += 1;
        }
        self.last_accuracy = Some(self.zero_shot_accuracy()?);
        Ok(total / batches as f64)
    }

    fn items_per_step(&self) -> u64 {
        self.settings.batch_size as u64
    }

    fn item_name(&self) -> &'static str {
        "img"
    }

    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        crate::save(vs, &self.config, dir)?;
        self.tokenizer.save(dir)
    }

    fn eval_summary(&self) -> Option<String> {
        self.last_accuracy.map(|accuracy| {
            format!(
                "zero-shot accuracy {:.1}% (held-out digits and templates)",
                100.0 * accuracy
            )
        })
    }
}
