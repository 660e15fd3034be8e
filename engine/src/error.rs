//! One error type for the engine. Every variant that comes from user input names the file and,
//! where known, the position and what was expected, so the faces can print it as is.

use std::path::{Path, PathBuf};

/// Engine error. Displayed messages are meant for end users: they say which file, where, and
/// what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed or has the wrong shape.
    #[error("{path}:{line}:{column}: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A recipe (TOML) is malformed, has an unknown key or a bad value.
    #[error("{path}: {message}")]
    Recipe { path: PathBuf, message: String },
    /// An image is missing or cannot be decoded.
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    /// A data record is valid JSON but not usable (e.g. no `<image>` where one is needed).
    #[error("{path}: record {index} (id {id:?}): {message}")]
    Record {
        path: PathBuf,
        index: usize,
        id: String,
        message: String,
    },
    /// A tokenizer cannot be loaded or does not fit the model.
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A checkpoint is missing, corrupt or of another shape than the model.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// No device could be set up.
    #[error("device: {0}")]
    Device(String),
    /// A stage would form a tensor larger than the device can hold (found by the memory plan
    /// before training starts).
    #[error("does not fit the device: {0}")]
    TooLarge(String),
    /// A training step failed on the device (out of memory, lost device, a kernel error).
    #[error("stage {stage} {name:?}, step {step}: {operation} failed on the device: {message}")]
    StepFailed {
        stage: usize,
        name: String,
        step: usize,
        operation: String,
        message: String,
    },
    /// Anything else the user asked for that cannot be done (bad combination of options).
    #[error("{0}")]
    Invalid(String),
}

/// Engine result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Wraps a serde_json error with the path, keeping its line and column.
    pub fn json(path: impl AsRef<Path>, err: serde_json::Error) -> Self {
        Error::Json {
            path: path.as_ref().to_path_buf(),
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_to_string(path: impl AsRef<Path>) -> Result<String> {
    std::fs::read_to_string(path.as_ref()).map_err(|e| Error::io(path, e))
}

/// Writes a file atomically: a temporary sibling is written and fsynced, then renamed over the
/// target, so a crash never leaves a half-written file that could pass for a result.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_sibling(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// `dir/.name.tmp` next to `path`.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}
