//! The autoregressive decoding loop shared by the decoder models.

use crate::sampling::Sampler;
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// A causal language model that decodes with a KV cache.
pub trait CausalLm {
    /// The per-sequence decoding state (the KV cache of every layer).
    type Cache;

    /// Returns an empty cache for one sequence.
    fn new_cache(&self) -> Self::Cache;

    /// Runs `tokens` of shape `(1, seq)` after the positions already in
    /// `cache`, appends them to the cache, and returns the logits of the last
    /// position, shape `(vocab,)`.
    fn last_logits(&self, tokens: &Tensor, cache: &mut Self::Cache) -> Result<Tensor>;

    /// Returns the number of positions the model can attend to.
    fn context_length(&self) -> i64;

    /// Returns the number of tokens in the vocabulary.
    fn vocab_size(&self) -> i64;

    /// Returns the device the weights live on.
    fn device(&self) -> Device;
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (end of turn or of text) was generated; it is included.
    Stop(u32),
    /// `max_new_tokens` tokens were generated.
    Length,
    /// The context of the model is full.
    Context,
    /// The caller's callback asked to stop.
    Stopped,
}

/// The tokens generated and how long each phase took.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The generated token ids, without the prompt.
    pub tokens: Vec<u32>,
    /// Time to run the prompt and pick the first token.
    pub prefill: Duration,
    /// Time to generate every token after the first.
    pub decode: Duration,
    pub finish: FinishReason,
}

impl Generation {
    /// Prompt tokens processed per second during prefill; None when no
    /// token was generated, so the prompt never ran.
    pub fn prefill_tokens_per_second(&self, prompt_len: usize) -> Option<f64> {
        if self.tokens.is_empty() {
            return None;
        }
        Some(prompt_len as f64 / self.prefill.as_secs_f64().max(f64::MIN_POSITIVE))
    }

    /// Tokens generated per second after the first one; None with fewer
    /// than two tokens.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let steps = self.tokens.len().checked_sub(1).filter(|&s| s > 0)?;
        Some(steps as f64 / self.decode.as_secs_f64().max(f64::MIN_POSITIVE))
    }
}

/// Checks token ids of shape `(batch, seq)` before a forward pass that
/// follows `cached` positions: both sizes positive, every id in
/// `0..vocab_size`, and `cached + seq` within `context` positions. Without
/// the check, libtorch would abort on an out-of-range embedding index.
pub fn check_input_ids(
    input_ids: &Tensor,
    vocab_size: i64,
    cached: i64,
    context: i64,
) -> Result<()> {
    let size = input_ids.size();
    if size.len() != 2 || size[0] == 0 || size[1] == 0 {
        return Err(Error::InvalidInput(format!(
            "input_ids must have shape (batch, seq) with batch, seq > 0, got {size:?}"
        )));
    }
    let (min, max) = (
        input_ids.f_min()?.int64_value(&[]),
        input_ids.f_max()?.int64_value(&[]),
    );
    if min < 0 || max >= vocab_size {
        let bad = if min < 0 { min } else { max };
        return Err(Error::InvalidInput(format!(
            "token id {bad} is outside the vocabulary of {vocab_size} tokens"
        )));
    }
    if cached + size[1] > context {
        return Err(Error::InvalidInput(format!(
            "{cached} cached and {} new positions exceed the context of {context} positions",
            size[1]
        )));
    }
    Ok(())
}

/// Checks a prompt against the model before any computation.
pub fn check_prompt<M: CausalLm>(model: &M, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::InvalidInput(
            "the prompt is empty: give at least one token (a non-empty --prompt)".into(),
        ));
    }
    let context = model.context_length();
    if prompt.len() as i64 > context {
        return Err(Error::InvalidInput(format!(
            "the prompt has {} tokens but the model's context is {context} tokens: shorten the prompt",
            prompt.len()
        )));
    }
    let vocab = model.vocab_size();
    if let Some(bad) = prompt.iter().find(|&&t| t as i64 >= vocab) {
        return Err(Error::InvalidInput(format!(
            "token id {bad} is outside the vocabulary of {vocab} tokens"
        )));
    }
    Ok(())
}

/// Generates up to `max_new_tokens` tokens after `prompt`, calling `on_token`
/// with each one as soon as it is chosen. Generation ends early when
/// `on_token` returns `ControlFlow::Break`, for example when the reader of
/// streamed output has gone.
pub fn generate<M: CausalLm>(
    model: &M,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    stop_tokens: &[u32],
    mut on_token: impl FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<Generation> {
    check_prompt(model, prompt)?;
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let to_input = |ids: &[u32]| -> Result<Tensor> {
        let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Ok(Tensor::from_slice(&ids)
            .f_to_device(device)?
            .f_unsqueeze(0)?
            .f_to_kind(Kind::Int64)?)
    };

    let start = Instant::now();
    let mut cache = model.new_cache();
    let mut tokens = Vec::new();
    let mut position = prompt.len() as i64;
    let mut input = to_input(prompt)?;
    let mut prefill = None;
    let finish = loop {
        if tokens.len() >= max_new_tokens {
            break FinishReason::Length;
        }
        if position > model.context_length() {
            break FinishReason::Context;
        }
        let logits = model.last_logits(&input, &mut cache)?;
        let token = sampler.sample(&logits)?;
        prefill.get_or_insert_with(|| start.elapsed());
        tokens.push(token);
        if on_token(token)?.is_break() {
            break FinishReason::Stopped;
        }
        if stop_tokens.contains(&token) {
            break FinishReason::Stop(token);
        }
        input = to_input(&[token])?;
        position += 1;
    };
    let prefill = prefill.unwrap_or_else(|| start.elapsed());
    Ok(Generation {
        tokens,
        prefill,
        decode: start.elapsed().saturating_sub(prefill),
        finish,
    })
}
