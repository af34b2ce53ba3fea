//! The AI pipeline's analysis over a sample repository's commits with a remote tier
//! configured: how many commits needed the remote, the remote tokens one pass spends, and that
//! a second pass over the same commits spends none (response cache). The remote is a stand-in
//! for a hosted API that speaks the OpenAI `/v1/chat/completions` wire format over a socket.

mod common_git;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_tests::Sandbox;
use common_git::Repo;
use serde_json::{Value, json};

/// Answers every completion with a risk assessment proposing `high`; counts requests and the
/// tokens it bills (1 per 4 bytes of request body, 40 for the answer).
struct FakeRemote {
    port: u16,
    requests: Arc<AtomicU64>,
    billed: Arc<AtomicU64>,
}

fn fake_remote() -> FakeRemote {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let requests = Arc::new(AtomicU64::new(0));
    let billed = Arc::new(AtomicU64::new(0));
    let (count, bill) = (requests.clone(), billed.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let prompt = (body.len() / 4) as u64;
            bill.fetch_add(prompt + 40, Ordering::SeqCst);
            let answer = json!({"level": "high", "score": 77, "reasons": ["touches request handling"], "strategy": "canary"});
            let response = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.to_string()}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 40, "total_tokens": prompt + 40}
            })
            .to_string();
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{response}",
                response.len()
            );
        }
    });
    FakeRemote {
        port,
        requests,
        billed,
    }
}

#[test]
fn a_second_pass_over_the_same_commits_spends_no_remote_tokens() {
    let remote = fake_remote();
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!("llm:\n  remote:\n    base_url: http://127.0.0.1:{}/v1\n    model: fake\n    timeout: 5s\n  prices:\n    remote: {{ input: 0.15, output: 0.60 }}\n", remote.port),
    )
    .expect("config");
    let repo = Repo::init(&sandbox.path("sample"));
    let mut commits = vec![
        repo.commit_file("README.md", "# app\n", "readme"),
        repo.commit_file("README.md", "# app\n\nA tiny app.\n", "docs"),
        repo.commit_file(
            "src/main.rs",
            "fn main() { println!(\"hi\"); }\n",
            "feature",
        ),
        repo.commit_file("src/api.rs", "pub fn get() -> u32 { 1 }\n", "api"),
        repo.commit_file(
            "db/migrations/0001.sql",
            "CREATE TABLE t (id INT);\n",
            "migration",
        ),
        repo.commit_file("config/app.toml", "port = 8080\n", "config"),
    ];
    commits.remove(0);
    let workflow = sandbox.write(
        "analyze.yaml",
        "name: analyze\nsteps:\n  - id: analyze\n    agent: orchestrator\n",
    );
    let pass = |label: &str| -> (u64, u64, usize) {
        let (requests_before, billed_before) = (
            remote.requests.load(Ordering::SeqCst),
            remote.billed.load(Ordering::SeqCst),
        );
        let mut raised = 0;
        for commit in &commits {
            let output = sandbox.cairn(&[
                "run",
                workflow.to_str().unwrap_or_default(),
                "--repo",
                &repo.url(),
                "--commit",
                commit,
                "-q",
            ]);
            assert_eq!(output.code, Some(0), "{output}");
            let status = sandbox.cairn(&["status", &output.run_id().to_string(), "--json"]);
            let document: Value =
                serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{status}"));
            let outputs = &document["steps"][0]["outputs"];
            if outputs["decided_by"] == "remote" {
                raised += 1;
            }
        }
        let requests = remote.requests.load(Ordering::SeqCst) - requests_before;
        let billed = remote.billed.load(Ordering::SeqCst) - billed_before;
        eprintln!(
            "{label}: {} commits, {requests} remote requests, {billed} remote tokens, {raised} levels raised by the remote",
            commits.len()
        );
        (requests, billed, raised)
    };
    let (first_requests, first_tokens, raised) = pass("first pass");
    // docs-only (certain) and the migration (floor already high) never ask the remote.
    assert_eq!(
        first_requests, 3,
        "feature, api and config need the remote; docs and migration do not"
    );
    assert!(first_tokens > 0);
    assert_eq!(raised, 3, "the remote may raise medium to high");
    let (second_requests, second_tokens, _) = pass("second pass (cache)");
    assert_eq!(
        (second_requests, second_tokens),
        (0, 0),
        "the cache answers every repeated question"
    );

    let costs = sandbox.cairn(&["costs", "--json"]);
    let rows: Value =
        serde_json::from_str(&costs.stdout).unwrap_or_else(|e| panic!("{e}\n{costs}"));
    let remote_rows: Vec<&Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["tier"] == "remote")
        .collect();
    let tokens: u64 = remote_rows
        .iter()
        .filter_map(|r| r["tokens"].as_u64())
        .sum();
    let hits: u64 = remote_rows
        .iter()
        .filter_map(|r| r["cache_hits"].as_u64())
        .sum();
    let saved: i64 = remote_rows
        .iter()
        .filter_map(|r| r["saved_micros"].as_i64())
        .sum();
    assert_eq!(
        tokens, first_tokens,
        "cairn costs reports what the remote billed"
    );
    assert_eq!(hits, 3);
    assert!(saved > 0, "{costs}");
    eprintln!(
        "cairn costs: {tokens} remote tokens spent, {hits} cache hits saving {saved} micro-units"
    );
}
