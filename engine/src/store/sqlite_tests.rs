//! The SQLite store's own cases against real files in a temporary directory: damaged and
//! newer files, concurrent migration. The store's contract runs on both backends in
//! `shared_tests.rs`.

use super::*;

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
