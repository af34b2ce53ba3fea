//! A fake OpenAI-compatible API: a real HTTP server on 127.0.0.1 (axum, in this process) that
//! speaks the `/v1/chat/completions` wire format and can be told to misbehave.
//!
//! A hosted API cannot exist on the test machine, so this stand-in is the one allowed by
//! `DESIGN.md` ("Real parts, not stand-ins"): it talks HTTP over a socket exactly as the
//! provider does. It records every request body as received (raw bytes, for leak searches),
//! counts connections and requests, and totals the token usage it reported.
//!
//! What it answers is chosen per request: the next [`Reply`] queued with
//! [`FakeOpenAi::script`], else the standing [`FakeOpenAi::set_mode`].

#![allow(dead_code)] // Each test file uses the part it needs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

/// The model name the server reports back.
pub const MODEL: &str = "fake-gpt";

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a valid `assess_risk` answer and usage numbers.
    Normal,
    /// 200 with this text as the assistant's content.
    Content(String),
    /// Waits this long, then answers normally (longer than the client's timeout: a hang).
    Slow(Duration),
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// 500 with an OpenAI-style error body.
    ServerError,
    /// 401 whose message echoes the bearer token it was given, as some proxies do.
    Unauthorized,
    /// 200 whose body is not JSON.
    MalformedJson,
    /// 200 declaring a `Content-Length` larger than what is sent; the connection is then cut.
    Truncated,
    /// 200 with a well-formed completion whose content breaks the task's schema.
    BreaksSchema,
    /// 200 with a normal answer whose `usage` claims these prompt and completion tokens.
    ReportsUsage(u64, u64),
    /// 429 with `Retry-After` set to this many seconds.
    RetryAfter(u64),
    /// 200 with a valid `assess_risk` answer whose reasons quote the bearer token it was sent,
    /// as a misbehaving proxy or a prompt-injected model might.
    EchoesKey,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The body exactly as it arrived on the socket.
    pub body: Bytes,
    /// The body parsed (`Null` if it was not JSON).
    pub json: Value,
    pub authorization: Option<String>,
    pub path: String,
    pub at: Instant,
}

impl Received {
    /// The `content` of every message, in order.
    pub fn contents(&self) -> Vec<String> {
        self.json["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Reply>>,
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    /// Added to every reply, so concurrent callers really overlap.
    latency: Mutex<Duration>,
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// How many bytes of a message make one token when usage is counted (4 by default; 1 or
    /// 2 for a provider whose tokenizer is denser than the client can know).
    bytes_per_token: AtomicUsize,
    /// Sum of `usage.total_tokens` over every response sent.
    usage_total: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running server; stopped when dropped.
pub struct FakeOpenAi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Binds 127.0.0.1 on a free port and serves in a task of the current runtime.
    pub async fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let counted = Arc::clone(&shared);
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .fallback(other)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake OpenAI server stopped: {error}");
            }
        });
        FakeOpenAi { addr, shared, task }
    }

    /// What goes in `llm.remote.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The standing answer for requests with nothing scripted.
    pub fn set_mode(&self, reply: Reply) {
        *lock(&self.shared.mode) = Some(reply);
    }

    /// Queues answers for the next requests, in order, ahead of the standing mode.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.script).extend(replies);
    }

    /// Counts usage as a tokenizer with this many bytes per token would.
    pub fn set_bytes_per_token(&self, bytes: usize) {
        self.shared
            .bytes_per_token
            .store(bytes.max(1), Ordering::SeqCst);
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Total tokens the server has billed (the `usage.total_tokens` it reported).
    pub fn usage_total(&self) -> u64 {
        self.shared.usage_total.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer a real model would give to `assess_risk`.
pub fn normal_content() -> String {
    json!({
        "level": "high",
        "score": 80,
        "reasons": ["touches the authentication middleware"],
        "strategy": "canary"
    })
    .to_string()
}

/// Well-formed JSON that breaks the `assess_risk` schema (unknown level, missing fields).
pub fn schema_breaking_content() -> String {
    json!({ "level": "extreme", "score": 180 }).to_string()
}

async fn other(
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    record(&shared, &headers, uri.path(), &body);
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("Unknown path {}", uri.path()),
    )
}

fn record(shared: &Shared, headers: &HeaderMap, path: &str, body: &Bytes) {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json = serde_json::from_slice(body).unwrap_or(Value::Null);
    lock(&shared.received).push(Received {
        body: body.clone(),
        json,
        authorization,
        path: path.to_string(),
        at: Instant::now(),
    });
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &headers, "/v1/chat/completions", &body);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = lock(&shared.script)
        .pop_front()
        .or_else(|| lock(&shared.mode).clone())
        .unwrap_or(Reply::Normal);
    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match reply {
        Reply::Normal => completion(&shared, &request, normal_content()),
        Reply::Content(content) => completion(&shared, &request, content),
        Reply::BreaksSchema => completion(&shared, &request, schema_breaking_content()),
        Reply::ReportsUsage(prompt, completion_tokens) => {
            let mut body = completion_body(&shared, &request, normal_content());
            body["usage"] = json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens
            });
            shared
                .usage_total
                .fetch_add(prompt + completion_tokens, Ordering::SeqCst);
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Reply::RetryAfter(seconds) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            );
            if let Ok(value) = header::HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Reply::EchoesKey => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            let content = json!({
                "level": "high",
                "score": 70,
                "reasons": [format!("authenticated with {given}")],
                "strategy": "canary"
            })
            .to_string();
            completion(&shared, &request, content)
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            completion(&shared, &request, normal_content())
        }
        Reply::TooManyRequests => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
        Reply::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request.",
        ),
        Reply::Unauthorized => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                &format!("Incorrect API key provided: {given}."),
            )
        }
        Reply::MalformedJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"id\": \"chatcmpl-1\", \"choices\": [{\"message\": <html>Bad Gateway</html>",
        )
            .into_response(),
        Reply::Truncated => {
            let full = completion_body(&shared, &request, normal_content()).to_string();
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            // Half the body, a pause (so it is flushed), then an error: hyper cuts the connection
            // short of the declared length.
            let chunks = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("connection cut on purpose")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, full.len().to_string())
                .body(Body::from_stream(chunks))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({ "error": { "message": message, "type": code, "param": null, "code": code } });
    (status, axum::Json(body)).into_response()
}

fn completion(shared: &Shared, request: &Value, content: String) -> Response {
    let body = completion_body(shared, request, content);
    let total = body["usage"]["total_tokens"].as_u64().unwrap_or(0);
    shared.usage_total.fetch_add(total, Ordering::SeqCst);
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A `chat.completion` object. Usage is counted the way a BPE tokenizer would: a token per
/// `bytes_per_token` bytes of each message (4 unless set) plus 4 for its framing, and the
/// answer's tokens capped by the request's `max_tokens`.
fn completion_body(shared: &Shared, request: &Value, content: String) -> Value {
    let density = match shared.bytes_per_token.load(Ordering::SeqCst) {
        0 => 4,
        set => set,
    };
    let prompt_tokens: u64 = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            m["content"]
                .as_str()
                .unwrap_or_default()
                .len()
                .div_ceil(density) as u64
                + 4
        })
        .sum();
    let max_tokens = request["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let completion_tokens = (content.len().div_ceil(density) as u64).min(max_tokens);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": format!("chatcmpl-fake{id}"),
        "object": "chat.completion",
        "created": created,
        "model": request["model"].as_str().unwrap_or(MODEL),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}
