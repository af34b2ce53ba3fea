//! Errors of the build agent (`build::Error`). Every variant ends up as the step's failure
//! message, so each says what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid `with:` for build_agent: {0}")]
    Config(String),
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("cannot reach the Docker engine at {host}: no answer within {seconds} s")]
    UnreachableTimeout { host: String, seconds: u64 },
    #[error("failed to read the build context at {path}: {source}")]
    Context {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no Dockerfile at {0} (set `with: dockerfile:` to its path inside the context)")]
    NoDockerfile(PathBuf),
    #[error("docker build of {tag} failed: {message}")]
    BuildFailed { tag: String, message: String },
    #[error("failed to {action} through the Docker engine: {source}")]
    Docker {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "image {tag} is {size}, over the limit max_image_size {limit} (the branch tag was not moved; the image is kept as {tag} for inspection)"
    )]
    TooLarge {
        tag: String,
        size: String,
        limit: String,
    },
}

impl Error {
    pub(super) fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Error {
        Error::Docker {
            action: action.into(),
            source,
        }
    }

    /// The message with its whole source chain, for the step's failure text.
    pub fn chain(&self) -> String {
        crate::agents::with::error_chain(self)
    }
}
