//! The remote tier: an OpenAI-compatible `/v1/chat/completions` client with per-attempt
//! timeouts, retries with exponential backoff and jitter on 429/5xx (honouring `Retry-After`),
//! and a circuit breaker.
//!
//! Every message is redacted here, in [`RemoteClient::chat`], the only function that sends
//! text off the machine.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::config::RemoteSettings;
use super::redact::redact;

/// The longest `Retry-After` we are willing to sit through inside one pipeline step.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("circuit open after repeated failures; closed again in {0:?}")]
    CircuitOpen(Duration),
    #[error("the API key variable `{0}` is not set")]
    MissingKey(String),
    #[error("HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl RemoteError {
    /// The provider may have done (and billed) the work: the answer timed out or arrived
    /// unreadable. Such calls are charged at their reservation, not handed back.
    pub fn maybe_billed(&self) -> bool {
        matches!(self, RemoteError::Timeout(_) | RemoteError::Malformed(_))
    }

    fn retryable(&self) -> bool {
        match self {
            RemoteError::Status { status, .. } => *status == 429 || *status >= 500,
            RemoteError::Timeout(_) | RemoteError::Transport(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteAnswer {
    pub text: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// A chat message as sent: role and content.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

pub struct RemoteClient {
    http: reqwest::Client,
    settings: RemoteSettings,
    breaker: Mutex<Breaker>,
}

impl RemoteClient {
    pub fn new(settings: RemoteSettings) -> Result<RemoteClient, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("failed to build the HTTP client: {e}"))?;
        Ok(RemoteClient {
            http,
            settings,
            breaker: Mutex::new(Breaker {
                consecutive_failures: 0,
                open_until: None,
            }),
        })
    }

    pub fn model(&self) -> &str {
        &self.settings.model
    }

    pub fn base_url(&self) -> &str {
        &self.settings.base_url
    }

    /// Redacts `messages` and sends them. The redacted messages are returned too, so the
    /// caller's cache key is computed over exactly what was sent.
    pub fn outbound(messages: &[Message]) -> Vec<Message> {
        messages
            .iter()
            .map(|m| Message {
                role: m.role,
                content: redact(&m.content).text,
            })
            .collect()
    }

    pub async fn chat(
        &self,
        messages: &[Message],
        max_tokens: usize,
        schema: Option<&Value>,
    ) -> Result<RemoteAnswer, RemoteError> {
        self.check_breaker()?;
        let key = match &self.settings.api_key_env {
            Some(variable) => Some(
                std::env::var(variable).map_err(|_| RemoteError::MissingKey(variable.clone()))?,
            ),
            None => None,
        };
        let mut body = json!({
            "model": self.settings.model,
            "messages": Self::outbound(messages),
            "temperature": 0,
            "seed": 0,
            "max_tokens": max_tokens,
        });
        if let Some(schema) = schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": "answer", "schema": schema, "strict": true },
            });
        }
        let mut attempt = 0;
        loop {
            let result = self.send(&body, key.as_deref()).await;
            match result {
                Ok(answer) => {
                    self.record(true);
                    return Ok(answer);
                }
                Err((error, retry_after))
                    if error.retryable() && attempt < self.settings.retries =>
                {
                    attempt += 1;
                    let backoff = Duration::from_millis(250u64 << attempt.min(6));
                    let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
                    let wait = retry_after.unwrap_or(backoff + jitter);
                    if wait > MAX_RETRY_AFTER {
                        self.record(false);
                        return Err(error);
                    }
                    tracing::info!(attempt, ?wait, "remote call failed ({error}); retrying");
                    tokio::time::sleep(wait).await;
                }
                Err((error, _)) => {
                    self.record(false);
                    return Err(error);
                }
            }
        }
    }

    async fn send(
        &self,
        body: &Value,
        key: Option<&str>,
    ) -> Result<RemoteAnswer, (RemoteError, Option<Duration>)> {
        let url = format!("{}/chat/completions", self.settings.base_url);
        let mut request = self.http.post(&url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| (transport(e, self.settings.timeout), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response
            .text()
            .await
            .map_err(|e| (transport(e, self.settings.timeout), None))?;
        if !status.is_success() {
            // Providers quote a rejected key back in their error message; it must not reach
            // fallback reasons, logs or the run's history.
            let text = match key {
                Some(key) if !key.is_empty() => text.replace(key, "[REDACTED:api_key]"),
                _ => text,
            };
            let detail: String = text.chars().take(200).collect();
            return Err((
                RemoteError::Status {
                    status: status.as_u16(),
                    detail,
                },
                retry_after,
            ));
        }
        parse_completion(&text).map_err(|e| (e, None))
    }

    fn check_breaker(&self) -> Result<(), RemoteError> {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = breaker.open_until {
            let now = Instant::now();
            if now < until {
                return Err(RemoteError::CircuitOpen(until - now));
            }
            // Half-open: this one call goes through as a probe; calls alongside it still see
            // the circuit open until the probe succeeds (which closes it) or fails (which
            // keeps it open for another cool-down).
            breaker.open_until = Some(now + self.settings.breaker_cool_down);
            breaker.consecutive_failures = self.settings.breaker_failures.saturating_sub(1);
        }
        Ok(())
    }

    fn record(&self, success: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            breaker.consecutive_failures = 0;
            breaker.open_until = None;
            return;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.settings.breaker_failures {
            tracing::warn!(cool_down = ?self.settings.breaker_cool_down, "remote tier failing: circuit opened");
            breaker.open_until = Some(Instant::now() + self.settings.breaker_cool_down);
        }
    }
}

fn transport(error: reqwest::Error, timeout: Duration) -> RemoteError {
    if error.is_timeout() {
        RemoteError::Timeout(timeout)
    } else if error.is_decode() || error.is_body() {
        RemoteError::Malformed(format!("unreadable body: {error}"))
    } else {
        RemoteError::Transport(error.to_string())
    }
}

fn parse_completion(text: &str) -> Result<RemoteAnswer, RemoteError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| RemoteError::Malformed(format!("not JSON: {e}")))?;
    let content = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| RemoteError::Malformed("no choices[0].message.content".into()))?;
    let usage = |field: &str| {
        value
            .pointer(&format!("/usage/{field}"))
            .and_then(Value::as_u64)
    };
    Ok(RemoteAnswer {
        text: content.to_string(),
        prompt_tokens: usage("prompt_tokens"),
        completion_tokens: usage("completion_tokens"),
    })
}
