//! Error type of the core library.

use std::path::PathBuf;

/// Everything that can go wrong in the core library. Messages name the file, tensor or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error (shown in this error's message, so not also as its source:
        /// a chain printed in full would repeat it).
        error: std::io::Error,
    },
    /// A checkpoint or weight file is invalid (corrupted, truncated, wrong tensors, wrong version).
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file the program needs is not where it looked (the message lists where it did).
    #[error("{0}")]
    NotFound(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A device string could not be used (unknown name, CUDA absent).
    #[error("device {device:?}: {message}")]
    Device {
        /// The device string as given.
        device: String,
        /// Why it cannot be used.
        message: String,
    },
    /// An input image or tensor has the wrong shape or type.
    #[error("invalid input: {0}")]
    Input(String),
    /// A job on the libtorch thread panicked (see [`crate::torch_thread`]).
    #[error("internal error in a libtorch job: {0}")]
    Panicked(String),
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result type of the core library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
