//! Text corpora for training: UTF-8 files read with clear errors, a held-out
//! split, and token streams with documents separated by `<|endoftext|>`.

use common::tokenizer::Tokenizer;
use common::{Error, Result};
use std::path::{Path, PathBuf};

/// A named text.
#[derive(Clone, Debug)]
pub struct Document {
    pub path: PathBuf,
    pub text: String,
}

/// Reads a UTF-8 text file, without a byte-order mark and with `\r\n` line
/// ends as `\n`.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            "UTF-8 text",
            format!(
                "invalid UTF-8 at byte {}: convert the file to UTF-8 (for example with iconv)",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text.replace("\r\n", "\n"))
}

/// Reads `paths` (files, or directories whose `*.txt` files are read in name
/// order). Empty files are skipped; no text at all is an error.
pub fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{} has no .txt files",
                    path.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut documents = Vec::new();
    for path in files {
        let text = read_text(&path)?;
        if !text.trim().is_empty() {
            documents.push(Document { path, text });
        }
    }
    if documents.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::InvalidInput(format!(
            "the corpus is empty: {} contains no text; pass text files with --corpus",
            names.join(", ")
        )));
    }
    Ok(documents)
}

/// Splits each document into its first part and its last
/// `validation_fraction` (cut at a line start), and returns the first parts
/// and the last parts. Every document thus contributes to both splits.
pub fn split_documents(
    documents: &[Document],
    validation_fraction: f64,
) -> Result<(Vec<String>, Vec<String>)> {
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(Error::InvalidInput(format!(
            "the validation fraction must be between 0 and 1, got {validation_fraction}"
        )));
    }
    let mut train = Vec::new();
    let mut validation = Vec::new();
    for doc in documents {
        let text = &doc.text;
        let mut cut = ((text.len() as f64) * (1.0 - validation_fraction)) as usize;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        // Move the cut to the start of the next line, if there is one.
        if let Some(newline) = text[cut..].find('\n') {
            cut += newline + 1;
        }
        let (head, tail) = text.split_at(cut);
        if !head.is_empty() {
            train.push(head.to_string());
        }
        if !tail.is_empty() {
            validation.push(tail.to_string());
        }
    }
    Ok((train, validation))
}

/// Encodes texts into one token stream, each text followed by the
/// end-of-text token when the tokenizer has one.
pub fn encode_stream(
    tokenizer: &Tokenizer,
    texts: &[String],
    end_of_text: Option<u32>,
) -> Result<Vec<u32>> {
    let mut tokens = Vec::new();
    for text in texts {
        tokens.extend(tokenizer.encode(text, false)?);
        tokens.extend(end_of_text);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_at_line_starts() {
        let doc = Document {
            path: "a.txt".into(),
            text: "one\ntwo\nthree\nfour\nfive\n".into(),
        };
        let (train, validation) = split_documents(&[doc], 0.3).unwrap();
        assert_eq!(train, ["one\ntwo\nthree\nfour\n"]);
        assert_eq!(validation, ["five\n"]);
    }

    #[test]
    fn non_utf8_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.txt");
        std::fs::write(&path, b"caf\xe9 au lait").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(
            err.contains("latin1.txt") && err.contains("byte 3"),
            "{err}"
        );
    }

    #[test]
    fn empty_corpus_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.txt");
        std::fs::write(&path, "  \n\n").unwrap();
        let err = read_documents(&[path]).unwrap_err().to_string();
        assert!(
            err.contains("corpus is empty") && err.contains("empty.txt"),
            "{err}"
        );
        let err = read_documents(&[dir.path().join("missing.txt")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.txt"), "{err}");
    }

    #[test]
    fn crlf_and_bom_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poem.txt");
        std::fs::write(&path, "\u{feff}line one\r\nline two\r\n").unwrap();
        assert_eq!(read_text(&path).unwrap(), "line one\nline two\n");
    }
}
