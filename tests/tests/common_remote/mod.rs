//! A stand-in for a hosted OpenAI-compatible API (the one thing that cannot exist on the test
//! machine): a real HTTP/1.1 server on 127.0.0.1 answering `/v1/chat/completions` in the
//! provider's wire format, a thread per connection, that records every request and bills
//! usage as a tokenizer of a chosen density would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A valid `assess_risk` answer proposing `high`.
    Answer,
    /// Reads the request and never answers (until the client gives up).
    Hang,
    /// A valid answer whose reasons quote the bearer token it was sent.
    EchoKey,
}

struct Shared {
    mode: Mutex<Mode>,
    bytes_per_token: u64,
    latency: Duration,
    requests: AtomicU64,
    billed: AtomicU64,
    bodies: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<String>>,
}

pub struct FakeRemote {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FakeRemote {
    /// Bills a token per `bytes_per_token` bytes of each message (plus 4 per message) and
    /// answers after `latency`, so concurrent callers really overlap.
    pub fn start(mode: Mode, bytes_per_token: u64, latency: Duration) -> FakeRemote {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            bytes_per_token: bytes_per_token.max(1),
            latency,
            requests: AtomicU64::new(0),
            billed: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
        });
        let accepted = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&accepted);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeRemote { port, shared }
    }

    /// Changes how the following requests are answered.
    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut current) = self.shared.mode.lock() {
            *current = mode;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Tokens billed: the `usage.total_tokens` of every answer sent.
    pub fn billed(&self) -> u64 {
        self.shared.billed.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.shared
            .bodies
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    pub fn authorizations(&self) -> Vec<String> {
        self.shared
            .authorizations
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut authorization = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_string();
        }
        line.clear();
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Ok(mut bodies) = shared.bodies.lock() {
        bodies.push(text.clone());
    }
    if let Ok(mut seen) = shared.authorizations.lock() {
        seen.push(authorization.clone());
    }
    let mode = shared.mode.lock().map(|m| *m).unwrap_or(Mode::Answer);
    let mut stream = reader.into_inner();
    if mode == Mode::Hang {
        // Hold the connection until the client hangs up (or ten minutes pass).
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let started = Instant::now();
        let mut byte = [0u8; 1];
        while started.elapsed() < Duration::from_secs(600) {
            match stream.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        return;
    }
    std::thread::sleep(shared.latency);
    let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
    let reasons = match mode {
        Mode::EchoKey => vec![format!("authenticated with {token}")],
        _ => vec!["touches request handling".to_string()],
    };
    let answer =
        json!({"level": "high", "score": 77, "reasons": reasons, "strategy": "canary"}).to_string();
    let density = shared.bytes_per_token;
    let prompt: u64 = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["content"].as_str().unwrap_or_default().len() as u64).div_ceil(density) + 4)
        .sum();
    let max_tokens = request["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let completion = (answer.len() as u64).div_ceil(density).min(max_tokens);
    shared
        .billed
        .fetch_add(prompt + completion, Ordering::SeqCst);
    let response = json!({
        "id": "chatcmpl-e2e", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
    .to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{response}",
        response.len()
    );
}
