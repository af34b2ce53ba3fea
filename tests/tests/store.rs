//! The state database and workflow files as inputs that can be broken: a database with
//! garbage over its middle, a file that is not SQLite at all, and a workflow that does not
//! validate. Each must give a clear error with the right exit code, never a panic, and a
//! broken database must not be written to (it is evidence, and maybe recoverable).

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use cairn_tests::{Output, Sandbox, integrity_check, run_ids};

/// Exit code for errors other than an invalid workflow or a failed run.
const EXIT_ERROR: i32 = 3;
const EXIT_INVALID: i32 = 2;

/// Every command a user might try first on a broken database.
fn commands(sandbox: &Sandbox, workflow: &str) -> Vec<Output> {
    [
        vec!["runs", "--json"],
        vec!["status", "1", "--json"],
        vec!["logs", "1"],
        vec!["resume"],
        vec!["cancel", "1"],
        vec!["run", workflow, "-q"],
    ]
    .iter()
    .map(|args| sandbox.cairn(args))
    .collect()
}

fn assert_refused(sandbox: &Sandbox, outputs: &[Output], what: &str) {
    let path = sandbox.db_path().display().to_string();
    for output in outputs {
        assert_eq!(output.code, Some(EXIT_ERROR), "{what}\n{output}");
        let message = output.stderr.to_lowercase();
        assert!(
            message.contains("corrupt") || message.contains("integrity"),
            "{what}: the error should say the database is corrupt\n{output}"
        );
        assert!(
            output.stderr.contains(&path),
            "{what}: the error should name {path}\n{output}"
        );
        assert!(!output.stderr.contains("panicked"), "{what}\n{output}");
        assert!(
            output.stdout.is_empty(),
            "{what}: nothing on stdout\n{output}"
        );
    }
}

fn workflow(sandbox: &Sandbox) -> String {
    // Enough log lines that the database spans many pages.
    sandbox
        .write(
            "chatty.yaml",
            "name: chatty\nsteps:\n  - id: talk\n    run: seq 1 3000\n  \
             - id: more\n    depends_on: talk\n    run: seq 1 1000\n",
        )
        .display()
        .to_string()
}

/// The database file and its WAL sidecars, byte for byte (missing ones as `None`).
fn files(sandbox: &Sandbox) -> Vec<(String, Option<Vec<u8>>)> {
    let db = sandbox.db_path();
    ["", "-wal", "-journal"]
        .iter()
        .map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            let bytes = std::fs::read(&path).ok();
            (path, bytes)
        })
        .collect()
}

#[test]
fn garbage_over_the_middle_of_the_database_is_reported_not_used() {
    let sandbox = Sandbox::new();
    let workflow = workflow(&sandbox);
    for _ in 0..3 {
        let output = sandbox.cairn(&["run", &workflow, "-q"]);
        assert_eq!(output.code, Some(0), "{output}");
    }
    // Fold the WAL into the main file, so the damage below hits committed pages.
    let (page_size, page_count) = {
        let conn = sandbox.db();
        assert_eq!(run_ids(&conn), [1, 2, 3]);
        assert_eq!(integrity_check(&conn), "ok");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("failed to checkpoint");
        let size: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page_size");
        let count: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        (size, count)
    };
    assert!(
        page_count >= 16,
        "the database is too small to have a middle: {page_count} pages"
    );

    let mut bytes = std::fs::read(sandbox.db_path()).expect("failed to read the database");
    let start = (page_count / 2 * page_size) as usize;
    let mut garbage = vec![0u8; 3 * page_size as usize];
    StdRng::seed_from_u64(7).fill_bytes(&mut garbage);
    bytes[start..start + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(sandbox.db_path(), &bytes).expect("failed to corrupt the database");
    let before = files(&sandbox);

    let outputs = commands(&sandbox, &workflow);
    assert_refused(&sandbox, &outputs, "garbage in the middle");
    assert!(
        outputs[0].stderr.contains("quick_check"),
        "the error should quote what the integrity check found\n{}",
        outputs[0]
    );
    assert_eq!(
        files(&sandbox),
        before,
        "a corrupt database must not be modified"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_reported_not_overwritten() {
    let sandbox = Sandbox::new();
    let workflow = workflow(&sandbox);
    std::fs::create_dir_all(sandbox.home()).expect("failed to create CAIRN_HOME");
    let text = "these are my notes, not a database\n".repeat(200);
    std::fs::write(sandbox.db_path(), &text).expect("failed to write the file");
    let before = files(&sandbox);

    let outputs = commands(&sandbox, &workflow);
    assert_refused(&sandbox, &outputs, "not a database");
    assert!(
        outputs[0].stderr.contains("not a database"),
        "the error should say what SQLite found\n{}",
        outputs[0]
    );
    assert_eq!(files(&sandbox), before, "the file must be left as it was");
    assert_eq!(
        std::fs::read_to_string(sandbox.db_path()).ok().as_deref(),
        Some(text.as_str())
    );
}

#[test]
fn an_invalid_workflow_is_reported_with_file_line_and_column() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "broken.yaml",
        "name: broken\nsteps:\n  - id: build\n    run: make\n    dependson: test\n  \
         - id: test\n    run: make test\n    timeout: soon\n",
    );
    let file = path.display().to_string();

    let validate = sandbox.cairn(&["validate", &file]);
    assert_eq!(validate.code, Some(EXIT_INVALID), "{validate}");
    // Every problem, each with file:line:col:, in file order.
    let unknown_key = format!("{file}:5:5: ");
    let bad_timeout = format!("{file}:8:14: ");
    let lines: Vec<&str> = validate.stderr.lines().collect();
    let first = lines.iter().position(|l| l.starts_with(&unknown_key));
    let second = lines.iter().position(|l| l.starts_with(&bad_timeout));
    assert!(
        first.is_some() && second.is_some(),
        "expected {unknown_key} and {bad_timeout}\n{validate}"
    );
    assert!(first < second, "diagnostics out of order\n{validate}");
    assert!(validate.stderr.contains("dependson"), "{validate}");
    assert!(
        validate.stderr.contains("depends_on"),
        "a did-you-mean is expected\n{validate}"
    );
    assert!(!validate.stderr.contains("panicked"), "{validate}");

    // `cairn run` refuses it the same way and records nothing.
    let run = sandbox.cairn(&["run", &file, "-q"]);
    assert_eq!(run.code, Some(EXIT_INVALID), "{run}");
    assert!(run.stderr.contains(&unknown_key), "{run}");
    assert!(
        run.stdout.is_empty(),
        "no run id for an invalid workflow\n{run}"
    );
    if let Some(conn) = sandbox.try_db() {
        assert!(
            run_ids(&conn).is_empty(),
            "an invalid workflow must not create a run"
        );
    }

    let good = sandbox.write(
        "good.yaml",
        "name: good\nsteps:\n  - id: only\n    run: 'true'\n",
    );
    let ok = sandbox.cairn(&["validate", &good.display().to_string()]);
    assert_eq!(ok.code, Some(0), "{ok}");

    let missing = sandbox.cairn(&[
        "validate",
        &sandbox.path("missing.yaml").display().to_string(),
    ]);
    assert_eq!(missing.code, Some(EXIT_INVALID), "{missing}");
    assert!(missing.stderr.contains("missing.yaml:1:1:"), "{missing}");
}
