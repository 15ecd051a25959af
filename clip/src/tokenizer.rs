//! CLIP's tokenizer: text to the rows of token ids that the text encoder
//! reads, as openai-clip's `clip.tokenize(texts, truncate=True)` makes
//! them.
//!
//! The BPE is the `tokenizer.json` that transformers 5.25 builds for
//! `CLIPTokenizer` ([`common::tokenizer::clip_from_vocab`]). Before it, the
//! text is cleaned as openai-clip's `simple_tokenizer.py` cleans it (ftfy's
//! fixes, HTML entities, whitespace, lowercase), which transformers does
//! not do. The cleaning takes the place of the normalizer of
//! `tokenizer.json`, which is not applied: its whitespace and lowercase
//! steps would find nothing to do, and its NFC would compose combining
//! marks that `html.unescape` produced after ftfy's own NFC, which
//! openai-clip keeps apart.
//!
//! The one part of openai-clip's cleaning left out is ftfy's repair of
//! mojibake (text decoded in the wrong encoding, as in `cafÃ©`): such text
//! is tokenized as written, where openai-clip tokenizes the repaired text.

mod clean;

use common::{checkpoint, Error, Result};
use std::path::Path;
use tch::Tensor;

/// The token before the text of each row.
const START_OF_TEXT: &str = common::tokenizer::START_OF_TEXT;
/// The token after the text of each row, at whose position the text
/// encoder pools.
const END_OF_TEXT: &str = common::tokenizer::END_OF_TEXT;

/// The id that fills each row after its `<|endoftext|>`, as in
/// openai-clip's `clip.tokenize` (it is the id of `!`).
///
/// The text encoder is causal and takes its output at the `<|endoftext|>`
/// position, so nothing after that token reaches the output: any id would
/// do. transformers pads with `<|endoftext|>` instead; the ids differ after
/// the end of the text but the text features are the same.
pub const PADDING_ID: i64 = 0;

/// CLIP's tokenizer for a fixed context length.
pub struct Tokenizer {
    inner: common::tokenizer::Tokenizer,
    /// `inner` without its normalizer, which [`clean::clean`] replaces.
    encoder: common::tokenizer::RawTokenizer,
    start_of_text: u32,
    end_of_text: u32,
    context_length: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.vocab_size())
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

/// A batch of texts as token ids.
#[derive(Debug)]
pub struct Encoded {
    /// `(n, context_length)` Int64: each row is `<|startoftext|>`, the
    /// tokens of the text, `<|endoftext|>`, then [`PADDING_ID`] to the end.
    /// A text too long for the row keeps its first `context_length - 2`
    /// tokens, so that `<|endoftext|>` is always there.
    pub ids: Tensor,
    /// Whether each text lost tokens to the context length.
    pub truncated: Vec<bool>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json`, if present)
    /// from a model directory.
    ///
    /// `context_length` is the number of positions of the text encoder, 77
    /// for every published CLIP; it must be at least 2, room for the start
    /// and end tokens.
    pub fn from_dir(dir: &Path, context_length: usize) -> Result<Self> {
        check_context_length(context_length)?;
        let inner = common::tokenizer::Tokenizer::from_dir(dir)?;
        let origin = format!("{}", dir.join("tokenizer.json").display());
        Self::new(inner, context_length, &origin)
    }

    /// Builds the tokenizer in memory from OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz` (see
    /// [`common::tokenizer::clip_from_vocab`]), writing no files.
    ///
    /// `context_length` is as for [`Tokenizer::from_dir`].
    pub fn from_vocab(bpe_gz: &Path, context_length: usize) -> Result<Self> {
        check_context_length(context_length)?;
        let (tokenizer_json, config) = common::tokenizer::clip_from_vocab(bpe_gz)?;
        let raw: common::tokenizer::RawTokenizer =
            serde_json::from_value(tokenizer_json).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let inner = common::tokenizer::Tokenizer::new(raw, config);
        let origin = format!("the vocabulary {}", bpe_gz.display());
        Self::new(inner, context_length, &origin)
    }

    fn new(
        inner: common::tokenizer::Tokenizer,
        context_length: usize,
        origin: &str,
    ) -> Result<Self> {
        let id = |token: &str| {
            inner.token_id(token).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{origin} has no {token} token: it is not a CLIP tokenizer"
                ))
            })
        };
        let mut encoder = inner.raw().clone();
        encoder.with_normalizer(None::<tokenizers::NormalizerWrapper>);
        Ok(Self {
            start_of_text: id(START_OF_TEXT)?,
            end_of_text: id(END_OF_TEXT)?,
            inner,
            encoder,
            context_length,
        })
    }

    /// Returns the id of `<|startoftext|>`, which begins each row.
    pub fn start_of_text_id(&self) -> i64 {
        i64::from(self.start_of_text)
    }

    /// Returns the id of `<|endoftext|>`, which ends the text of each row;
    /// the text encoder pools its output at this token.
    pub fn end_of_text_id(&self) -> i64 {
        i64::from(self.end_of_text)
    }

    /// Returns the length of each row.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Returns the tokenizer of `tokenizer.json`, to decode ids or look up
    /// tokens. Its `encode` applies transformers' normalization instead of
    /// openai-clip's cleaning: encode with [`Tokenizer::encode`].
    pub fn inner(&self) -> &common::tokenizer::Tokenizer {
        &self.inner
    }

    /// Writes `tokenizer.json` and, when there is one,
    /// `tokenizer_config.json` into a model directory, replacing those
    /// files; each is written atomically. [`Tokenizer::from_dir`] reads
    /// them back.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tokenizer = self
            .inner
            .raw()
            .to_string(true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        checkpoint::write_atomic(&dir.join("tokenizer.json"), tokenizer.as_bytes())?;
        let config = self.inner.config();
        if !config.is_null() {
            let text = serde_json::to_string_pretty(config)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            checkpoint::write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())?;
        }
        Ok(())
    }

    /// Returns the ids of a text's tokens, without the start and end tokens
    /// and without truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .encoder
            .encode(clean::clean(text), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes texts into rows of `context_length` ids, as
    /// `clip.tokenize(texts, context_length, truncate=True)` does: the
    /// start token, the text's tokens, the end token, then [`PADDING_ID`].
    /// A text with more than `context_length - 2` tokens is cut to that
    /// many and flagged in [`Encoded::truncated`].
    ///
    /// An empty list is an error (a batch of no rows has no use).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Encoded> {
        if texts.is_empty() {
            return Err(Error::InvalidInput(
                "no texts to tokenize: pass at least one".into(),
            ));
        }
        let cleaned: Vec<String> = texts.iter().map(|text| clean::clean(text)).collect();
        let encodings = self
            .encoder
            .encode_batch(cleaned, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;

        let room = self.context_length - 2;
        let mut ids = vec![PADDING_ID; texts.len() * self.context_length];
        let mut truncated = Vec::with_capacity(texts.len());
        for (row, encoding) in ids.chunks_mut(self.context_length).zip(&encodings) {
            let tokens = encoding.get_ids();
            let kept = tokens.len().min(room);
            row[0] = self.start_of_text_id();
            for (slot, &id) in row[1..].iter_mut().zip(&tokens[..kept]) {
                *slot = i64::from(id);
            }
            row[kept + 1] = self.end_of_text_id();
            truncated.push(tokens.len() > room);
        }
        let shape = [texts.len() as i64, self.context_length as i64];
        Ok(Encoded {
            ids: Tensor::from_slice(&ids).view(shape),
            truncated,
        })
    }
}

/// The maximum context length accepted. Every published CLIP has 77
/// positions.
pub const MAX_CONTEXT_LENGTH: usize = 4096;

fn check_context_length(context_length: usize) -> Result<()> {
    if context_length > MAX_CONTEXT_LENGTH {
        return Err(Error::InvalidInput(format!(
            "context length {context_length} is too long: use at most {MAX_CONTEXT_LENGTH} \
             (CLIP uses 77), the model's text_config.max_position_embeddings"
        )));
    }
    if context_length < 2 {
        return Err(Error::InvalidInput(format!(
            "context length {context_length} is too short: a row needs at least 2 positions, \
             for <|startoftext|> and <|endoftext|> (CLIP uses 77)"
        )));
    }
    Ok(())
}
