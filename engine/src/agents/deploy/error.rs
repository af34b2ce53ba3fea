//! Errors of the deploy agent (`deploy::Error`). Each ends up as the step's failure message.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid `with:` for deploy_agent: {0}")]
    Config(String),
    #[error(transparent)]
    Docker(#[from] crate::agents::build::Error),
    #[error("failed to {action} through the Docker engine: {source}")]
    Container {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A replica that exited or never answered its health check (the deploy rolls back).
    #[error("{0}")]
    Unhealthy(String),
    #[error("failed to talk to HAProxy at {socket}: {message}")]
    Proxy { socket: String, message: String },
    #[error("failed to read or write the deployment state file {path}: {message}")]
    State { path: String, message: String },
}

impl Error {
    pub(super) fn container(action: impl Into<String>, source: bollard::errors::Error) -> Error {
        Error::Container {
            action: action.into(),
            source,
        }
    }

    /// The message with its source chain, for the step's failure text.
    pub fn chain(&self) -> String {
        match self {
            Error::Docker(inner) => inner.chain(),
            other => crate::agents::with::error_chain(other),
        }
    }
}
