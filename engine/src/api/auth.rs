//! Access control: bearer tokens with a `read` or `write` scope, stored as their SHA-256
//! (`cairn token create` prints a token once). Reading needs a token unless the service was
//! started with `--public-read`; writing always needs a `write` token. A token is 32 random
//! bytes, so a plain SHA-256 is enough to keep the stored form useless (no password stretching
//! is needed for a secret nobody chose).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::Error;
use super::state::ApiState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }
}

/// A new token: `cairn_` and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("cairn_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The scope a token grants, `None` when it is unknown or revoked.
pub async fn token_scope(state: &ApiState, token: &str) -> Result<Option<Scope>, Error> {
    let hash = hash_token(token);
    let scope = state.read(move |store| store.token_scope(&hash)).await?;
    Ok(scope.as_deref().and_then(Scope::parse))
}

/// The scope the request's bearer token (or, for reading, its dashboard session cookie)
/// grants; `None` without either.
async fn granted(state: &ApiState, parts: &Parts, cookie: bool) -> Result<Option<Scope>, Error> {
    let token = match parts.headers.get(AUTHORIZATION) {
        Some(header) => header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::NoToken)?
            .to_string(),
        None => match cookie
            .then(|| super::dashboard::session_token(&parts.headers))
            .flatten()
        {
            Some(token) => token,
            None => return Ok(None),
        },
    };
    token_scope(state, &token)
        .await?
        .map(Some)
        .ok_or(Error::BadToken)
}

/// Proof that the request may read: a token of either scope, or `--public-read`. An extractor,
/// so a handler cannot forget it: its signature says what it needs.
pub struct CanRead;

/// Proof that the request holds a `write` token, as a bearer header: a session cookie never
/// writes through the API (another site could make a browser send it); the dashboard's
/// forms write with a CSRF token instead.
pub struct CanWrite;

impl FromRequestParts<ApiState> for CanRead {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Error> {
        let scope = granted(state, parts, true).await?;
        if scope.is_none() && !state.inner.options.public_read {
            return Err(Error::NoToken);
        }
        Ok(CanRead)
    }
}

impl FromRequestParts<ApiState> for CanWrite {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Error> {
        match granted(state, parts, false).await? {
            Some(Scope::Write) => Ok(CanWrite),
            Some(Scope::Read) => Err(Error::NeedsWrite),
            None => Err(Error::NoToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), "cairn_".len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(Scope::Write > Scope::Read);
        assert_eq!(Scope::parse("admin"), None);
    }
}
