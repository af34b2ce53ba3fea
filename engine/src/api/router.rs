//! The routes, and listening on an address (plain HTTP, or HTTPS through rustls when given a
//! certificate and key).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use tokio::task::JoinHandle;

use super::error::{Error, Result};
use super::state::ApiState;
use super::{dashboard, hooks, logs, metrics, openapi, records, runs};

/// Every route: method and path as axum spells it. The OpenAPI document must list exactly
/// these (a unit test checks; the end-to-end test calls each one over HTTP).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/runs"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{run_id}"),
    ("post", "/api/v1/runs/{run_id}/cancel"),
    ("post", "/api/v1/runs/{run_id}/resume"),
    ("get", "/api/v1/runs/{run_id}/logs"),
    ("get", "/api/v1/runs/{run_id}/logs.txt"),
    ("get", "/api/v1/runs/{run_id}/logs/stream"),
    ("get", "/api/v1/costs"),
    ("get", "/api/v1/deployments"),
    ("get", "/api/v1/flaky-tests"),
    ("get", "/api/v1/test-proposals"),
    ("get", "/metrics"),
    ("post", "/hooks/github"),
    ("post", "/hooks/gitea"),
    ("post", "/hooks/gitlab"),
];

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/runs", get(runs::list).post(runs::start))
        .route("/api/v1/runs/{run_id}", get(runs::one))
        .route("/api/v1/runs/{run_id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run_id}/resume", post(runs::resume))
        .route("/api/v1/runs/{run_id}/logs", get(logs::page))
        .route("/api/v1/runs/{run_id}/logs.txt", get(logs::text))
        .route("/api/v1/runs/{run_id}/logs/stream", get(logs::live))
        .route("/api/v1/costs", get(records::costs))
        .route("/api/v1/deployments", get(records::deployments))
        .route("/api/v1/flaky-tests", get(records::flaky_tests))
        .route("/api/v1/test-proposals", get(records::test_proposals))
        .route("/metrics", get(metrics::metrics))
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitea", post(hooks::gitea))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .merge(dashboard::routes())
        .with_state(state)
}

/// A bound listener serving the routes.
pub struct Listening {
    pub address: SocketAddr,
    pub task: JoinHandle<()>,
}

/// A PEM certificate chain and its private key, for HTTPS.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Binds `address` and serves on it in a task: HTTPS through rustls with `tls`, else HTTP.
pub async fn listen(address: &str, state: ApiState, tls: Option<Tls>) -> Result<Listening> {
    let bind_error = |source| Error::Bind {
        address: address.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let app = router(state);
    let task = match tls {
        None => tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!("the HTTP service stopped: {error}");
            }
        }),
        Some(tls) => {
            // One process-wide provider; a second install (already set) is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|source| Error::Tls {
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                    source,
                })?;
            let listener = listener.into_std().map_err(bind_error)?;
            let server = axum_server::from_tcp_rustls(listener, config);
            tokio::spawn(async move {
                if let Err(error) = server.serve(app.into_make_service()).await {
                    tracing::error!("the HTTPS service stopped: {error}");
                }
            })
        }
    };
    Ok(Listening {
        address: bound,
        task,
    })
}
