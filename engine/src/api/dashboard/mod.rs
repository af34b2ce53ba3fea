//! The web dashboard, served by the same binary: server-rendered pages (maud) and a little
//! plain JavaScript (`run.js`: step states and logs live over the API's event stream). Sign-in
//! takes an API token and keeps it in an `HttpOnly`, `SameSite=Strict` cookie; the forms that
//! change something carry a CSRF token derived from the session. See `ARCHITECTURE.md`, "Team
//! service".

mod dag;
mod layout;
mod pages;
mod records;
mod session;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::state::ApiState;

pub use session::session_token;

pub const STYLE: &str = include_str!("style.css");
pub const SCRIPT: &str = include_str!("run.js");

/// The dashboard's routes (added to the API's router).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{run_id}", get(pages::run))
        .route("/runs/{run_id}/cancel", post(pages::cancel))
        .route("/deployments", get(records::deployments))
        .route("/costs", get(records::costs))
        .route("/flaky", get(records::flaky))
        .route("/test-proposals", get(records::proposals))
        .route("/login", get(session::form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/style.css", get(style))
        .route("/static/run.js", get(script))
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}
