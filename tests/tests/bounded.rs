//! Bounded disk and memory through the real binary: a step flooding its output stores a
//! bounded log (head, a marker, tail), a finished run's checkout is removed unless asked to
//! keep it, and `cairn gc` applies retention to runs, events, logs and run directories while
//! the event log of every remaining run stays append-only.

mod common_git;

use cairn_tests::{Sandbox, events, run_ids};
use common_git::Repo;

#[test]
fn a_log_flood_is_stored_bounded_with_its_head_tail_and_a_marker() {
    let sandbox = Sandbox::new();
    // 5 MB of short lines, then a last line that must survive (errors are at the end).
    let workflow = sandbox.write(
        "flood.yaml",
        "name: flood\nsteps:\n  - id: flood\n    run: yes | head -c 5000000; echo the-last-line\n",
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let conn = sandbox.db();
    let (lines, bytes): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(line)), 0) FROM step_logs WHERE step_id = 'flood'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count the log");
    assert!(
        lines < 100_000,
        "{lines} lines stored for a 2.5-million-line flood"
    );
    assert!(bytes < 2_000_000, "{bytes} bytes stored");
    let last: String = conn
        .query_row(
            "SELECT line FROM step_logs WHERE step_id = 'flood' ORDER BY seq DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .expect("last line");
    assert_eq!(last, "the-last-line");
    let marker: String = conn
        .query_row(
            "SELECT line FROM step_logs WHERE step_id = 'flood' AND stream = 'engine'",
            [],
            |row| row.get(0),
        )
        .expect("a marker line says what was left out");
    assert!(marker.contains("were not stored"), "{marker}");
    drop(conn);
    let size = std::fs::metadata(sandbox.db_path()).expect("db").len();
    assert!(size < 20_000_000, "the database grew to {size} bytes");
}

#[test]
fn a_finished_runs_checkout_is_removed_unless_kept() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.commit_file("README.md", "hello\n", "first");
    let workflow = sandbox.write(
        "w.yaml",
        "name: w\nsteps:\n  - id: look\n    run: test -f README.md && echo out=1 > \"$CAIRN_OUTPUT\"\n",
    );
    let file = workflow.display().to_string();
    let run = sandbox.cairn(&["run", &file, "--repo", &repo.url(), "-q"]);
    assert_eq!(run.code, Some(0), "{run}");
    let run_dir = sandbox
        .home()
        .join("work")
        .join(format!("run-{}", run.run_id()));
    assert!(!run_dir.join("src").exists(), "the checkout is removed");
    assert!(
        run_dir.join("outputs").exists(),
        "the run's outputs are kept"
    );

    let kept = sandbox.cairn(&[
        "run",
        &file,
        "--repo",
        &repo.url(),
        "-q",
        "--keep-workspace",
    ]);
    assert_eq!(kept.code, Some(0), "{kept}");
    let kept_dir = sandbox
        .home()
        .join("work")
        .join(format!("run-{}", kept.run_id()));
    assert!(
        kept_dir.join("src/README.md").exists(),
        "--keep-workspace keeps it"
    );
}

#[test]
fn gc_deletes_old_runs_with_their_events_and_directories() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        "retention:\n  runs: 1ms\n  keep_runs: 1\n  workspaces: keep\n",
    )
    .expect("config");
    let workflow = sandbox.write(
        "w.yaml",
        "name: w\nsteps:\n  - id: a\n    run: echo hello\n",
    );
    for _ in 0..3 {
        let run = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
        assert_eq!(run.code, Some(0), "{run}");
    }
    let stray = sandbox.home().join("work/run-99");
    std::fs::create_dir_all(&stray).expect("a directory without a run");

    let gc = sandbox.cairn(&["gc", "--json"]);
    assert_eq!(gc.code, Some(0), "{gc}");
    let report: serde_json::Value = serde_json::from_str(&gc.stdout).expect("JSON report");
    assert_eq!(
        report["database"]["runs"],
        serde_json::json!([1, 2]),
        "{gc}"
    );

    let conn = sandbox.db();
    assert_eq!(run_ids(&conn), [3], "the newest run is kept");
    assert!(
        events(&conn, 1).is_empty(),
        "a deleted run's events go with it"
    );
    assert!(
        !events(&conn, 3).is_empty(),
        "the kept run keeps its history"
    );
    let logs: i64 = conn
        .query_row("SELECT COUNT(*) FROM step_logs WHERE run_id < 3", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(logs, 0);
    // The event log of a run that exists is still append-only.
    let refused = conn.execute("DELETE FROM events WHERE run_id = 3", []);
    assert!(
        refused.is_err(),
        "events of a live run must not be deletable"
    );
    drop(conn);
    assert!(!stray.exists(), "a run directory without a run is removed");
    assert!(!sandbox.home().join("work/run-1").exists());
    assert!(sandbox.home().join("work/run-3").exists());
}
