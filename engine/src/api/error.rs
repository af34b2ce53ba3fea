//! Errors of the HTTP service, each with its status code; the body is `{"error": "…"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing or malformed `Authorization: Bearer <token>` header")]
    NoToken,
    #[error("the token is not known or was revoked")]
    BadToken,
    #[error("this needs a token with `write` scope")]
    NeedsWrite,
    #[error("the form's CSRF token does not match the session; reload the page and try again")]
    BadCsrf,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("webhook signature does not match: {0}")]
    BadSignature(String),
    #[error("failed to read the state database")]
    Store(#[from] crate::store::Error),
    #[error("the serving loop has stopped; the request was not handed over")]
    LoopGone,
    #[error("a store read was cut short (its thread panicked)")]
    Task,
    #[error("the engine refused")]
    Engine(#[from] crate::exec::Error),
    #[error("failed to bind {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the TLS certificate {cert} or key {key}")]
    Tls {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::NoToken | Error::BadToken | Error::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Error::NeedsWrite | Error::BadCsrf => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Engine(crate::exec::Error::Invalid(_)) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // The whole chain, so a client sees why (a locked database, a bad workflow).
        let mut message = self.to_string();
        let mut source = std::error::Error::source(&self);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if status.is_server_error() {
            tracing::error!("{message}");
        }
        let message = super::redact::text(&message);
        (status, Json(json!({ "error": message }))).into_response()
    }
}

pub type Result<T> = std::result::Result<T, Error>;
