//! Training tasks for [`common::train::train`]: causal language modelling on
//! a token stream, and GPT-1-style fine-tuning of a sequence classifier with
//! the auxiliary language-model loss.

use crate::heads::SequenceClassifier;
use crate::model::Gpt;
use common::checkpoint::write_atomic;
use common::train::{step_rng, Task};
use common::{Error, Result};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::Value;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The tokenizer files written beside the weights at each checkpoint, so
/// that the model directory is complete: `(tokenizer.json,
/// tokenizer_config.json)`.
pub type TokenizerFiles = (Value, Value);

fn write_tokenizer(files: &Option<TokenizerFiles>, dir: &Path) -> Result<()> {
    if let Some((tokenizer, config)) = files {
        for (name, value) in [
            ("tokenizer.json", tokenizer),
            ("tokenizer_config.json", config),
        ] {
            let text =
                serde_json::to_string(value).map_err(|e| Error::InvalidInput(e.to_string()))?;
            write_atomic(&dir.join(name), text.as_bytes())?;
        }
    }
    Ok(())
}

/// Next-token prediction on random windows of a token stream.
pub struct LanguageModelTask {
    pub model: Gpt,
    train: Tensor,
    /// Start offsets of the fixed validation windows.
    validation: Tensor,
    validation_starts: Vec<i64>,
    batch_size: i64,
    context: i64,
    seed: u64,
    tokenizer: Option<TokenizerFiles>,
}

impl LanguageModelTask {
    /// Creates the task. Each step draws `batch_size` windows of `context +
    /// 1` tokens from `train`; validation uses up to `eval_windows` windows
    /// of `validation`, the same at every evaluation.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Gpt,
        train: &[u32],
        validation: &[u32],
        batch_size: i64,
        context: i64,
        eval_windows: usize,
        seed: u64,
        tokenizer: Option<TokenizerFiles>,
    ) -> Result<Self> {
        if batch_size < 1 {
            return Err(Error::InvalidInput(format!(
                "batch size must be at least 1, got {batch_size}"
            )));
        }
        let max_context = model.config().context_length;
        if context < 1 || context > max_context {
            return Err(Error::InvalidInput(format!(
                "the training context must be between 1 and the model's {max_context} positions, got {context}"
            )));
        }
        for (name, tokens) in [("training", train), ("validation", validation)] {
            if (tokens.len() as i64) < context + 1 {
                return Err(Error::InvalidInput(format!(
                    "the {name} split has {} tokens, fewer than one window of {} (context + 1): \
                     use more text or a shorter context",
                    tokens.len(),
                    context + 1
                )));
            }
        }
        let vocab = model.config().vocab_size;
        if let Some(&bad) = train
            .iter()
            .chain(validation)
            .find(|&&t| i64::from(t) >= vocab)
        {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the model's vocabulary of {vocab} tokens"
            )));
        }
        let device = model.device();
        let to_tensor = |tokens: &[u32]| {
            let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
            Tensor::from_slice(&ids).to_device(device)
        };
        // Evenly spaced windows cover the validation split without a seed.
        let last_start = validation.len() as i64 - context - 1;
        let count = (eval_windows.max(1) as i64).min(last_start + 1);
        let validation_starts = (0..count)
            .map(|i| {
                if count == 1 {
                    0
                } else {
                    i * last_start / (count - 1)
                }
            })
            .collect();
        Ok(Self {
            model,
            train: to_tensor(train),
            validation: to_tensor(validation),
            validation_starts,
            batch_size,
            context,
            seed,
            tokenizer,
        })
    }

    /// Returns `(inputs, targets)`, both `(batch, context)`, for windows
    /// starting at `starts`.
    fn windows(&self, tokens: &Tensor, starts: &[i64]) -> Result<(Tensor, Tensor)> {
        let device = tokens.device();
        let starts = Tensor::from_slice(starts).to_device(device).unsqueeze(1);
        let index = starts + Tensor::arange(self.context + 1, (Kind::Int64, device)).unsqueeze(0);
        let rows = tokens
            .f_index_select(0, &index.f_reshape([-1])?)?
            .f_reshape([-1, self.context + 1])?;
        Ok((
            rows.f_narrow(1, 0, self.context)?,
            rows.f_narrow(1, 1, self.context)?,
        ))
    }

    fn loss(&self, inputs: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        let hidden = self.model.hidden_states_t(inputs, None, train)?;
        let logits = self.model.logits(&hidden);
        let vocab = self.model.config().vocab_size;
        Ok(logits
            .f_reshape([-1, vocab])?
            .f_cross_entropy_loss::<Tensor>(
                &targets.f_reshape([-1])?,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )?)
    }
}

impl Task for LanguageModelTask {
    fn train_loss(&mut self, step: u64) -> Result<Tensor> {
        let mut rng = step_rng(self.seed, step);
        let last_start = self.train.size()[0] - self.context - 1;
        let starts: Vec<i64> = (0..self.batch_size)
            .map(|_| rng.random_range(0..=last_start))
            .collect();
        let (inputs, targets) = self.windows(&self.train, &starts)?;
        self.loss(&inputs, &targets, true)
    }

    fn eval_loss(&mut self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut total = 0.0;
        for chunk in self.validation_starts.chunks(self.batch_size as usize) {
            let (inputs, targets) = self.windows(&self.validation, chunk)?;
            total += self.loss(&inputs, &targets, false)?.f_double_value(&[])? * chunk.len() as f64;
        }
        Ok(total / self.validation_starts.len() as f64)
    }

    fn items_per_step(&self) -> u64 {
        (self.batch_size * self.context) as u64
    }

    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        let config = self.model.config();
        crate::save(vs, config, &config.to_hf(), dir)?;
        write_tokenizer(&self.tokenizer, dir)
    }
}

/// A labelled token sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub label: i64,
}

/// Fine-tuning of a [`SequenceClassifier`] with the loss `task + lm_coef *
/// lm` (GPT-1), on examples right-padded with the classifier's padding token.
pub struct ClassifierTask {
    pub model: SequenceClassifier,
    train: Vec<Example>,
    held_out: Vec<Example>,
    batch_size: usize,
    lm_coef: f64,
    seed: u64,
    tokenizer: Option<TokenizerFiles>,
}

impl ClassifierTask {
    /// Creates the task. Sequences longer than the model's context are an
    /// error; the padding token must be set on the classifier.
    pub fn new(
        model: SequenceClassifier,
        train: Vec<Example>,
        held_out: Vec<Example>,
        batch_size: usize,
        lm_coef: f64,
        seed: u64,
        tokenizer: Option<TokenizerFiles>,
    ) -> Result<Self> {
        let pad = model.pad_token_id().ok_or_else(|| {
            Error::InvalidInput(
                "fine-tuning pads batches: the classifier needs a padding token".into(),
            )
        })?;
        if batch_size == 0 {
            return Err(Error::InvalidInput(
                "batch size must be at least 1, got 0".into(),
            ));
        }
        if train.is_empty() || held_out.is_empty() {
            return Err(Error::InvalidInput(format!(
                "fine-tuning needs training and held-out examples, got {} and {}",
                train.len(),
                held_out.len()
            )));
        }
        let context = model.gpt.config().context_length as usize;
        for example in train.iter().chain(&held_out) {
            if example.ids.len() < 2 || example.ids.len() > context {
                return Err(Error::InvalidInput(format!(
                    "an example has {} tokens: each needs 2 to {context} (the model's context)",
                    example.ids.len()
                )));
            }
            if example.label < 0 || example.label >= model.num_labels() {
                return Err(Error::InvalidInput(format!(
                    "label {} is outside the classifier's {} labels",
                    example.label,
                    model.num_labels()
                )));
            }
            if example.ids.iter().any(|&t| i64::from(t) == pad) {
                return Err(Error::InvalidInput(format!(
                    "an example contains the padding token {pad}, which would end it early"
                )));
            }
        }
        Ok(Self {
            model,
            train,
            held_out,
            batch_size,
            lm_coef,
            seed,
            tokenizer,
        })
    }

    fn batch(&self, examples: &[&Example]) -> Result<(Tensor, Tensor)> {
        let pad = self.model.pad_token_id().unwrap_or(0);
        let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * len);
        for e in examples {
            ids.extend(e.ids.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(pad, len - e.ids.len()));
        }
        let labels: Vec<i64> = examples.iter().map(|e| e.label).collect();
        let device = self.model.gpt.device();
        Ok((
            Tensor::from_slice(&ids)
                .f_reshape([examples.len() as i64, len as i64])?
                .to_device(device),
            Tensor::from_slice(&labels).to_device(device),
        ))
    }

    /// Returns the fraction of held-out examples classified correctly.
    pub fn accuracy(&self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut correct = 0i64;
        for chunk in self.held_out.chunks(self.batch_size) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (ids, labels) = self.batch(&refs)?;
            let predicted = self.model.forward(&ids)?.f_argmax(-1, false)?;
            correct += predicted
                .f_eq_tensor(&labels)?
                .f_sum(Kind::Int64)?
                .int64_value(&[]);
        }
        Ok(correct as f64 / self.held_out.len() as f64)
    }
}

impl Task for ClassifierTask {
    fn train_loss(&mut self, step: u64) -> Result<Tensor> {
        let mut rng = step_rng(self.seed, step);
        let chosen: Vec<&Example> = self
            .train
            .choose_multiple(&mut rng, self.batch_size.min(self.train.len()))
            .collect();
        let (ids, labels) = self.batch(&chosen)?;
        Ok(self.model.loss(&ids, &labels, self.lm_coef, true)?.total)
    }

    fn eval_loss(&mut self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut total = 0.0;
        for chunk in self.held_out.chunks(self.batch_size) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (ids, labels) = self.batch(&refs)?;
            let loss = self.model.loss(&ids, &labels, self.lm_coef, false)?;
            total += loss.task.f_double_value(&[])? * chunk.len() as f64;
        }
        Ok(total / self.held_out.len() as f64)
    }

    fn items_per_step(&self) -> u64 {
        self.batch_size as u64
    }

    fn item_name(&self) -> &'static str {
        "ex"
    }

    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()> {
        self.model.save(vs, dir)?;
        write_tokenizer(&self.tokenizer, dir)
    }
}
