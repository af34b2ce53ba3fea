//! The remote tier: an OpenAI-compatible `/v1/chat/completions` client with per-attempt
//! timeouts, a deadline for the whole call, retries with exponential backoff and jitter on
//! 429/5xx/connection failures (honouring `Retry-After` up to a cap), and a circuit breaker.
//!
//! Every message is redacted here, in [`RemoteClient::chat`], the only function that sends
//! text off the machine; if the redaction rules did not compile, nothing is sent. Every answer
//! (2xx or not) has the API key scrubbed out before anyone sees it, so a provider echoing the
//! key cannot put it in reasons, logs, the call history or the cache.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::config::RemoteSettings;
use super::redact::{RedactError, Redactor};

/// The longest `Retry-After` we are willing to sit through inside one pipeline step.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// An attempt with less time than this before the deadline is not started.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("circuit open after repeated failures; closed again in {0:?}")]
    CircuitOpen(Duration),
    #[error("the API key variable `{0}` is not set")]
    MissingKey(String),
    #[error("{0}")]
    Redaction(String),
    #[error("HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error(
        "HTTP {status}: {detail}; the provider asked to retry after {wait:?}, beyond the {cap:?} cap"
    )]
    RetryAfterBeyondCap {
        status: u16,
        detail: String,
        wait: Duration,
        cap: Duration,
    },
    #[error("{error}; not retried: the next try (in {wait:?}) would pass the call's deadline")]
    NoTimeToRetry {
        error: Box<RemoteError>,
        wait: Duration,
    },
    #[error("{error}; not retried: {reason}")]
    RetryRefused {
        error: Box<RemoteError>,
        reason: String,
    },
    #[error("no time left for the remote before the deadline")]
    NoTime,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection refused: nothing answers at {0}")]
    Refused(String),
    #[error("connection reset by the remote: {0}")]
    Reset(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The last failure of a call that tried more than once: the reason then says how long
    /// the whole call took, not only its last attempt (`timed out after 3.3s` alone would
    /// hide 45 s of waiting).
    #[error("{error} ({attempts} attempts in {elapsed:.1?})")]
    GaveUp {
        error: Box<RemoteError>,
        attempts: u32,
        elapsed: Duration,
    },
}

impl RemoteError {
    /// The provider may have done (and billed) the work: the answer timed out or arrived
    /// unreadable. Such calls are charged at their reservation, not handed back.
    /// `error` as the end of a call that made `attempts` attempts since `started`.
    fn after(self, attempts: u32, started: Instant) -> RemoteError {
        if attempts < 2 {
            return self;
        }
        RemoteError::GaveUp {
            error: Box::new(self),
            attempts,
            elapsed: started.elapsed(),
        }
    }

    pub fn maybe_billed(&self) -> bool {
        match self {
            RemoteError::Timeout(_) | RemoteError::Malformed(_) | RemoteError::Reset(_) => true,
            RemoteError::NoTimeToRetry { error, .. }
            | RemoteError::RetryRefused { error, .. }
            | RemoteError::GaveUp { error, .. } => error.maybe_billed(),
            _ => false,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            RemoteError::Status { status, .. } => *status == 429 || *status >= 500,
            RemoteError::Timeout(_)
            | RemoteError::Transport(_)
            | RemoteError::Refused(_)
            | RemoteError::Reset(_) => true,
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
    redactor: Result<Redactor, RedactError>,
    breaker: Mutex<Breaker>,
}

impl RemoteClient {
    pub fn new(settings: RemoteSettings) -> Result<RemoteClient, String> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("failed to build the HTTP client: {e}"))?;
        let redactor = Redactor::new(&settings.redact_patterns);
        if let Err(error) = &redactor {
            tracing::error!(%error, "remote tier disabled");
        }
        Ok(RemoteClient {
            http,
            settings,
            redactor,
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

    /// Redacts `messages`: exactly what [`RemoteClient::chat`] would send, so the caller's
    /// cache key and budget estimate are computed over it.
    pub fn outbound(&self, messages: &[Message]) -> Result<Vec<Message>, RemoteError> {
        let redactor = self
            .redactor
            .as_ref()
            .map_err(|e| RemoteError::Redaction(e.to_string()))?;
        Ok(messages
            .iter()
            .map(|m| Message {
                role: m.role,
                content: redactor.redact(&m.content).text,
            })
            .collect())
    }

    /// Sends `messages` (redacted here) and returns the answer, trying until `until` at the
    /// latest. Before retrying after an attempt the provider may have billed, `before_retry`
    /// must agree (it extends the call's budget reservation); its refusal ends the call.
    pub async fn chat(
        &self,
        messages: &[Message],
        max_tokens: usize,
        schema: Option<&Value>,
        until: Instant,
        before_retry: &mut (dyn FnMut() -> Result<(), String> + Send),
    ) -> Result<RemoteAnswer, RemoteError> {
        let outbound = self.outbound(messages)?;
        self.check_breaker()?;
        let key = match &self.settings.api_key_env {
            Some(variable) => Some(
                std::env::var(variable).map_err(|_| RemoteError::MissingKey(variable.clone()))?,
            ),
            None => None,
        };
        let mut body = json!({
            "model": self.settings.model,
            "messages": outbound,
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
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < MIN_ATTEMPT {
                self.record(false);
                return Err(RemoteError::NoTime.after(attempt, started));
            }
            // Whole milliseconds: the reason reads `timed out after 1.987s`, not nanoseconds.
            let timeout = Duration::from_millis(self.settings.timeout.min(left).as_millis() as u64);
            let result = self.send(&body, key.as_deref(), timeout).await;
            let (error, retry_after) = match result {
                Ok(answer) => {
                    self.record(true);
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            if !error.retryable() || attempt >= self.settings.retries {
                self.record(false);
                return Err(error.after(attempt + 1, started));
            }
            attempt += 1;
            let backoff = Duration::from_millis(250u64 << attempt.min(6));
            let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
            let wait = retry_after.unwrap_or(backoff + jitter);
            if wait > MAX_RETRY_AFTER {
                self.record(false);
                let (status, detail) = match error {
                    RemoteError::Status { status, detail } => (status, detail),
                    other => (0, other.to_string()),
                };
                return Err(RemoteError::RetryAfterBeyondCap {
                    status,
                    detail,
                    wait,
                    cap: MAX_RETRY_AFTER,
                }
                .after(attempt, started));
            }
            if Instant::now() + wait + MIN_ATTEMPT > until {
                self.record(false);
                return Err(RemoteError::NoTimeToRetry {
                    error: Box::new(error),
                    wait,
                }
                .after(attempt, started));
            }
            if error.maybe_billed()
                && let Err(reason) = before_retry()
            {
                self.record(false);
                return Err(RemoteError::RetryRefused {
                    error: Box::new(error),
                    reason,
                }
                .after(attempt, started));
            }
            tracing::info!(attempt, ?wait, "remote call failed ({error}); retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send(
        &self,
        body: &Value,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<RemoteAnswer, (RemoteError, Option<Duration>)> {
        let url = format!("{}/chat/completions", self.settings.base_url);
        let mut request = self.http.post(&url).json(body).timeout(timeout);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let scrub = |text: String| scrub_key(text, key);
        let response = request
            .send()
            .await
            .map_err(|e| (transport(&e, timeout, &self.settings.base_url, key), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The status line arrived: a body cut short is an unreadable answer, not a reset,
        // and not retried (the provider did, and billed, the work).
        let text = response.text().await.map_err(|e| {
            let error = match transport(&e, timeout, &self.settings.base_url, key) {
                RemoteError::Timeout(t) => RemoteError::Timeout(t),
                other => RemoteError::Malformed(format!("unreadable body: {other}")),
            };
            (error, None)
        })?;
        // Providers quote a rejected key back in their error message, and a proxy may echo
        // the whole request in a 200: the key goes before the text goes anywhere.
        let text = scrub(text);
        if !status.is_success() {
            let detail: String = text.chars().take(200).collect();
            return Err((
                RemoteError::Status {
                    status: status.as_u16(),
                    detail,
                },
                retry_after,
            ));
        }
        let mut answer = parse_completion(&text).map_err(|e| (e, None))?;
        // The content is unescaped JSON now: a key written with `\u` escapes shows here.
        answer.text = scrub(answer.text);
        Ok(answer)
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

/// Removes the API key from a text the provider sent (or an error that quotes the URL).
pub fn scrub_key(text: String, key: Option<&str>) -> String {
    match key {
        // A key this short would match ordinary text; no real provider issues one.
        Some(key) if key.len() >= 8 && text.contains(key) => {
            text.replace(key, "[REDACTED:api_key]")
        }
        _ => text,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Names the failure by what happened on the socket: refused (nothing listens), reset (the
/// remote cut an open connection), timed out, or unreadable.
fn transport(
    error: &reqwest::Error,
    timeout: Duration,
    base_url: &str,
    key: Option<&str>,
) -> RemoteError {
    if error.is_timeout() {
        return RemoteError::Timeout(timeout);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut chain = Vec::new();
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return RemoteError::Refused(base_url.to_string());
                }
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => {
                    return RemoteError::Reset(io.to_string());
                }
                _ => {}
            }
        }
        chain.push(current.to_string());
        source = current.source();
    }
    let text = scrub_key(chain.join(": "), key);
    if text.contains("connection closed before message completed") {
        return RemoteError::Reset("the connection was closed before an answer arrived".into());
    }
    if error.is_decode() || error.is_body() {
        RemoteError::Malformed(format!("unreadable body: {text}"))
    } else if error.is_connect() {
        RemoteError::Transport(format!("failed to connect: {text}"))
    } else {
        RemoteError::Transport(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).expect("a date");
        assert!(
            parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_key_is_scrubbed_and_short_keys_do_not_blank_text() {
        let key = "sk-test-0123456789abcdef";
        assert_eq!(
            scrub_key(format!("echo {key}!"), Some(key)),
            "echo [REDACTED:api_key]!"
        );
        assert_eq!(scrub_key("a b c".into(), Some("b")), "a b c");
    }
}
