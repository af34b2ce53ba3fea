//! The crate's error type, [`Error`]: one variant per thing that can go wrong while loading
//! or running a local model, each with a lowercase "failed to …" message and its cause kept
//! as `#[source]` so callers can print the whole chain.

use std::path::PathBuf;

/// Everything `cairn-models` can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No model file was configured and none is in the cache.
    #[error(
        "failed to find a local model: {tried}; run scripts/fetch-model.sh to download the default \
         model, copy a .gguf file there, or set CAIRN_MODEL=/path/to/model.gguf"
    )]
    ModelNotFound { tried: String },

    /// The model file could not be opened or read.
    #[error("failed to read model file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a readable GGUF file (bad magic, truncated, corrupt metadata).
    #[error("failed to parse GGUF file {path}: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },

    /// `general.architecture` names a family this crate cannot run.
    #[error(
        "failed to load model {path}: unsupported architecture `{architecture}` (supported: {supported})"
    )]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        supported: String,
    },

    /// A metadata key the architecture needs is missing or has the wrong type.
    #[error("failed to read GGUF metadata `{key}`: {reason}")]
    Metadata { key: String, reason: String },

    /// Building the tokenizer (from GGUF metadata or a tokenizer.json) failed.
    #[error("failed to build the tokenizer: {reason}")]
    Tokenizer { reason: String },

    /// Encoding or decoding text failed.
    #[error("failed to {action} text with the tokenizer: {reason}")]
    Tokenize {
        action: &'static str,
        reason: String,
    },

    /// A tensor operation in candle failed (loading weights or running the model).
    #[error("failed to {action}")]
    Candle {
        action: String,
        #[source]
        source: candle_core::Error,
    },

    /// The prompt does not fit the model's context window.
    #[error(
        "failed to fit the prompt into the context window: {prompt_tokens} prompt tokens + \
         {reserved} reserved for the answer exceed {context_length}"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        reserved: usize,
        context_length: usize,
    },

    /// Invalid generation parameters (e.g. a negative temperature).
    #[error("failed to start generation: invalid parameter {name}: {reason}")]
    InvalidParams { name: &'static str, reason: String },

    /// JSON-constrained decoding could not be set up or failed mid-way.
    #[error("failed to constrain output to the JSON schema: {reason}")]
    Constraint { reason: String },

    /// The rayon thread pool for inference could not be built.
    #[error("failed to build a thread pool with {threads} threads")]
    ThreadPool {
        threads: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },

    /// A previous generation panicked while holding the model; the model must be reloaded.
    #[error("failed to lock the model: a previous generation panicked")]
    Poisoned,
}

/// Extension to attach an action description to candle results.
pub(crate) trait CandleContext<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> CandleContext<T> for Result<T, candle_core::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Candle {
            action: action(),
            source: without_backtrace(source),
        })
    }
}

/// candle attaches a backtrace to errors when `RUST_BACKTRACE` is set, and prints it as part
/// of the message; user-facing messages drop it.
pub(crate) fn without_backtrace(err: candle_core::Error) -> candle_core::Error {
    match err {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other,
    }
}
