//! Webhooks into `cairn serve --listen`, over real HTTP, against a real git repository.
//!
//! What it proves (see `engine/src/api/hooks.rs`):
//!
//! - a signed push webhook (GitHub's `X-Hub-Signature-256`, Gitea's `X-Gitea-Signature`,
//!   GitLab's `X-Gitlab-Token`) makes the engine poll the repository at once: the commit gets
//!   its run without waiting for the schedule;
//! - a webhook and cron ticks for the same push make one run (both go through the durable
//!   cursor), and a replayed delivery changes nothing;
//! - a bad or missing signature is 401 and logged, and starts nothing;
//! - a named secret variable that is unset is refused at start (exit 2), not later.

mod common_api;
mod common_git;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::blocking::Response;
use serde_json::{Value, json};
use sha2::Sha256;

use cairn_tests::{Sandbox, wait_until};
use common_api::{Service, serve};
use common_git::Repo;

const SECRET: &str = "hook-secret-for-tests";

fn workflow(sandbox: &Sandbox, repo: &Repo, schedule: &str) -> String {
    sandbox
        .write(
            "hooked.yaml",
            &format!(
                "name: hooked\ntrigger:\n  schedule: \"{schedule}\"\n  repositories:\n    - url: {}\n      \
                 branches: [main]\n      webhook_secret_env: HOOK_SECRET\nsteps:\n  - id: build\n    \
                 run: echo built\n",
                repo.url()
            ),
        )
        .display()
        .to_string()
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn push_payload(repo: &Repo, head: &str) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main",
        "after": head,
        "repository": { "clone_url": repo.url(), "full_name": "team/app" },
        "project": { "git_http_url": repo.url() },
    })
    .to_string()
    .into_bytes()
}

fn deliver(service: &Service, forge: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    let mut request = service
        .client
        .post(service.url(&format!("/hooks/{forge}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().expect("webhook delivery failed")
}

fn github(service: &Service, body: &[u8], delivery: &str) -> Response {
    deliver(
        service,
        "github",
        &[
            ("x-github-event", "push".into()),
            ("x-github-delivery", delivery.into()),
            ("x-hub-signature-256", format!("sha256={}", hmac_hex(body))),
        ],
        body,
    )
}

/// Runs per commit, from the database.
fn runs_of(sandbox: &Sandbox, commit: &str) -> usize {
    let Some(conn) = sandbox.try_db() else {
        return 0;
    };
    conn.query_row(
        "SELECT COUNT(*) FROM runs WHERE json_extract(context, '$.commit') = ?1",
        [commit],
        |row| row.get::<_, i64>(0),
    )
    .unwrap_or(0) as usize
}

#[test]
fn a_signed_push_polls_at_once_and_bad_signatures_are_refused() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("app"));
    let first = repo.commit_file("README", "one\n", "first");
    // A schedule that does not fire during the test: only webhooks poll.
    let flow = workflow(&sandbox, &repo, "0 0 1 1 *");
    let service = serve(&sandbox, &[&flow, "-q"], &[("HOOK_SECRET", SECRET)]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runs_of(&sandbox, &first),
        0,
        "nothing polls before a webhook"
    );

    // Bad and missing signatures: 401, logged, nothing started.
    let body = push_payload(&repo, &first);
    let forged = deliver(
        &service,
        "github",
        &[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
        ],
        &body,
    );
    assert_eq!(forged.status().as_u16(), 401);
    let unsigned = deliver(
        &service,
        "gitea",
        &[("x-gitea-event", "push".into())],
        &body,
    );
    assert_eq!(unsigned.status().as_u16(), 401);
    let wrong_token = deliver(
        &service,
        "gitlab",
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "nope".into()),
        ],
        &body,
    );
    assert_eq!(wrong_token.status().as_u16(), 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs_of(&sandbox, &first), 0);
    let mut running = service.running;
    let log = running.output().stderr;
    assert!(log.contains("webhook refused"), "{log}");
    assert!(!log.contains(SECRET), "the secret reached the log");
    let service = Service { running, ..service };

    // GitHub: a signed push runs the commit at once.
    let accepted = github(&service, &body, "delivery-1");
    assert_eq!(accepted.status().as_u16(), 202);
    wait_until("the pushed commit's run", Duration::from_secs(60), || {
        runs_of(&sandbox, &first) == 1
    });
    // Gitea and GitLab deliveries for a new commit: one run.
    let second = repo.commit_file("README", "two\n", "second");
    let body = push_payload(&repo, &second);
    let gitea = deliver(
        &service,
        "gitea",
        &[
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", hmac_hex(&body)),
        ],
        &body,
    );
    assert_eq!(gitea.status().as_u16(), 202);
    let gitlab = deliver(
        &service,
        "gitlab",
        &[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", SECRET.into()),
        ],
        &body,
    );
    assert_eq!(gitlab.status().as_u16(), 202);
    wait_until("the second commit's run", Duration::from_secs(60), || {
        runs_of(&sandbox, &second) == 1
    });
    // A replay of the first delivery changes nothing.
    let replay = github(&service, &push_payload(&repo, &first), "delivery-1");
    assert_eq!(replay.status().as_u16(), 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs_of(&sandbox, &first), 1);
    assert_eq!(runs_of(&sandbox, &second), 1);
    // A repository that is not served is not found.
    let stranger = json!({ "repository": { "clone_url": "/nowhere" } }).to_string();
    let unknown = github(&service, stranger.as_bytes(), "delivery-x");
    assert_eq!(unknown.status().as_u16(), 404);
}

#[test]
fn a_webhook_and_cron_ticks_for_one_push_make_one_run() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("app"));
    repo.commit_file("README", "one\n", "first");
    // Every second: ticks and webhooks interleave.
    let flow = workflow(&sandbox, &repo, "* * * * * *");
    let service = serve(&sandbox, &[&flow, "-q"], &[("HOOK_SECRET", SECRET)]);
    let mut pushed = Vec::new();
    for index in 0..4 {
        let commit = repo.commit_file("README", &format!("change {index}\n"), "change");
        // The webhook arrives as a tick may be polling the same push.
        let body = push_payload(&repo, &commit);
        assert_eq!(
            github(&service, &body, &format!("d{index}"))
                .status()
                .as_u16(),
            202
        );
        assert_eq!(
            github(&service, &body, &format!("d{index}"))
                .status()
                .as_u16(),
            202
        );
        pushed.push(commit);
        std::thread::sleep(Duration::from_millis(400));
    }
    wait_until(
        "a run for every pushed commit",
        Duration::from_secs(90),
        || pushed.iter().all(|c| runs_of(&sandbox, c) >= 1),
    );
    // Let several more ticks pass: none may add a run.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    for commit in &pushed {
        assert_eq!(runs_of(&sandbox, commit), 1, "commit {commit}");
    }
    let total: i64 = sandbox
        .db()
        .query_row("SELECT COUNT(*) FROM runs", [], |row| row.get(0))
        .expect("count runs");
    let runs: Value = json!(total);
    // The first commit's run (first poll of the branch) plus one per push, no more.
    assert!(total as usize <= pushed.len() + 1, "runs: {runs}");
}

#[test]
fn an_unset_secret_variable_is_refused_at_start() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("app"));
    repo.commit_file("README", "one\n", "first");
    let flow = workflow(&sandbox, &repo, "0 0 1 1 *");
    let out = sandbox.cairn(&["serve", &flow, "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("HOOK_SECRET"), "{out}");
    assert!(out.stderr.contains("unset or empty"), "{out}");
}
