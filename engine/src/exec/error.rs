//! Errors of the executor.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("the workflow is not valid:\n{0}")]
    Invalid(#[from] crate::pipeline::Error),
    #[error("run {run_id}'s stored definition no longer loads with this build of Cairn:\n{source}")]
    StoredDefinition {
        run_id: i64,
        #[source]
        source: crate::pipeline::Error,
    },
    #[error("run {run_id} is already finished ({state})")]
    AlreadyFinished {
        run_id: i64,
        state: crate::store::RunState,
    },
    #[error("a blocking store task failed: {0}")]
    Blocking(String),
    #[error("the run cannot start: {0}")]
    Sandbox(#[from] super::sandbox::Error),
    #[error("failed to prepare the workspace of run {run_id}: {message}")]
    Workspace { run_id: i64, message: String },
}

impl Error {
    /// See [`crate::store::Error::is_unavailable`].
    pub fn is_store_unavailable(&self) -> bool {
        matches!(self, Error::Store(error) if error.is_unavailable())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
