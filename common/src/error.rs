//! The error type of the model crates.

use std::path::PathBuf;

/// Errors returned by the model crates.
///
/// Every variant names the file, tensor or value at fault, so that the
/// message alone shows the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written. The message includes the I/O
    /// error, so it is not also exposed as the error's source.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A file exists but its contents are not a valid file of its format.
    #[error("{path}: invalid {format} file: {message}")]
    Format {
        path: PathBuf,
        format: &'static str,
        message: String,
    },

    /// A checkpoint lacks tensors that the model needs.
    #[error("missing tensors in the checkpoint: {}", names.join(", "))]
    MissingTensors { names: Vec<String> },

    /// A checkpoint has tensors that the model does not use.
    #[error(
        "unexpected tensors in the checkpoint (the checkpoint is for another \
         architecture or configuration): {}",
        names.join(", ")
    )]
    UnexpectedTensors { names: Vec<String> },

    /// A tensor in a checkpoint has another shape than the model expects.
    #[error(
        "tensor {name} has shape {found:?} in the checkpoint but the model expects \
         {expected:?}: check that config.json matches the weights"
    )]
    ShapeMismatch {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },

    /// A value supplied by the caller is out of range or inconsistent.
    #[error("{0}")]
    InvalidInput(String),

    /// A feature of a file or configuration that this crate does not support.
    #[error("{0}")]
    Unsupported(String),

    /// An error from the tokenizer library.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An error from libtorch. The message includes it, so it is not also
    /// exposed as the error's source.
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
}

impl From<tch::TchError> for Error {
    fn from(error: tch::TchError) -> Self {
        Error::Torch(error)
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// Builds an [`Error::Format`] for a file of the given format.
    pub fn format(
        path: impl Into<PathBuf>,
        format: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            format,
            message: message.into(),
        }
    }
}

/// The result type of the model crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;
