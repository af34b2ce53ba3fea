//! The HTTP service of `cairn serve --listen` end to end, over real HTTP on 127.0.0.1: the
//! real binary, a real database, tokens made with `cairn token create`.
//!
//! What it proves (see `engine/src/api/`):
//!
//! - nothing is readable without a token (401), a read token reads, writing needs a write
//!   token (403 with a read token); `--public-read` opens reading only;
//! - a run started through the API is driven by the serving engine; its logs arrive live over
//!   Server-Sent Events and end with the run's state; the run shows its steps, attempts and
//!   DAG edges; filters select runs; a running run is cancelled through the API;
//! - responses never carry a secret a step printed (the redaction);
//! - every route of the OpenAPI document answers (no route missing), and `/metrics` is valid
//!   Prometheus text (checked by `promtool`) with the runs counted.

mod common_api;

use std::time::Duration;

use serde_json::json;

use cairn_tests::{Sandbox, wait_until};
use common_api::{serve, token, wait_finished};

const SECRET: &str = "Zq8vLm2RtY7wXp4KhN3s";

fn workflows(sandbox: &Sandbox) -> String {
    std::fs::create_dir_all(sandbox.path("flows")).expect("create flows/");
    sandbox.write(
        "flows/hello.yaml",
        &format!(
            "name: hello\nsteps:\n  - id: greet\n    run: |\n      echo 'hello from greet'\n      \
             echo 'password={SECRET}'\n      echo 'done greeting'\n  - id: after\n    \
             depends_on: greet\n    run: echo 'second step'\n"
        ),
    );
    sandbox.write(
        "flows/slow.yaml",
        "name: slow\nsteps:\n  - id: nap\n    run: |\n      echo 'napping'\n      sleep 60\n",
    );
    sandbox.path("flows").display().to_string()
}

#[test]
fn api_starts_follows_filters_and_cancels_runs_with_tokens() {
    let sandbox = Sandbox::new();
    let flows = workflows(&sandbox);
    let reader = token(&sandbox, "read");
    let writer = token(&sandbox, "write");
    let service = serve(&sandbox, &[&flows, "-q"], &[]);

    // Access control.
    assert_eq!(service.get("/api/v1/runs", None).status().as_u16(), 401);
    assert_eq!(service.get("/metrics", None).status().as_u16(), 401);
    assert_eq!(
        service
            .get("/api/v1/runs", Some("cairn_not_a_token"))
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        service.json("/api/v1/runs", Some(&reader))["runs"],
        json!([])
    );
    let refused = service.post(
        "/api/v1/runs",
        Some(&reader),
        &json!({ "workflow": "hello" }),
    );
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(
        service
            .post("/api/v1/runs", None, &json!({ "workflow": "hello" }))
            .status()
            .as_u16(),
        401
    );
    let unknown = service.post(
        "/api/v1/runs",
        Some(&writer),
        &json!({ "workflow": "nope" }),
    );
    assert_eq!(unknown.status().as_u16(), 400);
    let message = unknown.text().unwrap_or_default();
    assert!(
        message.contains("no workflow named `nope`") && message.contains("hello"),
        "{message}"
    );

    // Start a run and follow its logs live.
    let started = service.post(
        "/api/v1/runs",
        Some(&writer),
        &json!({ "workflow": "hello" }),
    );
    assert_eq!(started.status().as_u16(), 201);
    let run_id = started.json::<serde_json::Value>().expect("JSON")["run_id"]
        .as_i64()
        .expect("a run id");
    let (lines, end) = service.follow_logs(run_id, &reader);
    assert_eq!(end["state"], "succeeded", "{lines:?}");
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    assert!(texts.contains(&"hello from greet"), "{texts:?}");
    assert!(texts.contains(&"second step"), "{texts:?}");
    let seqs: Vec<i64> = lines.iter().filter_map(|l| l["seq"].as_i64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each line once, in order: {seqs:?}"
    );
    assert!(
        !format!("{lines:?}").contains(SECRET),
        "the secret reached the stream"
    );

    // The run in detail.
    let detail = service.json(&format!("/api/v1/runs/{run_id}"), Some(&reader));
    assert_eq!(detail["run"]["state"], "succeeded");
    assert_eq!(detail["run"]["workflow"], "hello");
    let steps: Vec<&str> = detail["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step_id"].as_str())
        .collect();
    assert_eq!(steps, ["greet", "after"]);
    assert_eq!(detail["edges"], json!([{ "from": "greet", "to": "after" }]));
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(2));
    let text = service
        .get(&format!("/api/v1/runs/{run_id}/logs.txt"), Some(&reader))
        .text()
        .expect("text");
    assert!(text.contains("greet | hello from greet"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let page = service.json(
        &format!("/api/v1/runs/{run_id}/logs?step=after"),
        Some(&reader),
    );
    assert_eq!(page["lines"][0]["line"], "second step");
    let missing = service.get("/api/v1/runs/9999", Some(&reader));
    assert_eq!(missing.status().as_u16(), 404);

    // Cancel a running run through the API.
    let slow = service.post(
        "/api/v1/runs",
        Some(&writer),
        &json!({ "workflow": "slow" }),
    );
    assert_eq!(slow.status().as_u16(), 201);
    let slow_id = slow.json::<serde_json::Value>().expect("JSON")["run_id"]
        .as_i64()
        .expect("a run id");
    wait_until("the slow run to print", Duration::from_secs(60), || {
        let page = service.json(&format!("/api/v1/runs/{slow_id}/logs"), Some(&reader));
        page["lines"].as_array().is_some_and(|l| !l.is_empty())
    });
    let cancel = service.post(
        &format!("/api/v1/runs/{slow_id}/cancel"),
        Some(&writer),
        &json!({}),
    );
    assert_eq!(cancel.status().as_u16(), 202);
    assert_eq!(wait_finished(&service, slow_id, &reader), "cancelled");
    let again = service.post(
        &format!("/api/v1/runs/{slow_id}/cancel"),
        Some(&writer),
        &json!({}),
    );
    assert_eq!(again.status().as_u16(), 409);

    // Filters.
    let count = |query: &str| {
        service.json(&format!("/api/v1/runs?{query}"), Some(&reader))["runs"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(""), 2);
    assert_eq!(count("workflow=hello"), 1);
    assert_eq!(count("state=cancelled"), 1);
    assert_eq!(count("state=succeeded&workflow=slow"), 0);
    assert_eq!(count("limit=1"), 1);
    let bad = service.get("/api/v1/runs?state=bogus", Some(&reader));
    assert_eq!(bad.status().as_u16(), 400);

    // Metrics: valid exposition text, the runs counted.
    let metrics = service.get("/metrics", Some(&reader)).text().expect("text");
    assert!(
        metrics.contains("cairn_runs{state=\"succeeded\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_runs{state=\"cancelled\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_step_duration_seconds_count 3\n"),
        "{metrics}"
    );
    let checked = promtool_check(&sandbox, &metrics);
    assert!(checked.0, "promtool check metrics: {}", checked.1);
}

/// `promtool check metrics` over the text (installed with prometheus by scripts/setup.sh).
fn promtool_check(sandbox: &Sandbox, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .current_dir(sandbox.root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits non-zero for lint hints too (e.g. counters named without `_total`);
    // only parse errors matter here.
    (out.status.success() || !report.contains("error"), report)
}

#[test]
fn every_documented_route_answers_and_public_read_opens_reading_only() {
    let sandbox = Sandbox::new();
    let flows = workflows(&sandbox);
    let service = serve(&sandbox, &[&flows, "-q", "--public-read"], &[]);
    let doc = service.json("/api/v1/openapi.json", None);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{paths:?}");
    for (path, methods) in paths {
        let concrete = path.replace("{run_id}", "1");
        for method in methods.as_object().expect("methods").keys() {
            let response = match method.as_str() {
                "get" => service.get(&concrete, None),
                "post" => service.post(&concrete, None, &json!({})),
                other => panic!("unexpected method {other}"),
            };
            let status = response.status().as_u16();
            let body = response.text().unwrap_or_default();
            // A route that does not exist is axum's bare 404 or a 405; every real route
            // answers with its own body (data, or a JSON error).
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path}: {status} {body:?}"
            );
            if method == "get" && !concrete.contains("/runs/1") {
                assert_eq!(status, 200, "public read of {path}: {body}");
            }
            if method == "post" && concrete.starts_with("/api/") {
                assert_eq!(status, 401, "{path} must need a write token: {body}");
            }
        }
    }
}
