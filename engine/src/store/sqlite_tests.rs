//! The SQLite store's own cases against real files in a temporary directory: damaged and
//! newer files, concurrent migration, recorded model calls. The run core's contract runs on
//! both backends in `shared_tests.rs`.

use serde_json::json;

use super::*;
use crate::store::CallRecord;
use crate::store::NewRun;

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
