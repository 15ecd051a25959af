//! Tokenizers on the `tokenizers` crate, with the chat templates of
//! `tokenizer_config.json` rendered by `minijinja`.
//!
//! A model directory contains `tokenizer.json` (the `tokenizers` serialization)
//! and optionally `tokenizer_config.json` (special tokens and the Jinja chat
//! template), as on the Hugging Face hub.

use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

mod bpe;
mod chars;
mod clip;
mod gguf;
mod gpt2;

pub use chars::{char_level, END_OF_TEXT};
pub use clip::{clip_from_vocab, START_OF_TEXT};
pub use gguf::from_gguf;
pub use gpt2::gpt2_from_files;
pub use tokenizers::Tokenizer as RawTokenizer;

/// One message of a conversation.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    /// Creates a message with the given role and content.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A tokenizer with the special tokens and chat template of its model.
pub struct Tokenizer {
    inner: RawTokenizer,
    config: serde_json::Value,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` from
    /// a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} not found: a model directory needs tokenizer.json for text input \
                 (`cargo xtask convert` writes one)",
                path.display()
            )));
        }
        let inner = RawTokenizer::from_file(&path)
            .map_err(|e| Error::format(&path, "tokenizer.json", e.to_string()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            let text =
                std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::format(&config_path, "JSON", e.to_string()))?
        } else {
            serde_json::Value::Null
        };
        Ok(Self { inner, config })
    }

    /// Wraps a `tokenizers` tokenizer with a `tokenizer_config.json` value.
    pub fn new(inner: RawTokenizer, config: serde_json::Value) -> Self {
        Self { inner, config }
    }

    /// Returns the wrapped `tokenizers` tokenizer.
    pub fn raw(&self) -> &RawTokenizer {
        &self.inner
    }

    /// Returns the `tokenizer_config.json` value (`null` when the model
    /// directory has none).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Returns the number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text; `add_special_tokens` applies the post-processor (for
    /// example a BOS token).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(tokenizer_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes token ids, checking each against the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {size} tokens"
            )));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(tokenizer_error)
    }

    /// Returns an incremental decoder that yields text as soon as the tokens
    /// seen so far form complete characters.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream {
            inner: self.inner.decode_stream(skip_special_tokens),
            vocab_size: self.vocab_size(),
        }
    }

    /// Returns the id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Returns a special token named in `tokenizer_config.json` (`bos_token`,
    /// `eos_token`, ...), as a string.
    pub fn special_token(&self, name: &str) -> Option<String> {
        match self.config.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            // Older configs store an AddedToken object.
            value => value.get("content")?.as_str().map(str::to_string),
        }
    }

    /// Returns the Jinja chat template of `tokenizer_config.json`, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.config.get("chat_template")?.as_str()
    }

    /// Renders a conversation with the chat template, as `transformers`'
    /// `apply_chat_template(..., tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template().ok_or_else(|| {
            Error::InvalidInput(
                "the tokenizer has no chat template: pass a plain prompt without --chat".into(),
            )
        })?;
        render_chat_template(
            template,
            messages,
            add_generation_prompt,
            &[
                ("bos_token", self.special_token("bos_token")),
                ("eos_token", self.special_token("eos_token")),
                ("unk_token", self.special_token("unk_token")),
                ("pad_token", self.special_token("pad_token")),
            ],
        )
    }
}

/// Renders a Hugging Face chat template. The environment follows the one of
/// `transformers` (trim_blocks, lstrip_blocks, loop controls,
/// `raise_exception`, Python string methods).
pub fn render_chat_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    special_tokens: &[(&str, Option<String>)],
) -> Result<String> {
    let template_error = |e: minijinja::Error| Error::InvalidInput(format!("chat template: {e:#}"));
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    env.add_template("chat", template).map_err(template_error)?;
    let mut context = std::collections::BTreeMap::new();
    context.insert("messages", minijinja::Value::from_serialize(messages));
    context.insert(
        "add_generation_prompt",
        minijinja::Value::from(add_generation_prompt),
    );
    for (name, value) in special_tokens {
        if let Some(value) = value {
            context.insert(name, minijinja::Value::from(value.as_str()));
        }
    }
    env.get_template("chat")
        .and_then(|t| t.render(context))
        .map_err(template_error)
}

/// Incremental decoding, see [`Tokenizer::decode_stream`].
pub struct DecodeStream<'a> {
    inner: tokenizers::tokenizer::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
    vocab_size: usize,
}

impl DecodeStream<'_> {
    /// Adds one token; returns the text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        if id as usize >= self.vocab_size {
            return Err(Error::InvalidInput(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        self.inner.step(id).map_err(tokenizer_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chat_template_renders_like_transformers() {
        let text =
            render_chat_template(TEMPLATE, &[Message::new("user", "Hi")], true, &[]).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chat_template_blocks_are_trimmed() {
        let template = "{% for m in messages %}\n  {{ m.content.strip() }}|\n{% endfor %}";
        let messages = [Message::new("user", " a "), Message::new("user", "b")];
        let text = render_chat_template(template, &messages, false, &[]).unwrap();
        assert_eq!(text, "  a|\n  b|\n");
    }

    #[test]
    fn raise_exception_is_error() {
        let template = "{{ raise_exception('roles must alternate') }}";
        let err = render_chat_template(template, &[], false, &[]).unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }
}
