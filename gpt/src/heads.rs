//! GPT-1's fine-tuning heads (Radford et al., 2018, section 3.2): a linear
//! classifier on the hidden state of one token, trained with the auxiliary
//! language-model loss `L = L_task + lambda * L_lm`, which the paper found to
//! help generalisation and convergence (lambda = 0.5).

use crate::config::Config;
use crate::model::Gpt;
use common::nn::linear_normal;
use common::{Error, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// The targets that the cross-entropy losses skip.
pub const IGNORE_INDEX: i64 = -100;

/// The weight of the auxiliary language-model loss in GPT-1.
pub const GPT1_LM_COEF: f64 = 0.5;

/// The losses of one fine-tuning batch.
#[derive(Debug)]
pub struct FineTuneLoss {
    /// `task + lm_coef * lm`, the loss to minimise.
    pub total: Tensor,
    /// The classification cross-entropy.
    pub task: Tensor,
    /// The next-token cross-entropy of the inputs.
    pub lm: Tensor,
}

/// Sequence classification from the hidden state of each sequence's last
/// token that is not padding (`OpenAIGPTForSequenceClassification`,
/// `GPT2ForSequenceClassification`): `score` maps it to one logit per label.
#[derive(Debug)]
pub struct SequenceClassifier {
    pub gpt: Gpt,
    score: nn::Linear,
    num_labels: i64,
    pad_token_id: Option<i64>,
}

impl SequenceClassifier {
    /// Builds the decoder under `path / "transformer"` and the classifier at
    /// `path / "score"`.
    pub fn new(
        path: &nn::Path,
        config: &Config,
        num_labels: i64,
        pad_token_id: Option<i64>,
    ) -> Result<Self> {
        let gpt = Gpt::new(path, config)?;
        Self::with_decoder(path, gpt, num_labels, pad_token_id)
    }

    /// Adds a new classifier at `path / "score"` to a decoder, for example
    /// one loaded from a language model's checkpoint.
    pub fn with_decoder(
        path: &nn::Path,
        gpt: Gpt,
        num_labels: i64,
        pad_token_id: Option<i64>,
    ) -> Result<Self> {
        if num_labels < 1 {
            return Err(Error::InvalidInput(format!(
                "a classifier needs at least one label, got {num_labels}"
            )));
        }
        if let Some(pad) = pad_token_id {
            if pad < 0 || pad >= gpt.config().vocab_size {
                return Err(Error::InvalidInput(format!(
                    "pad token id {pad} is outside the vocabulary of {} tokens",
                    gpt.config().vocab_size
                )));
            }
        }
        let score = linear_normal(
            path / "score",
            gpt.config().hidden_size,
            num_labels,
            false,
            0.02,
        );
        Ok(Self {
            gpt,
            score,
            num_labels,
            pad_token_id,
        })
    }

    /// Returns the number of labels.
    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    /// Returns the padding token id, if sequences are padded.
    pub fn pad_token_id(&self) -> Option<i64> {
        self.pad_token_id
    }

    /// Returns the index of each row's last token that is not padding.
    fn last_tokens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.size2()?;
        let positions = Tensor::arange(seq, (Kind::Int64, input_ids.device()));
        Ok(match self.pad_token_id {
            Some(pad) => {
                let real = input_ids.f_ne(pad)?.to_kind(Kind::Int64);
                (positions * real).f_argmax(-1, false)?
            }
            None => Tensor::full([batch], seq - 1, (Kind::Int64, input_ids.device())),
        })
    }

    /// Returns `(classification logits (batch, num_labels), language-model
    /// logits (batch, seq, vocab))`; `train` enables dropout.
    pub fn forward_t(&self, input_ids: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let hidden = self.gpt.hidden_states_t(input_ids, None, train)?;
        let last = self.last_tokens(input_ids)?;
        let batch = Tensor::arange(hidden.size()[0], (Kind::Int64, hidden.device()));
        let pooled = hidden.f_index(&[Some(batch), Some(last)])?;
        Ok((self.score.forward(&pooled), self.gpt.logits(&hidden)))
    }

    /// Returns the classification logits, `(batch, num_labels)`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.forward_t(input_ids, false)?.0)
    }

    /// Returns the fine-tuning loss for `labels` of shape `(batch,)`; padding
    /// positions do not count in the language-model loss.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        labels: &Tensor,
        lm_coef: f64,
        train: bool,
    ) -> Result<FineTuneLoss> {
        check_labels(labels, input_ids.size()[0], self.num_labels)?;
        let (logits, lm_logits) = self.forward_t(input_ids, train)?;
        let task = cross_entropy(&logits, labels)?;
        let targets = match self.pad_token_id {
            Some(pad) => input_ids.f_masked_fill(&input_ids.f_eq(pad)?, IGNORE_INDEX)?,
            None => input_ids.shallow_clone(),
        };
        let lm = Gpt::lm_loss(&lm_logits, &targets, IGNORE_INDEX)?;
        Ok(FineTuneLoss {
            total: &task + &lm * lm_coef,
            task,
            lm,
        })
    }
}

/// Multiple choice (`OpenAIGPTDoubleHeadsModel`). Each choice is a sequence,
/// and `multiple_choice_head.summary` maps the hidden state of its
/// classification token to one score. The scores of the choices are the
/// logits of a softmax over choices.
#[derive(Debug)]
pub struct MultipleChoice {
    pub gpt: Gpt,
    summary: nn::Linear,
}

impl MultipleChoice {
    /// Builds the decoder under `path / "transformer"` and the head at
    /// `path / "multiple_choice_head" / "summary"`.
    pub fn new(path: &nn::Path, config: &Config) -> Result<Self> {
        let gpt = Gpt::new(path, config)?;
        Ok(Self::with_decoder(path, gpt))
    }

    /// Adds a new head to a decoder.
    pub fn with_decoder(path: &nn::Path, gpt: Gpt) -> Self {
        let summary = linear_normal(
            path / "multiple_choice_head" / "summary",
            gpt.config().hidden_size,
            1,
            true,
            0.02,
        );
        Self { gpt, summary }
    }

    /// Returns `(choice logits (batch, choices), language-model logits
    /// (batch, choices, seq, vocab))`.
    ///
    /// # Shapes
    /// - `input_ids`: `(batch, choices, seq)`
    /// - `mc_token_ids`: `(batch, choices)`, the position of the
    ///   classification token in each choice
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        mc_token_ids: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let size = input_ids.size();
        if size.len() != 3 || mc_token_ids.size() != size[..2] {
            return Err(Error::InvalidInput(format!(
                "multiple choice expects input_ids (batch, choices, seq) and mc_token_ids \
                 (batch, choices); got {size:?} and {:?}",
                mc_token_ids.size()
            )));
        }
        let (batch, choices, seq) = (size[0], size[1], size[2]);
        if let Some(bad) = outside(mc_token_ids, seq)? {
            return Err(Error::InvalidInput(format!(
                "classification token position {bad} is outside the {seq} positions of a choice"
            )));
        }
        let flat = input_ids.f_reshape([batch * choices, seq])?;
        let hidden = self.gpt.hidden_states_t(&flat, None, train)?;
        let rows = Tensor::arange(batch * choices, (Kind::Int64, hidden.device()));
        let cls = mc_token_ids.f_reshape([-1])?.f_to_kind(Kind::Int64)?;
        let pooled = hidden.f_index(&[Some(rows), Some(cls)])?;
        let mc_logits = self.summary.forward(&pooled).f_reshape([batch, choices])?;
        let vocab = self.gpt.config().vocab_size;
        let lm_logits = self
            .gpt
            .logits(&hidden)
            .f_reshape([batch, choices, seq, vocab])?;
        Ok((mc_logits, lm_logits))
    }

    /// Returns the fine-tuning loss for the correct choices `labels`, shape
    /// `(batch,)`.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        mc_token_ids: &Tensor,
        labels: &Tensor,
        lm_coef: f64,
        train: bool,
    ) -> Result<FineTuneLoss> {
        let size = input_ids.size();
        let (mc_logits, lm_logits) = self.forward_t(input_ids, mc_token_ids, train)?;
        check_labels(labels, size[0], size[1])?;
        let task = cross_entropy(&mc_logits, labels)?;
        let lm = Gpt::lm_loss(&lm_logits, input_ids, IGNORE_INDEX)?;
        Ok(FineTuneLoss {
            total: &task + &lm * lm_coef,
            task,
            lm,
        })
    }
}

/// Returns a value of `values` outside `0..end`, if there is one.
fn outside(values: &Tensor, end: i64) -> Result<Option<i64>> {
    let min = values.f_min()?.int64_value(&[]);
    let max = values.f_max()?.int64_value(&[]);
    Ok(if min < 0 {
        Some(min)
    } else if max >= end {
        Some(max)
    } else {
        None
    })
}

fn check_labels(labels: &Tensor, batch: i64, classes: i64) -> Result<()> {
    if labels.size() != [batch] {
        return Err(Error::InvalidInput(format!(
            "labels must have shape ({batch},), got {:?}",
            labels.size()
        )));
    }
    if let Some(bad) = outside(labels, classes)? {
        return Err(Error::InvalidInput(format!(
            "label {bad} is outside the {classes} classes"
        )));
    }
    Ok(())
}

fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(
        &labels.f_to_kind(Kind::Int64)?,
        None,
        tch::Reduction::Mean,
        IGNORE_INDEX,
        0.0,
    )?)
}
