//! Engines on several homes (standing in for several hosts) sharing one PostgreSQL store: three
//! `cairn serve` poll the same repository at the same moments, round after round. The cursor's
//! compare-and-set makes one of them create each commit's run, the run's lease makes one drive
//! it, and every step runs once: the journal the steps append to has one line per commit. And
//! a `cairn serve` adopts the run of an engine on another home that died mid-step.

mod common_git;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_engine::store::{Store, test_postgres};
use cairn_tests::{Sandbox, file_lines, sh_quote};
use common_git::Repo;

const SERVE_LIMIT: Duration = Duration::from_secs(120);

fn home(sandbox: &Sandbox, name: &str, url: &str) -> PathBuf {
    let home = sandbox.path(name);
    std::fs::create_dir_all(&home).expect("a home");
    std::fs::write(home.join("cairn.yaml"), format!("store: {url}\n")).expect("cairn.yaml");
    home
}

#[test]
fn serves_on_three_homes_sharing_postgres_run_each_commit_once() {
    let sandbox = Sandbox::new();
    let url = test_postgres::database();
    let homes: Vec<PathBuf> = (0..3)
        .map(|i| home(&sandbox, &format!("host{i}"), &url))
        .collect();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 1);
    let journal_path = sandbox.path("journal.txt");
    let workflow = sandbox.write(
        "watch.yaml",
        &format!(
            "name: shared\nenv:\n  JOURNAL: {}\ntrigger:\n  schedule: \"*/5 * * * *\"\n  \
             commits: each\n  repositories:\n    - url: {}\n      branches: [main]\n\
             steps:\n  - id: analyze\n    agent: orchestrator\n  - id: record\n    \
             depends_on: analyze\n    run: |\n      sleep 0.2\n      \
             echo \"$CAIRN_COMMIT $CAIRN_RUN_ID\" >> \"$JOURNAL\"\n",
            sh_quote(&journal_path),
            repo.url()
        ),
    );
    let workflow = workflow.display().to_string();
    let mut expected = vec![repo.head()];
    for round in 0..4 {
        if round > 0 {
            expected.extend(repo.add_commits(&format!("round{round}"), 2));
        }
        let mut serves: Vec<_> = homes
            .iter()
            .map(|home| {
                sandbox.spawn_with_env(
                    &["serve", &workflow, "--once", "-q"],
                    &[("CAIRN_HOME", &home.display().to_string())],
                )
            })
            .collect();
        for serve in &mut serves {
            assert!(
                serve.wait_within(SERVE_LIMIT).is_some(),
                "serve --once did not finish"
            );
            let output = serve.output();
            assert_eq!(output.code, Some(0), "round {round}: {output}");
        }
    }
    let mut per_commit: BTreeMap<String, usize> = BTreeMap::new();
    for line in file_lines(&journal_path) {
        let commit = line.split(' ').next().unwrap_or_default().to_string();
        *per_commit.entry(commit).or_default() += 1;
    }
    for commit in &expected {
        assert_eq!(
            per_commit.get(commit),
            Some(&1),
            "commit {commit}: {per_commit:?}"
        );
    }
    assert_eq!(per_commit.len(), expected.len(), "{per_commit:?}");
    let store = Store::open_postgres(&url, &sandbox.path("inspect.db")).expect("the store");
    let runs = store.runs(100).expect("runs");
    assert_eq!(runs.len(), expected.len());
    assert!(
        runs.iter()
            .all(|r| r.state == cairn_engine::store::RunState::Succeeded),
        "{runs:?}"
    );
}

/// A `cairn serve` on another home adopts the run of an engine that died mid-step (here a
/// `cairn run` killed with SIGKILL): it claims the run, attempts the interrupted step again
/// and finishes the run, with every step succeeding once.
#[test]
fn a_serve_adopts_the_run_of_an_engine_that_died() {
    let sandbox = Sandbox::new();
    let url = test_postgres::database();
    let first = home(&sandbox, "host0", &url);
    let second = home(&sandbox, "host1", &url);
    let journal_path = sandbox.path("journal.txt");
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 1);
    // A schedule far away keeps `serve` running without polling during the test.
    let workflow = sandbox.write(
        "adopt.yaml",
        &format!(
            "name: adopt\nenv:\n  JOURNAL: {}\ntrigger:\n  schedule: \"0 0 1 1 *\"\n  \
             repositories:\n    - url: {}\n      branches: [main]\n\
             steps:\n  - id: slow\n    run: |\n      \
             echo \"start $CAIRN_ATTEMPT $CAIRN_RUN_ID\" >> \"$JOURNAL\"\n      sleep 3\n  \
             - id: after\n    depends_on: slow\n    run: echo after\n",
            sh_quote(&journal_path),
            repo.url()
        ),
    );
    let workflow = workflow.display().to_string();
    let mut serve = sandbox.spawn_with_env(
        &["serve", &workflow, "-q"],
        &[("CAIRN_HOME", &second.display().to_string())],
    );
    let mut run = sandbox.spawn_with_env(
        &["run", &workflow, "-q"],
        &[("CAIRN_HOME", &first.display().to_string())],
    );
    let run_id = run.wait_for_run_id(Duration::from_secs(30));
    cairn_tests::wait_until("the step started", Duration::from_secs(30), || {
        file_lines(&journal_path).contains(&format!("start 1 {run_id}"))
    });
    assert!(run.kill9(), "the engine was running");
    let store = Store::open_postgres(&url, &sandbox.path("inspect.db")).expect("the store");
    cairn_tests::wait_until("the serve finished the run", SERVE_LIMIT, || {
        store
            .run(run_id)
            .is_ok_and(|r| r.state == cairn_engine::store::RunState::Succeeded)
    });
    let events = store.events(run_id).expect("events");
    for step in ["slow", "after"] {
        let succeeded = events
            .iter()
            .filter(|e| e.kind == "step_succeeded" && e.step_id.as_deref() == Some(step))
            .count();
        assert_eq!(succeeded, 1, "{step}: {events:?}");
    }
    assert!(
        file_lines(&journal_path).contains(&format!("start 2 {run_id}")),
        "the interrupted step was attempted again"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(serve.wait_within(Duration::from_secs(30)).is_some());
    assert!(
        events.iter().any(|e| e.kind == "run_reclaimed"),
        "the serve claimed the run: {events:?}"
    );
}
