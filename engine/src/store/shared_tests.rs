//! The run core's contract, checked on both backends: every test here runs once against a
//! SQLite file and once against a fresh database on a private PostgreSQL server
//! (`test_postgres.rs`).

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use serde_json::json;

use super::*;

fn new_run(owner: &str, step_ids: &[&str]) -> NewRun {
    NewRun {
        workflow: "w".into(),
        source_path: None,
        definition: "name: w\n".into(),
        context: json!({ "repo_url": "https://example.invalid/r.git", "branch": "main" }),
        step_ids: step_ids.iter().map(|s| s.to_string()).collect(),
        owner: owner.into(),
        lease_ms: 60_000,
    }
}

/// Each named function, as one test per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = crate::store::Store::open(&dir.path().join("cairn.db"))
                    .expect("the SQLite store opens");
                super::$name(&store);
            }

            #[test]
            fn postgres() {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = crate::store::test_postgres::database();
                let store = crate::store::Store::open_postgres(&url, &dir.path().join("cairn.db"))
                    .expect("the PostgreSQL store opens");
                super::$name(&store);
            }
        }
    )*};
}

on_both_backends!(
    a_run_follows_the_transition_table,
    a_claim_fences_out_the_previous_holder,
    concurrent_claims_take_one_epoch_each,
    a_cursor_moves_once_from_what_was_read,
    the_event_log_is_append_only,
    filters_read_the_run_context,
    polls_count_failures_until_a_success,
    reopening_finds_the_schema_current,
    a_task_goes_to_a_worker_with_its_labels,
    an_expired_task_lease_fences_out_the_stalled_worker,
    concurrent_workers_lease_each_task_once,
);

fn a_run_follows_the_transition_table(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["build", "test"])))
        .expect("run created");
    store
        .write(|txn| {
            let mut running = StepTransition::new(run_id, "build", StepState::Running);
            running.attempt = Some(1);
            running.lease = Some(("a".into(), now_ms() + 1_000));
            txn.transition_step(&running)?;
            txn.start_attempt(run_id, "build", 1, "a")
        })
        .expect("pending -> running");
    let refused = store.write(|txn| {
        txn.append_event(run_id, None, None, "marker", &json!({}))?;
        txn.transition_step(&StepTransition::new(run_id, "test", StepState::Succeeded))
    });
    assert!(
        matches!(refused, Err(Error::IllegalTransition { .. })),
        "{refused:?}"
    );
    store
        .write(|txn| {
            let mut done = StepTransition::new(run_id, "build", StepState::Succeeded);
            done.attempt = Some(1);
            done.outputs = Some(json!({ "risk": "low", "route": { "depth": 2 } }));
            txn.transition_step(&done)?;
            txn.finish_attempt(run_id, "build", 1, "succeeded", None, Some(0), None)
        })
        .expect("running -> succeeded");
    let steps = store.steps(run_id).expect("steps");
    assert_eq!(steps[0].state, StepState::Succeeded);
    assert_eq!(steps[0].attempts, 1);
    assert_eq!(
        steps[0].outputs,
        Some(json!({ "risk": "low", "route": { "depth": 2 } }))
    );
    assert!(steps[0].finished_at.is_some() && steps[0].started_at.is_some());
    assert_eq!(steps[1].state, StepState::Pending);
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // The refused transaction left nothing, its marker included.
    assert_eq!(kinds, ["run_created", "step_running", "step_succeeded"]);
    store
        .write(|txn| txn.finish_run(run_id, RunState::Succeeded, None))
        .expect("finished");
    let again = store.write(|txn| txn.finish_run(run_id, RunState::Failed, Some("late")));
    assert!(matches!(again, Err(Error::RunNotRunning(_))), "{again:?}");
    let run = store.run(run_id).expect("run");
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.lease_owner, None);
    assert!(matches!(
        store.run(run_id + 100),
        Err(Error::RunNotFound(_))
    ));
}

fn a_claim_fences_out_the_previous_holder(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run created");
    let first = store
        .write(|txn| txn.claim_run(run_id, "a", 60_000, &|_| true))
        .expect("the holder renews its own claim");
    let held = store.write(|txn| txn.claim_run(run_id, "b", 60_000, &|_| true));
    assert!(matches!(held, Err(Error::LeaseHeld { .. })), "{held:?}");
    let second = store
        .write(|txn| txn.claim_run(run_id, "b", 60_000, &|_| false))
        .expect("a gone holder's run is taken over");
    assert_eq!(second.previous.as_deref(), Some("a"));
    assert_eq!(second.fence.epoch, first.fence.epoch + 1);
    for (what, result) in [
        ("check", store.write(|txn| txn.check_fence(&first.fence))),
        (
            "renewal",
            store.write(|txn| txn.renew_lease(&first.fence, 60_000)),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseLost { run_id: r, .. }) if r == run_id),
            "{what}: {result:?}"
        );
    }
    let line = |text: &str| LogLine {
        run_id,
        step_id: "s".into(),
        attempt: 1,
        stream: "stdout",
        line: text.into(),
        at: now_ms(),
    };
    store
        .append_logs(
            &[line("from the stale holder")],
            Some(&LogFence::Run(first.fence.clone())),
        )
        .expect("dropped, not failed");
    store
        .append_logs(
            &[line("from the holder")],
            Some(&LogFence::Run(second.fence.clone())),
        )
        .expect("kept");
    let lines: Vec<String> = store
        .logs(run_id, Some("s"), 0)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["from the holder"]);
    store
        .write(|txn| txn.renew_lease(&second.fence, 60_000))
        .expect("the holder renews");
    let events = store.events(run_id).expect("events");
    let reclaimed = events
        .iter()
        .find(|e| e.kind == "run_reclaimed")
        .expect("the takeover is in the log");
    assert_eq!(reclaimed.data["previous_owner"], "a");
    store
        .write(|txn| txn.finish_run(run_id, RunState::Succeeded, None))
        .expect("finished");
    let late = store.write(|txn| txn.claim_run(run_id, "c", 1_000, &|_| false));
    assert!(matches!(late, Err(Error::RunNotRunning(_))), "{late:?}");
}

fn concurrent_claims_take_one_epoch_each(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("start", &["s"])))
        .expect("run created");
    const CLAIMERS: usize = 6;
    const ROUNDS: usize = 8;
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let handles: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..ROUNDS)
                    .map(|_| {
                        store
                            .write(|txn| {
                                txn.claim_run(run_id, &format!("e{i}"), 60_000, &|_| false)
                            })
                            .expect("a claim")
                            .fence
                            .epoch
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let epochs: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("claimer"))
        .collect();
    let distinct: HashSet<i64> = epochs.iter().copied().collect();
    // Serialized writes: no two claims read the same epoch and both raised it.
    assert_eq!(distinct.len(), CLAIMERS * ROUNDS, "{epochs:?}");
    assert_eq!(distinct.iter().max(), Some(&((CLAIMERS * ROUNDS) as i64)));
}

fn a_cursor_moves_once_from_what_was_read(store: &Store) {
    let (w, repo, branch) = ("w", "https://example.invalid/r.git", "main");
    assert_eq!(store.cursor(w, repo, branch).expect("cursor"), None);
    let barrier = Arc::new(Barrier::new(4));
    let moved: usize = (0..4)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .write(|txn| txn.advance_cursor(w, repo, branch, None, &format!("c{i}")))
                    .expect("compare and set")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().expect("poller")))
        .sum();
    assert_eq!(
        moved, 1,
        "exactly one poller moves a cursor from what it read"
    );
    let now = store.cursor(w, repo, branch).expect("cursor").expect("set");
    assert!(
        store
            .write(|txn| txn.advance_cursor(w, repo, branch, Some(&now), "next"))
            .expect("advance")
    );
    assert_eq!(store.cursor_branches(w, repo).expect("branches"), ["main"]);
    store
        .write(|txn| txn.delete_cursor(w, repo, branch))
        .expect("delete");
    assert_eq!(store.cursor(w, repo, branch).expect("cursor"), None);
}

fn the_event_log_is_append_only(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run created");
    let edit = store.write(|txn| {
        txn.conn.execute(
            "UPDATE events SET kind = 'forged' WHERE run_id = ?1",
            &[&run_id],
        )
    });
    assert!(edit.is_err(), "an event was rewritten: {edit:?}");
    let delete = store.write(|txn| {
        txn.conn
            .execute("DELETE FROM events WHERE run_id = ?1", &[&run_id])
    });
    assert!(
        delete.is_err(),
        "an event of a live run was deleted: {delete:?}"
    );
    assert_eq!(store.events(run_id).expect("events")[0].kind, "run_created");
}

fn filters_read_the_run_context(store: &Store) {
    let main = store
        .write(|txn| txn.create_run(&new_run("a", &["analyze"])))
        .expect("run");
    let mut other = new_run("a", &["analyze"]);
    other.context = json!({ "repo_url": "https://example.invalid/r.git", "branch": "dev" });
    let dev = store.write(|txn| txn.create_run(&other)).expect("run");
    store
        .write(|txn| {
            txn.transition_step(&StepTransition::new(main, "analyze", StepState::Running))?;
            let mut done = StepTransition::new(main, "analyze", StepState::Succeeded);
            done.outputs = Some(json!({ "risk": "high" }));
            txn.transition_step(&done)
        })
        .expect("analyzed");
    let on = |branch: Option<&str>, risk: Option<&str>| -> Vec<i64> {
        store
            .filtered_runs(&RunFilter {
                branch: branch.map(str::to_string),
                risk: risk.map(str::to_string),
                limit: 10,
                ..RunFilter::default()
            })
            .expect("filtered runs")
            .into_iter()
            .map(|summary| summary.run.id)
            .collect()
    };
    assert_eq!(on(None, None), [dev, main]);
    assert_eq!(on(Some("dev"), None), [dev]);
    assert_eq!(on(None, Some("high")), [main]);
    assert_eq!(store.unfinished_runs().expect("unfinished").len(), 2);
    assert_eq!(store.runs(1).expect("runs")[0].id, dev);
}

fn polls_count_failures_until_a_success(store: &Store) {
    let url = "https://example.invalid/r.git";
    for _ in 0..2 {
        store
            .write(|txn| txn.record_poll(url, Some("unreachable"), None, Some(now_ms() + 1_000)))
            .expect("failed poll");
    }
    let status = &store.repositories().expect("repositories")[0];
    assert_eq!((status.failures, status.last_ok_at), (2, None));
    store
        .write(|txn| txn.record_poll(url, None, Some("3 new commits"), None))
        .expect("poll");
    let status = &store.repositories().expect("repositories")[0];
    assert_eq!(status.failures, 0);
    assert_eq!(status.last_note.as_deref(), Some("3 new commits"));
    assert!(status.last_ok_at.is_some() && status.last_error.is_none());
}

fn reopening_finds_the_schema_current(store: &Store) {
    let reopened = match store.backend() {
        Backend::Sqlite => Store::open(store.path()),
        // The test server has no passwords: the shown address is the whole address.
        Backend::Postgres => Store::open_postgres(&store.location(), store.path()),
    }
    .expect("reopens");
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run");
    assert_eq!(
        reopened.run(run_id).expect("seen by another handle").id,
        run_id
    );
}

fn task(run_id: i64, step_id: &str, labels: &[&str]) -> NewTask {
    NewTask {
        run_id,
        step_id: step_id.into(),
        attempt: 1,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        spec: TaskSpec {
            command: format!("echo {step_id}"),
            env: vec![("A".into(), "1".into())],
            timeout_ms: Some(5_000),
        },
    }
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|l| l.to_string()).collect()
}

fn a_task_goes_to_a_worker_with_its_labels(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["build", "lint"])))
        .expect("run");
    let build = store
        .write(|txn| txn.enqueue_task(&task(run_id, "build", &["docker", "linux"])))
        .expect("queued");
    let lint = store
        .write(|txn| txn.enqueue_task(&task(run_id, "lint", &["linux"])))
        .expect("queued");
    let lease = |worker: &str, have: &[&str]| {
        store
            .write(|txn| txn.lease_task(worker, &labels(have), 60_000))
            .expect("lease")
    };
    // A worker without `docker` skips the older task it cannot run.
    let first = lease("w1", &["linux"]).expect("the lint task");
    assert_eq!(first.task.id, lint);
    assert!(lease("w1", &["linux"]).is_none(), "nothing else it can run");
    let second = lease("w2", &["docker", "linux", "x86_64"]).expect("the build task");
    assert_eq!(second.task.id, build);
    assert_eq!(
        second.task.spec.env,
        vec![("A".to_string(), "1".to_string())]
    );
    assert_eq!(
        store
            .unread_task(run_id, "build")
            .expect("unread")
            .map(|t| t.id),
        Some(build)
    );
    let result = TaskResult::Succeeded {
        outputs: json!({ "image": "sha256:1" }),
    };
    store
        .write(|txn| txn.finish_task(&second.fence, &result))
        .expect("finished");
    let done = store.task(build).expect("task");
    assert_eq!(
        (done.state.as_str(), done.result),
        ("succeeded", Some(result))
    );
    store.write(|txn| txn.consume_task(build)).expect("read");
    assert!(
        store
            .unread_task(run_id, "build")
            .expect("unread")
            .is_none()
    );
    // Cancelling: the holder learns it at its next renewal.
    assert!(
        store
            .write(|txn| {
                txn.cancel_task(lint)?;
                txn.renew_task(&first.fence, 60_000)
            })
            .expect("renewal")
    );
    let queued = store
        .write(|txn| txn.enqueue_task(&task(run_id, "build", &[])))
        .expect("queued");
    store.write(|txn| txn.cancel_task(queued)).expect("cancel");
    assert_eq!(store.task(queued).expect("task").state, "cancelled");
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("task_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "task_queued",
            "task_queued",
            "task_leased",
            "task_leased",
            "task_succeeded",
            "task_queued"
        ]
    );
}

fn an_expired_task_lease_fences_out_the_stalled_worker(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["s"])))
        .expect("run");
    let id = store
        .write(|txn| txn.enqueue_task(&task(run_id, "s", &[])))
        .expect("queued");
    let stalled = store
        .write(|txn| txn.lease_task("w1", &[], 1))
        .expect("lease")
        .expect("a task");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let taken = store
        .write(|txn| txn.lease_task("w2", &[], 60_000))
        .expect("lease")
        .expect("the expired task");
    assert_eq!(taken.task.id, id);
    assert_eq!(taken.previous.as_deref(), Some("w1"));
    assert_eq!(taken.fence.epoch, stalled.fence.epoch + 1);
    let line = |text: &str| LogLine {
        run_id,
        step_id: "s".into(),
        attempt: 1,
        stream: "stdout",
        line: text.into(),
        at: now_ms(),
    };
    store
        .append_logs(
            &[line("stale")],
            Some(&LogFence::Task(stalled.fence.clone())),
        )
        .expect("dropped, not failed");
    store
        .append_logs(
            &[line("current")],
            Some(&LogFence::Task(taken.fence.clone())),
        )
        .expect("kept");
    for (what, result) in [
        (
            "renewal",
            store
                .write(|txn| txn.renew_task(&stalled.fence, 60_000))
                .map(|_| ()),
        ),
        (
            "result",
            store.write(|txn| txn.finish_task(&stalled.fence, &TaskResult::Cancelled)),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::TaskLost { task_id, .. }) if task_id == id),
            "{what}: {result:?}"
        );
    }
    let lines: Vec<String> = store
        .logs(run_id, None, 0)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["current"]);
    store
        .write(|txn| {
            txn.finish_task(
                &taken.fence,
                &TaskResult::Failed {
                    class: "exit_code".into(),
                    exit_code: Some(2),
                    message: "exit 2".into(),
                },
            )
        })
        .expect("the holder finishes");
    assert_eq!(store.task(id).expect("task").state, "failed");
    assert!(
        store
            .events(run_id)
            .expect("events")
            .iter()
            .any(|e| e.kind == "task_reclaimed")
    );
}

fn concurrent_workers_lease_each_task_once(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["s"])))
        .expect("run");
    const TASKS: usize = 30;
    for i in 0..TASKS {
        store
            .write(|txn| txn.enqueue_task(&task(run_id, &format!("s{i}"), &["linux"])))
            .expect("queued");
    }
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                while let Some(lease) = store
                    .write(|txn| txn.lease_task(&format!("w{w}"), &labels(&["linux"]), 60_000))
                    .expect("lease")
                {
                    store
                        .write(|txn| {
                            txn.finish_task(
                                &lease.fence,
                                &TaskResult::Succeeded { outputs: json!({}) },
                            )
                        })
                        .expect("finish");
                    mine.push(lease.task.id);
                }
                mine
            })
        })
        .collect();
    let leased: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    let distinct: HashSet<i64> = leased.iter().copied().collect();
    assert_eq!((leased.len(), distinct.len()), (TASKS, TASKS), "{leased:?}");
    assert!(
        store
            .tasks(run_id)
            .expect("tasks")
            .iter()
            .all(|t| t.state == "succeeded")
    );
}
