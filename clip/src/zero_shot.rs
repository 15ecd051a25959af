//! Zero-shot classification: each label becomes captions through prompt
//! templates, and an image's class is the label whose captions it matches
//! best.

use crate::model::{normalize, ClipModel};
use crate::tokenizer::Tokenizer;
use common::{Error, Result};
use tch::{Kind, Tensor};

/// The placeholder that a prompt template replaces with a label.
pub const PLACEHOLDER: &str = "{}";

/// A zero-shot classifier: one embedding per label, the normalised mean of
/// the normalised embeddings of its captions (the prompt ensembling of the
/// CLIP paper).
#[derive(Debug)]
pub struct ZeroShot {
    labels: Vec<String>,
    /// (labels, projection_dim), rows of unit norm.
    class_embeddings: Tensor,
}

impl ZeroShot {
    /// Embeds the captions `template.replace("{}", label)` of every label
    /// and template; every `{}` of a template takes the label.
    ///
    /// Errors: an empty label list, an empty or blank label, a repeated
    /// label, no templates, a template without `{}`, or a caption longer
    /// than the context (it would lose its end).
    pub fn new(
        clip: &ClipModel,
        tokenizer: &Tokenizer,
        labels: &[&str],
        templates: &[&str],
    ) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::InvalidInput(
                "no labels: give at least one label to classify into".into(),
            ));
        }
        for (i, label) in labels.iter().enumerate() {
            if label.trim().is_empty() {
                return Err(Error::InvalidInput(format!(
                    "label {} of {} is empty: give each label some text",
                    i + 1,
                    labels.len()
                )));
            }
            if labels[..i].contains(label) {
                return Err(Error::InvalidInput(format!(
                    "the label {label:?} appears twice"
                )));
            }
        }
        if templates.is_empty() {
            return Err(Error::InvalidInput(
                "no prompt templates: give at least one, such as \"a photo of a {}.\"".into(),
            ));
        }
        if let Some(bad) = templates.iter().find(|t| !t.contains(PLACEHOLDER)) {
            return Err(Error::InvalidInput(format!(
                "the prompt template {bad:?} has no {PLACEHOLDER} where the label goes"
            )));
        }
        let _guard = tch::no_grad_guard();
        let mut rows = Vec::with_capacity(labels.len());
        for label in labels {
            let captions: Vec<String> = templates
                .iter()
                .map(|t| t.replace(PLACEHOLDER, label))
                .collect();
            let captions: Vec<&str> = captions.iter().map(String::as_str).collect();
            let encoded = tokenizer.encode_batch(&captions)?;
            if let Some(i) = encoded.truncated.iter().position(|&t| t) {
                // A caption of a very long label is shown by its start only.
                let mut caption: String = captions[i].chars().take(80).collect();
                if caption.len() < captions[i].len() {
                    caption.push_str(" ...");
                }
                return Err(Error::InvalidInput(format!(
                    "the caption {caption:?} is longer than the context of {} tokens: use a \
                     shorter label or template",
                    tokenizer.context_length()
                )));
            }
            let ids = encoded.ids.to_device(clip.device());
            let embeddings = normalize(&clip.encode_text(&ids)?);
            rows.push(normalize(&embeddings.mean_dim(0, true, Kind::Float)));
        }
        Ok(Self {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            class_embeddings: Tensor::cat(&rows, 0),
        })
    }

    /// Returns the labels, in the order of the probability columns.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Returns the probabilities (batch, labels) of preprocessed images
    /// (batch, channels, size, size): a softmax over the scaled cosine
    /// similarities with the label embeddings.
    pub fn probabilities(&self, clip: &ClipModel, pixels: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let images = normalize(&clip.encode_image(pixels)?);
        let logits = images.matmul(&self.class_embeddings.tr()) * clip.temperature_scale();
        Ok(logits.softmax(-1, Kind::Float))
    }

    /// Returns the index of the most probable label of each image.
    pub fn predict(&self, clip: &ClipModel, pixels: &Tensor) -> Result<Vec<i64>> {
        let probabilities = self.probabilities(clip, pixels)?;
        Ok(Vec::<i64>::try_from(probabilities.argmax(-1, false)).expect("argmax is Int64"))
    }
}
