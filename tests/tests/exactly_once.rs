//! Exactly once under stalls, races and escaping processes, through the real binary:
//!
//! - an engine stopped (SIGSTOP) past its lease is replaced by `cairn resume`; when it wakes
//!   up it writes nothing (fenced by the lease epoch), stops, and the run still succeeds with
//!   the step completed once;
//! - one run that cannot be resumed does not keep `cairn resume` from the others;
//! - ten processes opening one fresh home at once all succeed (migrations are one exclusive
//!   transaction);
//! - a daemon that escapes its step's process group (`setsid`) neither outlives the step nor
//!   defeats `timeout:` or `cairn cancel`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use cairn_tests::{
    Sandbox, attempts, events, file_lines, marked_sleep, processes_with_marker, run_ids, run_state,
    sh_quote, step_states, unique_marker, wait_until,
};

/// The lease the stalled-engine test runs with: short, so the test takes seconds, while the
/// sequence is the one seen with the default 30 s lease (stop longer than the lease, resume,
/// continue).
const LEASE: &str = "2s";

#[test]
fn a_stalled_engine_is_fenced_out_and_the_run_completes_once() {
    let sandbox = Sandbox::new();
    let started = sandbox.path("started");
    let completed = sandbox.path("completed");
    let workflow = sandbox.write(
        "stall.yaml",
        &format!(
            "name: stall\nsteps:\n  - id: work\n    run: |\n      \
             echo \"$CAIRN_ATTEMPT\" >> {started}\n      \
             echo working\n      \
             sleep 6\n      \
             echo \"$CAIRN_ATTEMPT\" >> {completed}\n  \
             - id: after\n    depends_on: work\n    run: echo after\n",
            started = sh_quote(&started),
            completed = sh_quote(&completed),
        ),
    );
    let workflow = workflow.display().to_string();
    let mut first = sandbox.spawn_with_env(&["run", &workflow, "-q"], &[("CAIRN_LEASE", LEASE)]);
    let run_id = first.wait_for_run_id(Duration::from_secs(20));
    wait_until("the first attempt started", Duration::from_secs(20), || {
        !file_lines(&started).is_empty()
    });

    // The engine stalls (a paused VM, a long fsync) for well over its lease.
    let engine = Pid::from_raw(first.pid() as i32);
    kill(engine, Signal::SIGSTOP).expect("SIGSTOP the first engine");
    std::thread::sleep(Duration::from_secs(4));
    let mut second = sandbox.spawn_with_env(&["resume", "-q"], &[("CAIRN_LEASE", LEASE)]);
    wait_until(
        "the second engine started attempt 2",
        Duration::from_secs(20),
        || file_lines(&started).len() >= 2,
    );
    kill(engine, Signal::SIGCONT).expect("SIGCONT the first engine");

    let stale = first
        .wait_within(Duration::from_secs(20))
        .expect("the stale engine stops once it finds its lease gone");
    let stale_output = first.output();
    assert!(
        !stale.success(),
        "the stale engine must not report the run as its own: {stale_output}"
    );
    assert!(
        stale_output
            .stderr
            .contains("no longer driven by this engine"),
        "the stale engine says why it stopped:\n{stale_output}"
    );
    second
        .wait_within(Duration::from_secs(40))
        .expect("the resuming engine finishes the run");
    let resumed = second.output();
    assert_eq!(resumed.code, Some(0), "{resumed}");

    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run_id).as_deref(), Some("succeeded"));
    assert_eq!(
        file_lines(&completed),
        vec!["2".to_string()],
        "the step completed exactly once, by the second engine's attempt"
    );
    let work = attempts(&conn, run_id, "work");
    let states: Vec<&str> = work.iter().map(|a| a.state.as_str()).collect();
    assert_eq!(states, ["interrupted", "succeeded"], "{work:#?}");
    assert_eq!(
        attempts(&conn, run_id, "after").len(),
        1,
        "the next step ran once"
    );

    let events = events(&conn, run_id);
    let reclaim = events
        .iter()
        .find(|e| e.kind == "run_reclaimed")
        .unwrap_or_else(|| panic!("the reclaim is in the events: {events:#?}"));
    assert!(
        reclaim.data["reason"]
            .as_str()
            .is_some_and(|r| r.contains("expired")),
        "{reclaim:?}"
    );
    assert_eq!(reclaim.data["epoch"], 2, "{reclaim:?}");
    // Nothing the stale engine did after the reclaim landed: every completion after it is
    // the second engine's, and each step completed once.
    let completions: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "step_succeeded")
        .map(|e| e.step_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(completions, ["work", "after"], "{events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| e.seq > reclaim.seq && e.step_id.as_deref() == Some("work"))
            .all(|e| e.attempt.is_none_or(|a| a >= 1)),
        "{events:#?}"
    );
    let late_lines: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM step_logs
             WHERE run_id = ?1 AND step_id = 'work' AND attempt = 1 AND at > ?2",
            rusqlite::params![run_id, reclaim.at],
            |row| row.get(0),
        )
        .expect("count late log lines");
    assert_eq!(
        late_lines, 0,
        "no log line of the stale attempt after the reclaim"
    );
}

#[test]
fn one_run_that_cannot_resume_does_not_stop_the_others() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-resume-many");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write(
        "slow.yaml",
        &format!("name: slow\nsteps:\n  - id: wait\n    run: |\n      {sleeper} 3\n"),
    );
    let workflow = workflow.display().to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut engine = sandbox.spawn(&["run", &workflow, "-q"]);
        let run_id = engine.wait_for_run_id(Duration::from_secs(20));
        wait_until("the step is running", Duration::from_secs(20), || {
            step_states(&sandbox.db(), run_id)
                .get("wait")
                .is_some_and(|s| s == "running")
        });
        engine.kill9();
        ids.push(run_id);
    }
    // The first run's stored definition no longer loads (as after a bad downgrade).
    sandbox
        .db()
        .execute(
            "UPDATE runs SET definition = 'steps: [' WHERE id = ?1",
            [ids[0]],
        )
        .expect("break the first run's definition");
    let output = sandbox.cairn_within(&["resume", "-q"], Duration::from_secs(60));
    assert_eq!(output.code, Some(3), "{output}");
    assert!(
        output.stderr.contains(&format!("run {}", ids[0])),
        "the broken run is named:\n{output}"
    );
    let conn = sandbox.db();
    assert_eq!(run_state(&conn, ids[1]).as_deref(), Some("succeeded"));
    assert_eq!(run_state(&conn, ids[0]).as_deref(), Some("running"));
}

#[test]
fn ten_processes_open_a_fresh_home_at_once() {
    let sandbox = Sandbox::new();
    let mut running: Vec<_> = (0..10).map(|_| sandbox.spawn(&["runs"])).collect();
    for (index, process) in running.iter_mut().enumerate() {
        process
            .wait_within(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("process {index} hung"));
        let output = process.output();
        assert_eq!(output.code, Some(0), "process {index}: {output}");
    }
    assert!(run_ids(&sandbox.db()).is_empty());
}

fn escaping_workflow(sandbox: &Sandbox, marker: &str, rest: &str) -> String {
    let daemon = sh_quote(&marked_sleep(sandbox, marker));
    let path = sandbox.write(
        "escape.yaml",
        &format!(
            "name: escape\nsteps:\n  - id: fork\n    retries: 0\n{rest}    run: |\n      \
             setsid {daemon} 90 &\n      \
             echo forked\n"
        ),
    );
    path.display().to_string()
}

fn assert_gone(marker: &str) {
    wait_until("the escaped daemon is gone", Duration::from_secs(5), || {
        processes_with_marker(marker).is_empty()
    });
}

#[test]
fn a_daemon_escaping_its_process_group_does_not_outlive_the_step() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-escaped-daemon");
    let workflow = escaping_workflow(&sandbox, &marker, "");
    let started = Instant::now();
    let output = sandbox.cairn_within(&["run", &workflow, "-q"], Duration::from_secs(30));
    assert_eq!(output.code, Some(0), "{output}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the step ended with its shell, not with the daemon's pipes"
    );
    assert_gone(&marker);
}

#[test]
fn timeout_and_cancel_act_on_the_attempt_not_on_its_pipes() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-escaped-timeout");
    // The shell outlives its timeout; the daemon it forked holds the pipes.
    let workflow = escaping_workflow(&sandbox, &marker, "    timeout: 1s\n");
    let text = std::fs::read_to_string(&workflow).expect("workflow");
    std::fs::write(
        &workflow,
        text.replace("echo forked\n", "echo forked\n      sleep 60\n"),
    )
    .expect("rewrite");
    let started = Instant::now();
    let output = sandbox.cairn_within(&["run", &workflow, "-q"], Duration::from_secs(40));
    assert_eq!(output.code, Some(1), "{output}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout fired although the daemon held the pipes"
    );
    let conn = sandbox.db();
    let run_id = *run_ids(&conn).last().expect("a run");
    let tries = attempts(&conn, run_id, "fork");
    assert_eq!(tries[0].failure.as_deref(), Some("timeout"), "{tries:#?}");
    assert_gone(&marker);

    // The same step with no timeout, cancelled from another process.
    let marker = unique_marker("cairn-escaped-cancel");
    let workflow = escaping_workflow(&sandbox, &marker, "");
    let text = std::fs::read_to_string(&workflow).expect("workflow");
    std::fs::write(
        &workflow,
        text.replace("echo forked\n", "echo forked\n      sleep 60\n"),
    )
    .expect("rewrite");
    let mut engine = sandbox.spawn(&["run", &workflow, "-q"]);
    let run_id = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the daemon runs", Duration::from_secs(20), || {
        !processes_with_marker(&marker).is_empty()
    });
    let cancel = sandbox.cairn(&["cancel", &run_id.to_string()]);
    assert_eq!(cancel.code, Some(0), "{cancel}");
    engine
        .wait_within(Duration::from_secs(20))
        .expect("the run ends soon after cancel, whatever holds its pipes");
    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run_id).as_deref(), Some("cancelled"));
    assert_eq!(
        step_states(&conn, run_id).get("fork").map(String::as_str),
        Some("cancelled")
    );
    assert_gone(&marker);
}
