//! The store against real SQLite files in a temporary directory.

use serde_json::json;

use super::*;
use crate::store::CallRecord;

fn new_run(step_ids: &[&str]) -> NewRun {
    NewRun {
        workflow: "w".into(),
        source_path: None,
        definition: "name: w\n".into(),
        context: json!({}),
        step_ids: step_ids.iter().map(|s| s.to_string()).collect(),
        owner: "host:1:1".into(),
        lease_ms: 30_000,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state/cairn.db")).expect("store opens");
    (dir, store)
}

#[test]
fn a_transition_and_its_event_commit_together() {
    let (_dir, store) = open();
    let run_id = store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    store
        .write(|txn| txn.transition_step(&StepTransition::new(run_id, "a", StepState::Running)))
        .expect("pending -> running");
    assert_eq!(
        store.steps(run_id).expect("steps")[0].state,
        StepState::Running
    );
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["run_created", "step_running"]);
}

#[test]
fn an_illegal_transition_is_refused_and_changes_nothing() {
    let (_dir, store) = open();
    let run_id = store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    let result = store.write(|txn| {
        txn.append_event(run_id, None, None, "marker", &json!({}))?;
        txn.transition_step(&StepTransition::new(run_id, "a", StepState::Succeeded))
    });
    assert!(
        matches!(result, Err(Error::IllegalTransition { .. })),
        "{result:?}"
    );
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["run_created"], "the whole transaction rolled back");
}

#[test]
fn events_cannot_be_rewritten() {
    let (_dir, store) = open();
    store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    let conn = rusqlite::Connection::open(store.path()).expect("second connection");
    assert!(
        conn.execute("UPDATE events SET kind = 'forged'", [])
            .is_err()
    );
    assert!(conn.execute("DELETE FROM events", []).is_err());
}

#[test]
fn a_live_lease_is_respected_and_a_dead_one_reclaimed() {
    let (_dir, store) = open();
    let run_id = store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    let held = store.write(|txn| txn.claim_run(run_id, "other:2:2", 1_000, &|_| true));
    assert!(matches!(held, Err(Error::LeaseHeld { .. })), "{held:?}");
    let taken = store
        .write(|txn| txn.claim_run(run_id, "other:2:2", 1_000, &|_| false))
        .expect("dead owner's lease is taken over");
    assert_eq!(taken.previous.as_deref(), Some("host:1:1"));
    assert!(
        store
            .events(run_id)
            .expect("events")
            .iter()
            .any(|e| e.kind == "run_reclaimed")
    );
}

#[test]
fn a_database_from_a_newer_cairn_is_refused() {
    let (dir, store) = open();
    let path = store.path().to_path_buf();
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "user_version", schema::LATEST_VERSION + 1)
        .expect("bump version");
    drop(conn);
    let error = Store::open(&path).err().expect("refused");
    assert!(matches!(error, Error::NewerSchema { .. }), "{error}");
    drop(dir);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cairn.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
    let error = Store::open(&path).err().expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("corrupt") && message.contains("cairn.db"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read back"),
        vec![0x5a; 8192],
        "file untouched"
    );
}

#[test]
fn a_reclaim_fences_out_every_write_of_the_previous_holder() {
    let (_dir, store) = open();
    let run_id = store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    let first = store
        .write(|txn| txn.claim_run(run_id, "host:1:1", 30_000, &|_| true))
        .expect("the creator claims its run")
        .fence;
    store
        .write(|txn| txn.check_fence(&first))
        .expect("the holder may write");
    // The holder stalls past its lease; a second engine takes over although it is alive.
    store
        .write(|txn| txn.claim_run(run_id, "host:2:2", 1_000, &|_| false))
        .map(|claim| assert_eq!(claim.fence.epoch, first.epoch + 1))
        .expect("a dead or expired owner's lease is taken over");
    for (what, result) in [
        ("check", store.write(|txn| txn.check_fence(&first))),
        (
            "renewal",
            store.write(|txn| txn.renew_lease(&first, 30_000)),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseLost { run_id: r, .. }) if r == run_id),
            "{what}: {result:?}"
        );
    }
    let line = LogLine {
        run_id,
        step_id: "a".into(),
        attempt: 1,
        stream: "stdout",
        line: "late".into(),
        at: now_ms(),
    };
    store
        .append_logs(std::slice::from_ref(&line), Some(&first))
        .expect("stale lines are dropped, not an error");
    assert!(store.logs(run_id, None, 0).expect("logs").is_empty());

    store
        .write(|txn| txn.finish_run(run_id, RunState::Succeeded, None))
        .expect("finished once");
    let again = store.write(|txn| txn.finish_run(run_id, RunState::Failed, None));
    assert!(matches!(again, Err(Error::RunNotRunning(_))), "{again:?}");
    let claim = store.write(|txn| txn.claim_run(run_id, "host:3:3", 1_000, &|_| false));
    assert!(matches!(claim, Err(Error::RunNotRunning(_))), "{claim:?}");
}

#[test]
fn a_cursor_moves_only_from_the_value_it_was_read_at() {
    let (_dir, store) = open();
    let moved = store
        .write(|txn| txn.advance_cursor("w", "url", "main", None, "c1"))
        .expect("first advance");
    assert!(moved);
    // A second poller read the cursor before the first moved it.
    let stale = store
        .write(|txn| txn.advance_cursor("w", "url", "main", None, "c1"))
        .expect("stale advance");
    assert!(!stale, "the poller that lost the race creates nothing");
    assert_eq!(
        store.cursor("w", "url", "main").expect("cursor").as_deref(),
        Some("c1")
    );
}

#[test]
fn a_replay_answers_only_the_same_question() {
    let (_dir, store) = open();
    let run_id = store
        .write(|txn| txn.create_run(&new_run(&["a"])))
        .expect("run created");
    let call = |index: u32, hash: &str, result: &str| CallRecord {
        run_id,
        step_id: "a".into(),
        call_index: index,
        task: "summarize_file".into(),
        tier: "local".into(),
        cache_hit: false,
        prompt_tokens: 1,
        completion_tokens: 1,
        cost_micros: 0,
        saved_micros: 0,
        latency_ms: 1,
        result: result.into(),
        fallbacks: Vec::new(),
        request_sha256: Some(hash.into()),
    };
    store
        .write(|txn| txn.record_call(&call(0, "about-a", "answer a")))
        .expect("record");
    store
        .write(|txn| txn.record_call(&call(1, "about-b", "answer b")))
        .expect("record");
    let lookup = |index, hash| {
        store
            .recorded_call(run_id, "a", index, "summarize_file", hash)
            .expect("lookup")
            .map(|c| c.result)
    };
    assert_eq!(lookup(0, "about-a").as_deref(), Some("answer a"));
    // The re-run asks in another order: each question still gets its own answer.
    assert_eq!(lookup(0, "about-b").as_deref(), Some("answer b"));
    assert_eq!(lookup(0, "about-c"), None, "a new question is a new call");
    assert_eq!(
        store
            .recorded_call(run_id, "a", 0, "assess_risk", "about-a")
            .expect("lookup"),
        None,
        "another task never answers"
    );
    // The new question asked at a taken index is recorded after the others.
    store
        .write(|txn| txn.record_call(&call(0, "about-c", "answer c")))
        .expect("record");
    assert_eq!(lookup(0, "about-c").as_deref(), Some("answer c"));
    assert_eq!(store.calls(run_id).expect("calls").len(), 3);
}

#[test]
fn ten_connections_migrate_a_fresh_database_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cairn.db");
    let opened: Vec<_> = (0..10)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Store::open(&path).map(|_| ()))
        })
        .collect();
    for handle in opened {
        handle
            .join()
            .expect("no panic")
            .expect("every opener succeeds");
    }
}
