//! A state database refused as damaged is left exactly as found, including its write-ahead
//! log; an empty `cairn.db` is refused rather than silently made into a fresh history; and
//! `cairn doctor` runs the full integrity check without changing anything.

use std::path::Path;

use cairn_tests::{Output, Sandbox, run_ids};

const EXIT_ERROR: i32 = 3;

/// Size and bytes of the database and its sidecars (`None` when missing).
fn snapshot(db: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    ["", "-wal", "-journal"]
        .iter()
        .map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            (path.clone(), std::fs::read(&path).ok())
        })
        .collect()
}

fn shm_exists(db: &Path) -> bool {
    Path::new(&format!("{}-shm", db.display())).exists()
}

fn assert_refused(output: &Output, db: &Path, what: &str) {
    assert_eq!(output.code, Some(EXIT_ERROR), "{what}\n{output}");
    assert!(
        output.stderr.contains(&db.display().to_string()),
        "{what}: the error names the database\n{output}"
    );
    assert!(!output.stderr.contains("panicked"), "{what}\n{output}");
    assert!(
        output.stdout.is_empty(),
        "{what}: nothing on stdout\n{output}"
    );
}

/// A sandbox whose database has committed pages and a write-ahead log holding more commits
/// (as after a crash, or while another engine runs), with garbage over the middle pages.
fn corrupt_database_with_a_wal() -> Sandbox {
    let source = Sandbox::new();
    let workflow = source.write(
        "chatty.yaml",
        "name: chatty\nsteps:\n  - id: talk\n    run: seq 1 4000\n",
    );
    for _ in 0..2 {
        let output = source.cairn(&["run", &workflow.display().to_string(), "-q"]);
        assert_eq!(output.code, Some(0), "{output}");
    }
    let conn = source.db();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .expect("no automatic checkpoint");
    conn.execute(
        "INSERT INTO step_logs (run_id, step_id, attempt, stream, line, at)
         SELECT run_id, step_id, attempt, stream, line, at FROM step_logs WHERE seq <= 500",
        [],
    )
    .expect("commit into the WAL");
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page_size");
    // Copy the three files while the connection is idle: a consistent database whose newest
    // commits live only in its WAL.
    let target = Sandbox::new();
    std::fs::create_dir_all(target.home()).expect("create home");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", source.db_path().display());
        let to = format!("{}{suffix}", target.db_path().display());
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
    drop(conn);
    let wal = std::fs::metadata(format!("{}-wal", target.db_path().display()))
        .expect("the WAL was copied");
    assert!(wal.len() > 0, "the WAL holds commits");

    let mut bytes = std::fs::read(target.db_path()).expect("read the database");
    let pages = bytes.len() as u64 / page_size;
    assert!(pages >= 16, "too small to have a middle: {pages} pages");
    let start = (pages / 2 * page_size) as usize;
    for (offset, byte) in bytes[start..start + 3 * page_size as usize]
        .iter_mut()
        .enumerate()
    {
        *byte = (offset * 7919 % 251) as u8;
    }
    std::fs::write(target.db_path(), &bytes).expect("corrupt the database");
    target
}

#[test]
fn a_refused_database_with_a_wal_is_left_exactly_as_found() {
    let sandbox = corrupt_database_with_a_wal();
    let db = sandbox.db_path();
    let before = snapshot(&db);
    let workflow = sandbox.write("w.yaml", "name: w\nsteps:\n  - id: a\n    run: 'true'\n");
    for args in [
        vec!["runs", "--json"],
        vec!["status", "1"],
        vec!["run", &workflow.display().to_string(), "-q"],
    ] {
        let output = sandbox.cairn(&args);
        assert_refused(&output, &db, &args.join(" "));
        assert!(
            output.stderr.contains("corrupt"),
            "says what is wrong\n{output}"
        );
        assert_eq!(
            snapshot(&db),
            before,
            "`cairn {}` changed the refused database or its WAL",
            args.join(" ")
        );
        assert!(shm_exists(&db), "the -shm file is kept");
    }

    let doctor = sandbox.cairn(&["doctor"]);
    assert_eq!(doctor.code, Some(EXIT_ERROR), "{doctor}");
    assert!(doctor.stdout.contains("FAILED"), "{doctor}");
    assert_eq!(snapshot(&db), before, "the doctor changes nothing");
}

#[test]
fn an_empty_database_file_is_refused_not_initialised() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("create home");
    let db = sandbox.db_path();
    std::fs::write(&db, b"").expect("write an empty file");
    for args in [vec!["runs"], vec!["status"], vec!["resume"]] {
        let output = sandbox.cairn(&args);
        assert_refused(&output, &db, &args.join(" "));
        assert!(output.stderr.contains("empty"), "{output}");
        assert_eq!(std::fs::metadata(&db).expect("still there").len(), 0);
        assert!(!Path::new(&format!("{}-wal", db.display())).exists());
    }
}

#[test]
fn doctor_runs_the_full_check_on_a_healthy_database() {
    let sandbox = Sandbox::new();
    let fresh = sandbox.cairn(&["doctor"]);
    assert_eq!(fresh.code, Some(0), "no database yet is healthy\n{fresh}");
    assert!(fresh.stdout.contains("not created yet"), "{fresh}");

    let workflow = sandbox.write("w.yaml", "name: w\nsteps:\n  - id: a\n    run: echo hi\n");
    let run = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(run.code, Some(0), "{run}");
    let doctor = sandbox.cairn(&["doctor"]);
    assert_eq!(doctor.code, Some(0), "{doctor}");
    assert!(doctor.stdout.contains("integrity_check"), "{doctor}");
    assert!(doctor.stdout.contains("ok"), "{doctor}");
    assert_eq!(run_ids(&sandbox.db()), [1]);
}
