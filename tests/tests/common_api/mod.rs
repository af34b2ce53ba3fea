//! Helpers of the HTTP service tests: start `cairn serve --listen 127.0.0.1:0`, read the
//! address it printed, make tokens, and talk HTTP to it (reqwest, blocking).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::Value;

use cairn_tests::{Running, Sandbox};

/// A running `cairn serve --listen` and its base url.
pub struct Service {
    pub running: Running,
    pub base: String,
    pub client: Client,
}

/// Starts `cairn serve ARGS --listen 127.0.0.1:0` and waits for its address.
pub fn serve(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Service {
    let mut all: Vec<&str> = vec!["serve"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    let mut running = sandbox.spawn_with_env(&all, env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let output = running.output();
        // Only whole lines: the file may be read while the address is half written.
        let whole = output
            .stderr
            .rsplit_once('\n')
            .map_or("", |(lines, _)| lines);
        if let Some(rest) = whole
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
            .filter(|address| !address.trim().is_empty())
        {
            break rest.trim().to_string();
        }
        if output.code.is_some() || Instant::now() > deadline {
            panic!("`cairn serve --listen` did not start listening\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("failed to build an HTTP client");
    Service {
        running,
        base,
        client,
    }
}

/// `cairn token create --scope SCOPE`: the token printed.
pub fn token(sandbox: &Sandbox, scope: &str) -> String {
    let out = sandbox.cairn(&["token", "create", "--scope", scope, "--name", "test"]);
    assert_eq!(out.code, Some(0), "{out}");
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("cairn_"), "{out}");
    token
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().expect("GET failed")
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().expect("POST failed")
    }

    /// GET expecting 200 and JSON.
    pub fn json(&self, path: &str, token: Option<&str>) -> Value {
        let response = self.get(path, token);
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert_eq!(status.as_u16(), 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Follows the live log stream of a run until its `end` event: (log lines, end data).
    pub fn follow_logs(&self, run_id: i64, token: &str) -> (Vec<Value>, Value) {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/runs/{run_id}/logs/stream")))
            .bearer_auth(token)
            .timeout(Duration::from_secs(120))
            .send()
            .expect("stream request failed");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let mut lines = Vec::new();
        let mut event = String::new();
        for line in BufReader::new(response).lines() {
            let line = line.expect("failed to read the event stream");
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(data).expect("event data is JSON");
                match event.as_str() {
                    "log" => lines.push(data),
                    "end" => return (lines, data),
                    other => panic!("unexpected event `{other}`"),
                }
            }
        }
        panic!("the event stream ended without an `end` event");
    }
}

/// Waits until `run_id`'s state (through the API) is terminal; returns it.
pub fn wait_finished(service: &Service, run_id: i64, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = service.json(&format!("/api/v1/runs/{run_id}"), Some(token));
        let state = run["run"]["state"].as_str().unwrap_or("").to_string();
        if state != "running" {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not finish: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
