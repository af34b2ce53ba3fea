//! demo-service: a std-only HTTP server for Cairn's build and deploy demos.
//!
//! `GET /` says hello (and is where a "bad version" misbehaves), `GET /healthz` is the
//! liveness check, `GET /metrics` is Prometheus text with request counters and a latency
//! histogram, which the monitor reads to decide on a rollback.
//!
//! Environment: `PORT` (8080), `DEMO_VERSION` (shown in answers and metrics),
//! `DEMO_ERROR_RATE` (0.0–1.0: the share of `/` requests answered 500) and
//! `DEMO_EXTRA_LATENCY_MS` (added to every `/` request): the last two make a bad version.

mod config;
mod http;
mod metrics;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::Config;
use metrics::Metrics;

/// Connections served at once; more wait in the kernel's backlog.
const WORKERS: usize = 16;

fn main() {
    let config = match Config::from_env(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("demo-service: {message}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", config.port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "demo-service: failed to listen on port {}: {error}",
                config.port
            );
            std::process::exit(1);
        }
    };
    eprintln!(
        "demo-service {} listening on :{} (error rate {}, extra latency {} ms)",
        config.version, config.port, config.error_rate, config.extra_latency_ms
    );
    let state = Arc::new(State {
        metrics: Metrics::new(),
        config,
    });
    let (sender, receiver) = std::sync::mpsc::channel::<TcpStream>();
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    for _ in 0..WORKERS {
        let (receiver, state) = (receiver.clone(), state.clone());
        std::thread::spawn(move || {
            loop {
                // A poisoned lock means another worker panicked; this one can still serve.
                let next = match receiver.lock() {
                    Ok(guard) => guard.recv(),
                    Err(poisoned) => poisoned.into_inner().recv(),
                };
                match next {
                    Ok(stream) => serve(stream, &state),
                    Err(_) => return,
                }
            }
        });
    }
    for stream in listener.incoming().flatten() {
        if sender.send(stream).is_err() {
            break;
        }
    }
}

struct State {
    metrics: Metrics,
    config: Config,
}

/// Serves the requests of one connection (keep-alive), until the client closes it or idles.
fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    loop {
        let request = match http::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let started = Instant::now();
        let (status, content_type, body) = route(&request.path, state);
        let response = http::response(status, content_type, &body, request.keep_alive);
        if writer.write_all(&response).is_err() {
            return;
        }
        state
            .metrics
            .observe(&request.path, status, started.elapsed());
        if !request.keep_alive {
            return;
        }
        if reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
            return;
        }
    }
}

fn route(path: &str, state: &State) -> (u16, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/" => {
            if state.config.extra_latency_ms > 0 {
                std::thread::sleep(Duration::from_millis(state.config.extra_latency_ms));
            }
            if state.metrics.roll() < state.config.error_rate {
                (
                    500,
                    "text/plain",
                    format!("demo-service {}: injected failure\n", state.config.version),
                )
            } else {
                (
                    200,
                    "text/plain",
                    format!("hello from demo-service {}\n", state.config.version),
                )
            }
        }
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            state.metrics.render(&state.config.version),
        ),
        _ => (404, "text/plain", "not found\n".to_string()),
    }
}
