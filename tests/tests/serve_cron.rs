//! `cairn serve` as a long-running engine on a real cron schedule (every 2 seconds, the
//! 6-field form with seconds): two repositories are polled on each tick, each new commit runs
//! the risk-routed pipeline once, and a restart of the engine neither misses nor repeats a
//! commit.

mod common_git;

use std::time::Duration;

use cairn_tests::{Sandbox, wait_until};
use common_git::Repo;
use serde_json::Value;

/// (commit, risk, steps that ran) for every finished run.
fn finished(sandbox: &Sandbox) -> Vec<(String, String, Vec<String>)> {
    let Some(conn) = sandbox.try_db() else {
        return Vec::new();
    };
    let Ok(mut stmt) =
        conn.prepare("SELECT id, context FROM runs WHERE state = 'succeeded' ORDER BY id")
    else {
        return Vec::new();
    };
    let runs: Vec<(i64, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default();
    runs.into_iter()
        .map(|(id, context)| {
            let context: Value = serde_json::from_str(&context).unwrap_or(Value::Null);
            let risk: String = conn
                .query_row(
                    "SELECT json_extract(outputs, '$.risk') FROM steps WHERE run_id = ?1 AND step_id = 'analyze'",
                    [id],
                    |row| row.get(0),
                )
                .unwrap_or_default();
            let ran: Vec<String> = conn
                .prepare("SELECT step_id FROM steps WHERE run_id = ?1 AND state = 'succeeded' ORDER BY position")
                .and_then(|mut s| s.query_map([id], |row| row.get(0)).map(|rows| rows.flatten().collect()))
                .unwrap_or_default();
            (context["commit"].as_str().unwrap_or("").to_string(), risk, ran)
        })
        .collect()
}

#[test]
fn serve_polls_on_its_schedule_and_routes_each_new_commit_once_across_a_restart() {
    let sandbox = Sandbox::new();
    let a = Repo::init(&sandbox.path("a"));
    let b = Repo::init(&sandbox.path("b"));
    a.commit_file("README.md", "# a\n", "a: start");
    b.commit_file("README.md", "# b\n", "b: start");
    let workflow = sandbox.write(
        "watch.yaml",
        &format!(
            "name: routed\ntrigger:\n  schedule: \"*/2 * * * * *\"\n  repositories:\n    - url: {}\n      branches: [main]\n    - url: {}\n      branches: [main]\n\
             steps:\n  - id: analyze\n    agent: orchestrator\n  - id: test\n    depends_on: analyze\n    when: risk >= medium\n    run: 'true'\n\
             \x20 - id: canary\n    depends_on: test\n    when: risk == high\n    run: 'true'\n  - id: deploy\n    depends_on: canary\n    run: 'true'\n",
            a.url(),
            b.url()
        ),
    );
    let workflow = workflow.to_str().unwrap_or_default().to_string();
    let mut engine = sandbox.spawn(&["serve", &workflow, "-q"]);
    wait_until(
        "the first tick runs both heads",
        Duration::from_secs(30),
        || finished(&sandbox).len() >= 2,
    );

    let docs = a.commit_file("docs/guide.md", "# guide\n", "a: docs");
    let feature = b.commit_file("src/lib.rs", "pub fn f() {}\n", "b: feature");
    wait_until(
        "the next ticks run both new commits",
        Duration::from_secs(30),
        || finished(&sandbox).len() >= 4,
    );

    // A restart: kill the engine, commit while it is down, start it again.
    engine.kill9();
    let migration = a.commit_file(
        "db/migrations/0001.sql",
        "CREATE TABLE t (id INT);\n",
        "a: migration",
    );
    let mut engine = sandbox.spawn(&["serve", &workflow, "-q"]);
    wait_until(
        "the restarted engine runs the commit made while it was down",
        Duration::from_secs(30),
        || finished(&sandbox).len() >= 5,
    );
    // A few more ticks change nothing.
    std::thread::sleep(Duration::from_secs(5));
    engine.kill9();

    let runs = finished(&sandbox);
    let commits: Vec<&str> = runs.iter().map(|(c, _, _)| c.as_str()).collect();
    for commit in [&docs, &feature, &migration] {
        assert_eq!(
            commits.iter().filter(|c| **c == commit.as_str()).count(),
            1,
            "{commit} runs once: {runs:?}"
        );
    }
    assert_eq!(
        runs.len(),
        5,
        "two heads + three commits, nothing repeated: {runs:?}"
    );
    let route = |commit: &str| {
        runs.iter()
            .find(|(c, _, _)| c == commit)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(route(&docs).1, "low");
    assert_eq!(
        route(&docs).2,
        ["analyze", "deploy"],
        "docs skip tests and canary"
    );
    assert_eq!(route(&feature).1, "medium");
    assert_eq!(route(&feature).2, ["analyze", "test", "deploy"]);
    assert_eq!(route(&migration).1, "high");
    assert_eq!(route(&migration).2, ["analyze", "test", "canary", "deploy"]);
}
