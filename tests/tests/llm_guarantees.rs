//! The language-model router's guarantees, driven through the real `cairn` binary against a
//! stand-in for a hosted OpenAI-compatible API on 127.0.0.1 (`common_remote`):
//! - a token budget holds under 16 concurrent `cairn analyze` processes on one home against a
//!   provider whose tokenizer is denser than the client can know, and the spending shows in
//!   `cairn costs`;
//! - the reservation of a `cairn analyze` killed mid-call expires once its call could no
//!   longer be running;
//! - a hung remote does not fail the shipped pipeline's analyze step under default settings;
//! - an answer that echoes the API key leaves no trace of it in the database, logs or output.

mod common_git;
mod common_remote;

use std::time::{Duration, Instant};

use cairn_tests::Sandbox;
use common_git::Repo;
use common_remote::{FakeRemote, Mode};
use serde_json::Value;

/// A repository with `count` commits, each changing a Python handler differently (so no two
/// analyses share a cache key); their shas.
fn repo_with_changes(sandbox: &Sandbox, count: usize) -> (Repo, Vec<String>) {
    let repo = Repo::init(&sandbox.path("app"));
    repo.commit_file(
        "src/handler.py",
        "def handle(request):\n    return 200\n",
        "initial",
    );
    let commits = (0..count)
        .map(|n| {
            repo.commit_file(
                "src/handler.py",
                &format!("def handle(request):\n    limit = {n}\n    if request.size > limit:\n        return 413\n    return 200\n"),
                &format!("limit requests to {n}"),
            )
        })
        .collect();
    (repo, commits)
}

fn missing_model(sandbox: &Sandbox) -> String {
    sandbox.path("no-model.gguf").display().to_string()
}

#[test]
fn sixteen_processes_on_one_home_never_overspend_a_dense_tokenizer_budget() {
    const PROCESSES: usize = 16;
    const LIMIT: u64 = 3_000;
    // Two bytes a token: denser than the old bytes/3 estimate assumed.
    let remote = FakeRemote::start(Mode::Answer, 2, Duration::from_millis(300));
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!(
            "llm:\n  remote:\n    base_url: {}\n    model: fake\n    retries: 0\n  tasks:\n    assess_risk: remote\n  budgets:\n    remote: {{ day_tokens: {LIMIT} }}\n  prices:\n    remote: {{ input: 0.15, output: 0.60 }}\n  local:\n    model: {}\n",
            remote.base_url(),
            missing_model(&sandbox)
        ),
    )
    .expect("config");
    let (repo, commits) = repo_with_changes(&sandbox, PROCESSES);
    // Create the database once, so the processes race on budgets, not on migrations.
    assert_eq!(sandbox.cairn(&["costs"]).code, Some(0));
    let mut running: Vec<_> = commits
        .iter()
        .map(|commit| {
            sandbox.spawn(&[
                "analyze",
                "--repo",
                &repo.url(),
                "--commit",
                commit,
                "--json",
            ])
        })
        .collect();
    let (mut answered, mut refused) = (0u64, 0u64);
    for process in &mut running {
        assert!(
            process.wait_within(Duration::from_secs(120)).is_some(),
            "an analyze hung"
        );
        let output = process.output();
        assert_eq!(output.code, Some(0), "{output}");
        let analysis: Value =
            serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}\n{output}"));
        let calls: Vec<String> = analysis["models"]["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .filter(|c| c.starts_with("assess_risk"))
            .collect();
        assert_eq!(calls.len(), 1, "{output}");
        if calls[0] == "assess_risk: remote" {
            answered += 1;
        } else {
            assert!(calls[0].contains("budget exhausted"), "{}", calls[0]);
            refused += 1;
        }
    }
    let ledger: i64 = sandbox
        .db()
        .query_row(
            "SELECT COALESCE(SUM(tokens), 0) FROM llm_budget WHERE tier = 'remote' AND state IN ('reserved', 'settled')",
            [],
            |row| row.get(0),
        )
        .expect("ledger");
    let costs = sandbox.cairn(&["costs", "--json"]);
    assert_eq!(costs.code, Some(0), "{costs}");
    let rows: Value = serde_json::from_str(&costs.stdout).expect("costs JSON");
    let (mut remote_calls, mut remote_tokens) = (0u64, 0u64);
    for row in rows.as_array().into_iter().flatten() {
        if row["tier"] == "remote" && row["task"] == "assess_risk" {
            remote_calls += row["calls"].as_u64().unwrap_or(0);
            remote_tokens += row["tokens"].as_u64().unwrap_or(0);
        }
    }
    eprintln!(
        "budget: day_tokens {LIMIT}, {PROCESSES} concurrent `cairn analyze` processes, provider at 2 bytes/token: \
         {answered} answered remotely, {refused} refused; provider billed {}, ledger {ledger}; `cairn costs` shows {remote_calls} remote calls, {remote_tokens} tokens",
        remote.billed()
    );
    assert_eq!(answered + refused, PROCESSES as u64);
    assert!(answered > 0 && refused > 0, "the limit was meant to bind");
    assert!(
        remote.billed() <= LIMIT,
        "the provider billed {} > {LIMIT}",
        remote.billed()
    );
    assert_eq!(
        ledger as u64,
        remote.billed(),
        "the ledger settles on what the provider reported"
    );
    assert_eq!(
        remote.requests(),
        answered,
        "refused calls never reached the provider"
    );
    assert_eq!(
        (remote_calls, remote_tokens),
        (answered, remote.billed()),
        "`cairn analyze` spending shows in `cairn costs`"
    );
}

/// The `assess_risk` entries of an `analyze --json` output.
fn risk_calls(output: &str) -> Vec<String> {
    let analysis: Value = serde_json::from_str(output).unwrap_or_else(|e| panic!("{e}\n{output}"));
    analysis["models"]["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .filter(|c| c.starts_with("assess_risk"))
        .collect()
}

#[test]
fn the_reservation_of_a_process_killed_mid_call_expires() {
    const CALL_TIMEOUT_S: i64 = 3;
    let remote = FakeRemote::start(Mode::Hang, 2, Duration::ZERO);
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    let config = |day_tokens: i64| {
        std::fs::write(
            sandbox.home().join("cairn.yaml"),
            format!(
                "llm:\n  remote:\n    base_url: {}\n    model: fake\n    retries: 0\n    timeout: {CALL_TIMEOUT_S}s\n    call_timeout: {CALL_TIMEOUT_S}s\n  tasks:\n    assess_risk: remote\n  budgets:\n    remote: {{ day_tokens: {day_tokens} }}\n  local:\n    model: {}\n",
                remote.base_url(),
                missing_model(&sandbox)
            ),
        )
        .expect("config");
    };
    config(1_000_000);
    let (repo, commits) = repo_with_changes(&sandbox, 3);
    assert_eq!(sandbox.cairn(&["costs"]).code, Some(0));
    let analyze = |commit: &str| {
        sandbox.cairn_within(
            &[
                "analyze",
                "--repo",
                &repo.url(),
                "--commit",
                commit,
                "--json",
            ],
            Duration::from_secs(60),
        )
    };
    // Killed while the remote holds its request: the reservation is never settled.
    let mut dying = sandbox.spawn(&[
        "analyze",
        "--repo",
        &repo.url(),
        "--commit",
        &commits[0],
        "--json",
    ]);
    cairn_tests::wait_until(
        "the request reaches the remote",
        Duration::from_secs(60),
        || remote.requests() == 1,
    );
    assert!(dying.kill9(), "the analyze ended before it was killed");
    let (id, tokens, state, at, expires_at): (i64, i64, String, i64, i64) = sandbox
        .db()
        .query_row(
            "SELECT id, tokens, state, at, expires_at FROM llm_budget WHERE tier = 'remote'",
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .expect("the dead process's reservation");
    assert_eq!(state, "reserved");
    // It expires once its call could no longer be running: the call's deadline plus a minute.
    let lifetime = expires_at - at;
    assert!(
        lifetime <= (CALL_TIMEOUT_S + 61) * 1000,
        "the reservation outlives its call by {lifetime} ms"
    );
    // A day with room for one call of this size, not two.
    config(tokens + tokens / 2);
    remote.set_mode(Mode::Answer);
    let blocked = analyze(&commits[1]);
    assert_eq!(blocked.code, Some(0), "{blocked}");
    let calls = risk_calls(&blocked.stdout);
    assert!(
        calls.iter().any(|c| c.contains("budget exhausted")),
        "the dead reservation still counts before its expiry: {calls:?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let wait = Duration::from_millis((expires_at - now + 500).max(0) as u64);
    std::thread::sleep(wait);
    let answered = analyze(&commits[2]);
    assert_eq!(answered.code, Some(0), "{answered}");
    let calls = risk_calls(&answered.stdout);
    let state: String = sandbox
        .db()
        .query_row("SELECT state FROM llm_budget WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .expect("state");
    eprintln!(
        "dead process: reservation of {tokens} tokens living {lifetime} ms; before expiry {:?}; after {:?} ({state})",
        risk_calls(&blocked.stdout),
        calls
    );
    assert_eq!(calls, vec!["assess_risk: remote".to_string()]);
    assert_eq!(state, "expired");
}

/// The analyze step of the shipped pipeline, as shipped (its timeout included).
fn shipped_analyze_step() -> String {
    let text = include_str!("../../workflows/ai-pipeline.yaml");
    let start = text
        .find("  - id: analyze")
        .expect("the shipped pipeline has an analyze step");
    let rest = &text[start..];
    let end = rest[1..].find("\n  - id:").map_or(rest.len(), |i| i + 1);
    rest[..end].trim_end().to_string()
}

#[test]
fn a_hung_remote_does_not_fail_the_shipped_analyze_step_with_default_settings() {
    let remote = FakeRemote::start(Mode::Hang, 4, Duration::ZERO);
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    // Only what must be said: every remote setting at its default.
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!(
            "llm:\n  remote:\n    base_url: {}\n    model: fake\n  local:\n    model: {}\n",
            remote.base_url(),
            missing_model(&sandbox)
        ),
    )
    .expect("config");
    let (repo, commits) = repo_with_changes(&sandbox, 1);
    let step = shipped_analyze_step();
    assert!(
        step.contains("timeout: 2m"),
        "the shipped step changed:\n{step}"
    );
    let workflow = sandbox.write("hung.yaml", &format!("name: hung\nsteps:\n{step}\n"));
    let started = Instant::now();
    let output = sandbox.cairn_within(
        &[
            "run",
            workflow.to_str().unwrap_or_default(),
            "--repo",
            &repo.url(),
            "--commit",
            &commits[0],
            "-q",
        ],
        Duration::from_secs(200),
    );
    let elapsed = started.elapsed();
    assert_eq!(output.code, Some(0), "{output}");
    let status = sandbox.cairn(&["status", &output.run_id().to_string(), "--json"]);
    let document: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{status}"));
    let step = &document["steps"][0];
    let calls = step["outputs"]["models"]["calls"].to_string();
    eprintln!(
        "hung remote: the run took {elapsed:?} (step timeout 2m); {} request(s) reached the remote; calls {calls}",
        remote.requests()
    );
    assert_eq!(step["state"], "succeeded", "{status}");
    assert!(
        calls.contains("remote: timed out") || calls.contains("remote: no time left"),
        "{calls}"
    );
    let attempts: i64 = sandbox
        .db()
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE run_id = ?1",
            [output.run_id()],
            |row| row.get(0),
        )
        .expect("attempts");
    assert_eq!(attempts, 1, "the step timed out and was retried");
    assert!(elapsed < Duration::from_secs(120), "{elapsed:?}");
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn an_answer_echoing_the_api_key_leaves_no_trace_of_it() {
    const VARIABLE: &str = "CAIRN_E2E_REMOTE_KEY";
    const KEY: &str = "sk-e2e-4f9Qz7LmX2pR8sVt1KwY6bNc3HdJ5Ga0";
    let remote = FakeRemote::start(Mode::EchoKey, 4, Duration::ZERO);
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!(
            "llm:\n  remote:\n    base_url: {}\n    model: fake\n    api_key_env: {VARIABLE}\n  local:\n    model: {}\n",
            remote.base_url(),
            missing_model(&sandbox)
        ),
    )
    .expect("config");
    let (repo, commits) = repo_with_changes(&sandbox, 2);
    let workflow = sandbox.write(
        "echo.yaml",
        "name: echo\nsteps:\n  - id: analyze\n    agent: orchestrator\n    timeout: 2m\n",
    );
    let run = |args: &[&str]| {
        let output = sandbox
            .command(args)
            .env(VARIABLE, KEY)
            .output()
            .expect("cairn runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let printed_run = run(&[
        "run",
        workflow.to_str().unwrap_or_default(),
        "--repo",
        &repo.url(),
        "--commit",
        &commits[0],
    ]);
    let printed_analyze = run(&[
        "analyze",
        "--repo",
        &repo.url(),
        "--commit",
        &commits[1],
        "--json",
    ]);
    let printed_logs = run(&["logs", "1"]);
    assert_eq!(remote.requests(), 2, "both analyses asked the remote");
    assert!(
        remote
            .authorizations()
            .iter()
            .all(|a| a == &format!("Bearer {KEY}")),
        "the key was sent"
    );
    // The echo went through, scrubbed (not dropped): the model's reasons carry the placeholder.
    assert!(
        printed_analyze.contains("[REDACTED:api_key]"),
        "{printed_analyze}"
    );
    let mut found = Vec::new();
    for (what, text) in [
        ("cairn run output", &printed_run),
        ("cairn analyze --json", &printed_analyze),
        ("cairn logs", &printed_logs),
    ] {
        if text.contains(KEY) {
            found.push(what.to_string());
        }
    }
    // Each place the issue names, read through SQL: the echo reached it (scrubbed), the key
    // did not. A place the echo never reached would prove nothing.
    let db = sandbox.db();
    for (what, query) in [
        ("steps.outputs", "SELECT COALESCE(outputs, '') FROM steps"),
        ("events", "SELECT data FROM events"),
        ("llm_calls", "SELECT result || fallbacks FROM llm_calls"),
        ("llm_cache", "SELECT response FROM llm_cache"),
    ] {
        let mut statement = db.prepare(query).expect("query");
        let texts: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("text");
        assert!(
            texts.iter().any(|t| t.contains("[REDACTED:api_key]")),
            "the echo never reached {what}: {texts:?}"
        );
        if texts.iter().any(|t| t.contains(KEY)) {
            found.push(what.to_string());
        }
    }
    let mut files = Vec::new();
    files_under(sandbox.home(), &mut files);
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        if bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()) {
            found.push(file.display().to_string());
        }
    }
    eprintln!(
        "api key: searched {} files under the home and 3 outputs; found in {found:?}",
        files.len()
    );
    assert!(found.is_empty(), "the key is in {found:?}");
}
