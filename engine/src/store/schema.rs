//! Schema migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the database one version up; all pending ones are applied
//! in one exclusive transaction, so processes opening a fresh home at once cannot race. A
//! database newer than this build is refused rather than guessed at.

use rusqlite::{Connection, TransactionBehavior};

use super::error::{Error, Result};

/// Index `i` upgrades version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, attempts, the append-only event log, step logs.
    r#"
    CREATE TABLE runs (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow          TEXT    NOT NULL,
        source_path       TEXT,
        definition        TEXT    NOT NULL,  -- the exact YAML the run started with
        definition_sha256 TEXT    NOT NULL,
        context           TEXT    NOT NULL,  -- JSON: repo, commit, branch, trigger
        state             TEXT    NOT NULL,
        reason            TEXT,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        lease_owner       TEXT,
        lease_expires_at  INTEGER,
        created_at        INTEGER NOT NULL,
        finished_at       INTEGER
    );
    CREATE INDEX runs_by_state ON runs(state);

    CREATE TABLE steps (
        run_id           INTEGER NOT NULL REFERENCES runs(id),
        step_id          TEXT    NOT NULL,
        position         INTEGER NOT NULL,
        state            TEXT    NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        outputs          TEXT,
        error            TEXT,
        next_attempt_at  INTEGER,
        lease_owner      TEXT,
        lease_expires_at INTEGER,
        started_at       INTEGER,
        finished_at      INTEGER,
        PRIMARY KEY (run_id, step_id)
    );

    CREATE TABLE attempts (
        run_id        INTEGER NOT NULL,
        step_id       TEXT    NOT NULL,
        attempt       INTEGER NOT NULL,
        owner         TEXT    NOT NULL,
        process_group INTEGER,
        state         TEXT    NOT NULL,  -- running, succeeded, failed, interrupted, cancelled
        failure       TEXT,              -- failure class when it failed
        exit_code     INTEGER,
        error         TEXT,
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        PRIMARY KEY (run_id, step_id, attempt)
    );

    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  INTEGER NOT NULL,
        step_id TEXT,
        attempt INTEGER,
        kind    TEXT    NOT NULL,
        data    TEXT    NOT NULL,
        at      INTEGER NOT NULL
    );
    CREATE INDEX events_by_run ON events(run_id, seq);
    CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

    CREATE TABLE step_logs (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  INTEGER NOT NULL,
        step_id TEXT    NOT NULL,
        attempt INTEGER NOT NULL,
        stream  TEXT    NOT NULL,
        line    TEXT    NOT NULL,
        at      INTEGER NOT NULL
    );
    CREATE INDEX step_logs_by_step ON step_logs(run_id, step_id, seq);
    "#,
    // 2: trigger state: the last commit seen per watched branch, and repository health.
    r#"
    CREATE TABLE cursors (
        workflow   TEXT    NOT NULL,
        repo_url   TEXT    NOT NULL,
        branch     TEXT    NOT NULL,
        commit_id  TEXT    NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, repo_url, branch)
    );
    CREATE TABLE repositories (
        url             TEXT    PRIMARY KEY,
        failures        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        last_note       TEXT,
        last_ok_at      INTEGER,
        last_poll_at    INTEGER,
        next_attempt_at INTEGER
    );
    "#,
    // 3: language-model calls: the response cache, the durable call history, budget ledger.
    r#"
    CREATE TABLE llm_cache (
        key               TEXT    PRIMARY KEY,
        task              TEXT    NOT NULL,
        tier              TEXT    NOT NULL,
        model             TEXT    NOT NULL,
        response          TEXT    NOT NULL,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost_micros       INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        expires_at        INTEGER NOT NULL,
        hits              INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE llm_calls (
        run_id            INTEGER NOT NULL,
        step_id           TEXT    NOT NULL,
        call_index        INTEGER NOT NULL,
        task              TEXT    NOT NULL,
        tier              TEXT    NOT NULL,  -- local, remote or rules: who answered
        cache_hit         INTEGER NOT NULL,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost_micros       INTEGER NOT NULL,
        saved_micros      INTEGER NOT NULL,  -- what a cache hit would have cost
        latency_ms        INTEGER NOT NULL,
        result            TEXT    NOT NULL,
        fallbacks         TEXT    NOT NULL,  -- JSON list: why earlier tiers did not answer
        at                INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_id, call_index)
    );
    CREATE TABLE llm_budget (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tier        TEXT    NOT NULL,
        run_id      INTEGER,
        day         TEXT    NOT NULL,  -- YYYY-MM-DD (UTC)
        month       TEXT    NOT NULL,  -- YYYY-MM
        tokens      INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        state       TEXT    NOT NULL,  -- reserved, settled, released
        at          INTEGER NOT NULL
    );
    CREATE INDEX llm_budget_by_day ON llm_budget(tier, day);
    CREATE INDEX llm_budget_by_month ON llm_budget(tier, month);
    "#,
    // 4: per-test results and the flaky-test quarantine of the test agent.
    r#"
    CREATE TABLE test_results (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      INTEGER NOT NULL,
        step_id     TEXT    NOT NULL,
        repo        TEXT    NOT NULL,
        commit_id   TEXT    NOT NULL,
        test_id     TEXT    NOT NULL,
        outcome     TEXT    NOT NULL,  -- passed, failed, flaky, ignored
        duration_ms INTEGER,
        at          INTEGER NOT NULL
    );
    CREATE INDEX test_results_by_test ON test_results(repo, test_id, id);
    CREATE TABLE test_quarantine (
        repo          TEXT    NOT NULL,
        test_id       TEXT    NOT NULL,
        since         INTEGER NOT NULL,
        reason        TEXT    NOT NULL,
        passes_in_row INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (repo, test_id)
    );
    "#,
    // 5: the test agent's learned file→test map (co-changes from git history, failures after
    // changes), the commits already learned from, and generated-test proposals with verdicts.
    r#"
    CREATE TABLE test_links (
        repo        TEXT    NOT NULL,
        source_path TEXT    NOT NULL,
        test_file   TEXT    NOT NULL,
        kind        TEXT    NOT NULL,  -- co_change, failure
        count       INTEGER NOT NULL,
        last_commit TEXT    NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (repo, source_path, test_file, kind)
    );
    CREATE TABLE test_learned_commits (
        repo      TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        PRIMARY KEY (repo, commit_id)
    );
    CREATE TABLE test_proposals (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      INTEGER NOT NULL,
        step_id     TEXT    NOT NULL,
        repo        TEXT    NOT NULL,
        commit_id   TEXT    NOT NULL,
        source_path TEXT    NOT NULL,
        function    TEXT    NOT NULL,
        test_path   TEXT    NOT NULL,
        status      TEXT    NOT NULL,  -- accepted, rejected
        reason      TEXT    NOT NULL,  -- accepted, invalid, compile_error, fails_on_new, flaky, passes_on_parent
        detail      TEXT    NOT NULL,  -- the evidence: compile error excerpt, failing output
        code        TEXT    NOT NULL,
        tier        TEXT    NOT NULL,  -- who proposed it: local, remote, rules
        at          INTEGER NOT NULL
    );
    CREATE INDEX test_proposals_by_repo ON test_proposals(repo, id);
    "#,
    // 6: notifications the deploy and monitor steps accepted (per alert key, for de-duplication
    // across steps and runs) and sent (per message, for the per-run cap).
    r#"
    CREATE TABLE notifications (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  INTEGER NOT NULL,
        service TEXT    NOT NULL,
        kind    TEXT    NOT NULL,  -- alert (accepted, by key), message (sent)
        key     TEXT    NOT NULL,
        at      INTEGER NOT NULL
    );
    CREATE INDEX notifications_by_key ON notifications(service, kind, key, at);
    CREATE INDEX notifications_by_run ON notifications(run_id, kind);
    "#,
    // 7: fencing. Every claim of a run raises its epoch; a driver's writes check owner and
    // epoch inside their transaction. Recorded model calls keep a hash of their request, so a
    // replay answers only the same question.
    r#"
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE llm_calls ADD COLUMN request_sha256 TEXT;
    "#,
    // 8: the deploy and build agents' memory, moved out of JSON files beside the runs into
    // the store: each service's deployment state, a lock per service so that one traffic
    // change happens at a time, and recent builds per image repository.
    r#"
    CREATE TABLE deployments (
        service    TEXT    PRIMARY KEY,
        state      TEXT    NOT NULL,  -- JSON: active, retired, in_progress, history
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE service_locks (
        service     TEXT    PRIMARY KEY,
        holder      TEXT    NOT NULL,  -- engine owner id (host:pid:start-time)
        purpose     TEXT    NOT NULL,  -- e.g. "deploy run 12", "rollback"
        acquired_at INTEGER NOT NULL
    );
    CREATE TABLE builds (
        key        TEXT    PRIMARY KEY,  -- run_id/step_id
        repository TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL,
        record     TEXT    NOT NULL      -- JSON: the build agent's record
    );
    CREATE INDEX builds_by_repository ON builds(repository, at_ms);
    "#,
    // 9 (retention, `cairn gc`): the event log stays append-only for every run that exists; a
    // run deleted by retention takes its events with it. Indexes for pruning by age and run.
    r#"
    DROP TRIGGER events_are_append_only_delete;
    CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
        WHEN EXISTS (SELECT 1 FROM runs WHERE id = OLD.run_id)
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE INDEX runs_by_finished ON runs(finished_at);
    CREATE INDEX test_results_by_run ON test_results(run_id);
    "#,
    // 10: budget reservations expire: one left `reserved` by a process that died mid-call stops
    // holding the budget once its call could no longer be running (NULL: rows from before,
    // which expire an hour after they were made).
    r#"
    ALTER TABLE llm_budget ADD COLUMN expires_at INTEGER;
    CREATE INDEX llm_budget_reserved ON llm_budget(state, expires_at);
    "#,
    // 11: risk learned from history (`cairn risk calibrate`): per repository, the fitted model
    // and what its time-ordered evaluation measured. A repository is known by its path and by
    // its root commit, so a clone of it (a run's workspace) finds the same model.
    r#"
    CREATE TABLE risk_models (
        repo          TEXT    PRIMARY KEY,  -- the repository's canonical path
        root_commit   TEXT    NOT NULL,     -- its first commit: the same in every clone
        head          TEXT    NOT NULL,     -- the commit calibrated at
        model         TEXT    NOT NULL,     -- JSON: features, means, scales, coefficients
        evaluation    TEXT    NOT NULL,     -- JSON: AUC, precision/recall of high, spans
        calibrated_at INTEGER NOT NULL
    );
    CREATE INDEX risk_models_by_root ON risk_models(root_commit, calibrated_at);
    "#,
    // 12: secrets (`cairn secret set`), sealed with XChaCha20-Poly1305 under the key file
    // `$CAIRN_HOME/secrets.key`; the name is the associated data, so a row moved to another
    // name does not open.
    r#"
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        updated_at INTEGER NOT NULL
    );
    "#,
    // 13: API tokens of `cairn serve --listen` (`cairn token create`): only the SHA-256 of each
    // token is kept; the token itself is printed once.
    r#"
    CREATE TABLE api_tokens (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT    NOT NULL,
        scope        TEXT    NOT NULL,  -- read, write
        sha256       TEXT    NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    "#,
    // 14: per-test coverage (test selection): the lines of each source file a test file's tests
    // executed, from the newest coverage run that ran that test file, and the commit it ran at.
    r#"
    CREATE TABLE test_coverage (
        repo TEXT NOT NULL,
        test_file TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        source_path TEXT NOT NULL,
        lines TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (repo, test_file, source_path)
    );
    "#,
    // 15: the runs list (API, dashboard) shows each run's risk and route, the first step
    // outputs that carry them. Few steps publish either, so partial indexes make that lookup
    // one probe per run instead of a JSON parse of every step's outputs on every request.
    r#"
    CREATE INDEX steps_publishing_risk ON steps (run_id, position)
        WHERE json_extract(outputs, '$.risk') IS NOT NULL;
    CREATE INDEX steps_publishing_route ON steps (run_id, position)
        WHERE json_extract(outputs, '$.route') IS NOT NULL;
    "#,
    // 16: artifacts and caches (`store/files.rs`). Their bytes are blob files named by SHA-256
    // under `$CAIRN_HOME/blobs/sha256/`; these rows are the index, and a blob no row names is
    // garbage for `cairn gc`. An artifact row is one file of a step's archive (`archive`);
    // a cache row is one immutable key of one repository (`scope`).
    r#"
    CREATE TABLE artifacts (
        run_id     INTEGER NOT NULL,
        step_id    TEXT    NOT NULL,
        path       TEXT    NOT NULL,
        size       INTEGER NOT NULL,
        sha256     TEXT    NOT NULL,
        archive    TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, step_id, path)
    );
    CREATE INDEX artifacts_by_archive ON artifacts (archive);
    CREATE TABLE caches (
        scope        TEXT    NOT NULL,
        key          TEXT    NOT NULL,
        blob         TEXT    NOT NULL,
        size         INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX caches_by_use ON caches (last_used_at);
    CREATE INDEX caches_by_blob ON caches (blob);
    "#,
    // 17: the test agent's fix suggestions share the proposals table with generated tests:
    // `kind` tells them apart (`test`, `fix`); every row from before is a generated test.
    r#"
    ALTER TABLE test_proposals ADD COLUMN kind TEXT NOT NULL DEFAULT 'test';
    "#,
    // 18: work for workers (`cairn worker`, `runs_on:`): one row per dispatched step attempt,
    // leased by a worker with matching labels under a fencing epoch, its result read back by
    // the engine driving the run (`consumed`, so a resumed engine adopts an unread result).
    r#"
    CREATE TABLE tasks (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id           INTEGER NOT NULL,
        step_id          TEXT    NOT NULL,
        attempt          INTEGER NOT NULL,
        labels           TEXT    NOT NULL,  -- JSON list: every one the worker must have
        spec             TEXT    NOT NULL,  -- JSON: command, env, timeout_ms
        state            TEXT    NOT NULL,  -- queued, leased, succeeded, failed, cancelled
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        worker           TEXT,
        lease_epoch      INTEGER NOT NULL DEFAULT 0,
        lease_expires_at INTEGER,
        result           TEXT,              -- JSON: the outcome, once finished
        consumed         INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL,
        finished_at      INTEGER
    );
    CREATE INDEX tasks_open ON tasks (state, id);
    CREATE INDEX tasks_by_step ON tasks (run_id, step_id);
    "#,
];

pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`LATEST_VERSION`] in one `BEGIN IMMEDIATE` transaction, reading
/// the version inside it: when several processes open a fresh home at once, one migrates and
/// the others wait on the write lock, then find nothing left to do.
pub fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<()> {
    let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = txn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > LATEST_VERSION {
        return Err(Error::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: LATEST_VERSION,
        });
    }
    if found == LATEST_VERSION {
        return Ok(());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        txn.execute_batch(sql)
            .map_err(|source| Error::Migrate { version, source })?;
    }
    txn.pragma_update(None, "user_version", LATEST_VERSION)
        .map_err(|source| Error::Migrate {
            version: LATEST_VERSION,
            source,
        })?;
    txn.commit().map_err(|source| Error::Migrate {
        version: LATEST_VERSION,
        source,
    })?;
    Ok(())
}
