//! Why a step could not be put in its sandbox, or the sandbox could not be set up.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no sandbox mechanism is available ({why}) and {demand} requires one; install \
         bubblewrap (`apt-get install bubblewrap`) or relax the policy (`sandbox: {{ policy: auto }}` \
         in cairn.yaml)"
    )]
    Unavailable { why: String, demand: String },
    #[error("failed to set up the step's resource limits in {path}: {source}")]
    Limits {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the sandbox configuration {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox configuration:\n{0}")]
    Config(#[from] crate::pipeline::Error),
    #[error("`CAIRN_SANDBOX` must be auto, required or off, not `{0}`")]
    Variable(String),
}
