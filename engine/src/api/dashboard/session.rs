//! Signing in to the dashboard: the token goes in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind TLS), checked like a bearer token on every request. Forms that change
//! something carry `csrf`, the SHA-256 of a fixed label and the session token: another site
//! can neither read it nor compute it.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layout::page;
use crate::api::auth::{Scope, token_scope};
use crate::api::error::Error;
use crate::api::state::ApiState;

pub const SESSION_COOKIE: &str = "cairn_session";

/// The CSRF token of a session.
pub fn csrf_for(session: &str) -> String {
    hex::encode(Sha256::digest(format!("cairn-csrf:{session}").as_bytes()))
}

/// The session token from the request's cookies.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a form's `csrf` field belongs to the request's session.
pub fn csrf_matches(headers: &HeaderMap, csrf: &str) -> bool {
    session_token(headers)
        .is_some_and(|session| bool::from(csrf_for(&session).as_bytes().ct_eq(csrf.as_bytes())))
}

pub async fn form() -> Markup {
    login_page(None)
}

fn login_page(problem: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/login" {
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                p.hint { "Make one with " code { "cairn token create --scope read" } "." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct Login {
    pub token: String,
}

pub async fn login(State(state): State<ApiState>, Form(login): Form<Login>) -> Response {
    let token = login.token.trim().to_string();
    match token_scope(&state, &token).await {
        Ok(Some(_)) => {
            let secure = if state.inner.options.tls {
                "; Secure"
            } else {
                ""
            };
            let cookie =
                format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}");
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not known or was revoked.")),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct Csrf {
    pub csrf: String,
}

pub async fn logout(headers: HeaderMap, Form(form): Form<Csrf>) -> Response {
    if !csrf_matches(&headers, &form.csrf) {
        return Error::BadCsrf.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}

/// The scope the session grants, if any (`None` also when reading is public and there is no
/// session).
pub async fn session_scope(state: &ApiState, headers: &HeaderMap) -> Result<Option<Scope>, Error> {
    match session_token(headers) {
        Some(token) => token_scope(state, &token).await,
        None => Ok(None),
    }
}
