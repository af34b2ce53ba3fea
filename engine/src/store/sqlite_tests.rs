//! The store against real SQLite files in a temporary directory.

use serde_json::json;

use super::*;

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
    assert_eq!(taken.as_deref(), Some("host:1:1"));
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
