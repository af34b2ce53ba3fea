//! Webhooks in: `POST /hooks/github`, `/hooks/gitea` (Forgejo too) and `/hooks/gitlab`. The
//! payload names the repository; its secret (the environment variable the workflow's
//! `trigger.repositories[].webhook_secret_env` names) verifies the signature
//! (`X-Hub-Signature-256`, `X-Gitea-Signature`/`X-Forgejo-Signature`: HMAC-SHA256 of the body;
//! `X-Gitlab-Token`: the secret itself, compared in constant time). A verified push only asks
//! the serving loop to poll that repository now: runs are created through the durable cursor
//! as on a cron tick, so a webhook and a tick for the same push make one run, and a replayed
//! delivery finds nothing new. A bad signature is 401 and logged (never the secret).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::{Error, Result};
use super::state::ApiState;
use crate::trigger::ServeCommand;

/// Each served repository's webhook secret, by the url the workflow names.
#[derive(Debug, Clone, Default)]
pub struct HookSecrets {
    secrets: BTreeMap<String, String>,
}

impl HookSecrets {
    pub fn new(secrets: BTreeMap<String, String>) -> HookSecrets {
        HookSecrets { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The served url the payload's repository is, with its secret.
    fn find(&self, candidates: &[String]) -> Option<(&str, &str)> {
        self.secrets.iter().find_map(|(url, secret)| {
            let wanted = normalize(url);
            candidates
                .iter()
                .any(|c| normalize(c) == wanted)
                .then_some((url.as_str(), secret.as_str()))
        })
    }
}

/// `https://host/a/b.git/` and `https://host/a/b` are one repository.
fn normalize(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

impl Forge {
    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }
}

/// Whether the request's signature header matches `body` under `secret`.
pub fn signature_matches(forge: Forge, headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match forge {
        Forge::GitHub => header("x-hub-signature-256")
            .and_then(|v| v.strip_prefix("sha256="))
            .is_some_and(|hex_mac| hmac_matches(secret, body, hex_mac)),
        Forge::Gitea => header("x-gitea-signature")
            .or_else(|| header("x-forgejo-signature"))
            .is_some_and(|hex_mac| hmac_matches(secret, body, hex_mac)),
        Forge::GitLab => header("x-gitlab-token")
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(secret.as_bytes()))),
    }
}

fn hmac_matches(secret: &str, body: &[u8], hex_mac: &str) -> bool {
    let Ok(expected) = hex::decode(hex_mac.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    // Constant time: `verify_slice` compares without an early exit.
    mac.verify_slice(&expected).is_ok()
}

/// The urls a payload gives for its repository, in every form the forge sends.
fn repository_urls(forge: Forge, payload: &Value) -> Vec<String> {
    let keys: &[&str] = match forge {
        Forge::GitHub | Forge::Gitea => &[
            "/repository/clone_url",
            "/repository/ssh_url",
            "/repository/html_url",
            "/repository/git_url",
            "/repository/url",
        ],
        Forge::GitLab => &[
            "/project/git_http_url",
            "/project/git_ssh_url",
            "/project/web_url",
            "/repository/git_http_url",
            "/repository/git_ssh_url",
            "/repository/url",
            "/repository/homepage",
        ],
    };
    keys.iter()
        .filter_map(|key| payload.pointer(key).and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Whether the delivery is a push (anything else is acknowledged and ignored).
fn is_push(forge: Forge, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match forge {
        Forge::GitHub => header("x-github-event") == Some("push"),
        Forge::Gitea => {
            header("x-gitea-event").or_else(|| header("x-forgejo-event")) == Some("push")
        }
        Forge::GitLab => matches!(
            header("x-gitlab-event"),
            Some("Push Hook" | "Tag Push Hook")
        ),
    }
}

fn delivery(headers: &HeaderMap) -> String {
    [
        "x-github-delivery",
        "x-gitea-delivery",
        "x-forgejo-delivery",
        "x-gitlab-event-uuid",
    ]
    .iter()
    .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
    .unwrap_or("-")
    .chars()
    .take(100)
    .collect()
}

async fn receive(
    forge: Forge,
    state: ApiState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let delivery = delivery(&headers);
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(
            forge = forge.name(),
            delivery,
            "webhook body is not JSON: {e}"
        );
        Error::Invalid(format!("the webhook body is not JSON: {e}"))
    })?;
    let urls = repository_urls(forge, &payload);
    let Some((url, secret)) = state.inner.hooks.find(&urls) else {
        tracing::warn!(
            forge = forge.name(),
            delivery,
            "webhook for a repository without a webhook secret here: {urls:?}"
        );
        return Err(Error::NotFound(format!(
            "no served repository with a webhook secret matches {urls:?}"
        )));
    };
    if !signature_matches(forge, &headers, &body, secret) {
        tracing::warn!(
            forge = forge.name(),
            delivery,
            repository = url,
            "webhook refused: bad or missing signature"
        );
        return Err(Error::BadSignature(format!(
            "delivery {delivery} for {url}"
        )));
    }
    if !is_push(forge, &headers) {
        return Ok((
            StatusCode::OK,
            Json(json!({ "ignored": "not a push event" })),
        ));
    }
    tracing::info!(
        forge = forge.name(),
        delivery,
        repository = url,
        "webhook: polling now"
    );
    state.send(ServeCommand::Poll(url.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "polling": url }))))
}

pub async fn github(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    receive(Forge::GitHub, state, headers, body).await
}

pub async fn gitea(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    receive(Forge::Gitea, state, headers, body).await
}

pub async fn gitlab(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    receive(Forge::GitLab, state, headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_of_each_forge() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut github = HeaderMap::new();
        let good = format!("sha256={}", sign("s3cret", body));
        github.insert(
            "x-hub-signature-256",
            HeaderValue::from_str(&good).expect("ascii"),
        );
        assert!(signature_matches(Forge::GitHub, &github, body, "s3cret"));
        assert!(!signature_matches(Forge::GitHub, &github, body, "other"));
        assert!(!signature_matches(Forge::GitHub, &github, b"{}", "s3cret"));
        let mut gitea = HeaderMap::new();
        gitea.insert(
            "x-gitea-signature",
            HeaderValue::from_str(&sign("k", body)).expect("ascii"),
        );
        assert!(signature_matches(Forge::Gitea, &gitea, body, "k"));
        assert!(!signature_matches(
            Forge::Gitea,
            &HeaderMap::new(),
            body,
            "k"
        ));
        let mut gitlab = HeaderMap::new();
        gitlab.insert("x-gitlab-token", HeaderValue::from_static("tok"));
        assert!(signature_matches(Forge::GitLab, &gitlab, body, "tok"));
        assert!(!signature_matches(Forge::GitLab, &gitlab, body, "tok2"));
    }

    #[test]
    fn repositories_match_in_any_spelling() {
        let secrets = HookSecrets::new(BTreeMap::from([(
            "https://git.example.com/team/app.git".to_string(),
            "s".to_string(),
        )]));
        let found = secrets.find(&["https://git.example.com/team/app/".to_string()]);
        assert_eq!(
            found.map(|f| f.0),
            Some("https://git.example.com/team/app.git")
        );
        assert!(
            secrets
                .find(&["https://git.example.com/team/other".to_string()])
                .is_none()
        );
    }
}
