//! The SQLite store: one database file, WAL, `synchronous=FULL`.
//!
//! Every state change goes through a [`WriteTxn`], which appends the matching row to `events`
//! in the same transaction. Callers batch several changes into one transaction (group commit)
//! to get throughput without weakening durability.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::check;
use super::error::{Error, Result};
use super::records::{
    Claim, EventRecord, Fence, LogLine, NewRun, RepositoryStatus, RunRecord, StepRecord,
    StepTransition, StoredLogLine,
};
use super::schema;
use super::state::{RunState, StepState};

/// A handle to the state database; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database, checks it (`quick_check`, read-only first, so
    /// a damaged file is refused untouched: see `check.rs`) and migrates it.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| {
                check::writable_or(
                    dir,
                    Error::CreateDir {
                        path: dir.to_path_buf(),
                        source,
                    },
                )
            })?;
        }
        create_if_missing(path)?;
        check::refuse_damaged(path, check::Check::Quick)?;
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(|source| {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            match dir {
                Some(dir) => check::writable_or(dir, open_err(source)),
                None => open_err(source),
            }
        })?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied transaction behind
        // (SQLite rolls it back), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction and commits it durably.
    pub fn write<T>(&self, work: impl FnOnce(&WriteTxn<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = work(&WriteTxn { txn: &txn })?;
        txn.commit()?;
        Ok(value)
    }

    /// `PRAGMA integrity_check` on the open database: the full check, O(database size) with
    /// index lookups, for `cairn doctor` and `cairn serve`'s periodic check.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(check::run_check(&self.lock(), check::Check::Full)?)
    }

    pub fn run(&self, run_id: i64) -> Result<RunRecord> {
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
            [run_id],
            run_from_row,
        )
        .optional()?
        .ok_or(Error::RunNotFound(run_id))?
    }

    /// The newest runs first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], run_from_row)?;
        rows.map(|row| row?).collect()
    }

    /// Runs not in a terminal state, oldest first.
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], run_from_row)?;
        rows.map(|row| row?).collect()
    }

    pub fn steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY position"
        ))?;
        let rows = stmt.query_map([run_id], step_from_row)?;
        rows.map(|row| row?).collect()
    }

    pub fn events(&self, run_id: i64) -> Result<Vec<EventRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, run_id, step_id, attempt, kind, data, at FROM events
             WHERE run_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([run_id], |row| {
            Ok(EventRecord {
                seq: row.get(0)?,
                run_id: row.get(1)?,
                step_id: row.get(2)?,
                attempt: row.get(3)?,
                kind: row.get(4)?,
                data: parse_json(row.get::<_, String>(5)?),
                at: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Log lines of a run (optionally one step) with `seq > after`, in order.
    pub fn logs(
        &self,
        run_id: i64,
        step_id: Option<&str>,
        after: i64,
    ) -> Result<Vec<StoredLogLine>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, step_id, attempt, stream, line, at FROM step_logs
             WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) AND seq > ?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![run_id, step_id, after], |row| {
            Ok(StoredLogLine {
                seq: row.get(0)?,
                step_id: row.get(1)?,
                attempt: row.get(2)?,
                stream: row.get(3)?,
                line: row.get(4)?,
                at: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends log lines in one transaction (logs are batched by the caller). With a `fence`,
    /// the lines are dropped when another engine has claimed the run since (its epoch moved):
    /// a replaced engine's late output must not land beside its successor's.
    pub fn append_logs(&self, lines: &[LogLine], fence: Option<&Fence>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            if let Some(fence) = fence {
                let epoch: Option<i64> = txn
                    .txn
                    .prepare_cached("SELECT lease_epoch FROM runs WHERE id = ?1")?
                    .query_row([fence.run_id], |row| row.get(0))
                    .optional()?;
                if epoch != Some(fence.epoch) {
                    return Ok(());
                }
            }
            let mut stmt = txn.txn.prepare_cached(
                "INSERT INTO step_logs (run_id, step_id, attempt, stream, line, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for line in lines {
                stmt.execute(params![
                    line.run_id,
                    line.step_id,
                    line.attempt,
                    line.stream,
                    line.line,
                    line.at
                ])?;
            }
            Ok(())
        })
    }

    /// Failed attempts per step (interrupted ones are not failures).
    pub fn failed_attempts(&self, run_id: i64) -> Result<std::collections::HashMap<String, u32>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT step_id, COUNT(*) FROM attempts WHERE run_id = ?1 AND state = 'failed'
             GROUP BY step_id",
        )?;
        let rows = stmt.query_map([run_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The last commit a workflow has started runs up to on a watched branch.
    pub fn cursor(&self, workflow: &str, repo_url: &str, branch: &str) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT commit_id FROM cursors WHERE workflow = ?1 AND repo_url = ?2 AND branch = ?3",
                params![workflow, repo_url, branch],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Branches with a cursor for a workflow and repository.
    pub fn cursor_branches(&self, workflow: &str, repo_url: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT branch FROM cursors WHERE workflow = ?1 AND repo_url = ?2 ORDER BY branch",
        )?;
        let rows = stmt.query_map(params![workflow, repo_url], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn repositories(&self) -> Result<Vec<RepositoryStatus>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT url, failures, last_error, last_note, last_ok_at, last_poll_at, next_attempt_at
             FROM repositories ORDER BY url",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(RepositoryStatus {
                url: row.get(0)?,
                failures: row.get(1)?,
                last_error: row.get(2)?,
                last_note: row.get(3)?,
                last_ok_at: row.get(4)?,
                last_poll_at: row.get(5)?,
                next_attempt_at: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn cancel_requested(&self, run_id: i64) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT cancel_requested FROM runs WHERE id = ?1",
            [run_id],
            |row| row.get::<_, bool>(0),
        )?)
    }
}

/// A write transaction. Every method that changes state also appends its event.
pub struct WriteTxn<'a> {
    pub(super) txn: &'a rusqlite::Transaction<'a>,
}

impl WriteTxn<'_> {
    pub fn append_event(
        &self,
        run_id: i64,
        step_id: Option<&str>,
        attempt: Option<u32>,
        kind: &str,
        data: &Value,
    ) -> Result<()> {
        self.txn
            .prepare_cached(
                "INSERT INTO events (run_id, step_id, attempt, kind, data, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                run_id,
                step_id,
                attempt,
                kind,
                data.to_string(),
                now_ms()
            ])?;
        Ok(())
    }

    /// Creates a run in state `running`, leased to `new.owner`, with all steps pending.
    pub fn create_run(&self, new: &NewRun) -> Result<i64> {
        let now = now_ms();
        let sha = hex::encode(Sha256::digest(new.definition.as_bytes()));
        self.txn.execute(
            "INSERT INTO runs (workflow, source_path, definition, definition_sha256, context,
                               state, lease_owner, lease_expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)",
            params![
                new.workflow,
                new.source_path,
                new.definition,
                sha,
                new.context.to_string(),
                new.owner,
                now + new.lease_ms,
                now
            ],
        )?;
        let run_id = self.txn.last_insert_rowid();
        let mut insert = self.txn.prepare_cached(
            "INSERT INTO steps (run_id, step_id, position, state) VALUES (?1, ?2, ?3, 'pending')",
        )?;
        for (position, step_id) in new.step_ids.iter().enumerate() {
            insert.execute(params![run_id, step_id, position as i64])?;
        }
        self.append_event(
            run_id,
            None,
            None,
            "run_created",
            &serde_json::json!({
                "workflow": new.workflow,
                "definition_sha256": sha,
                "context": new.context,
                "owner": new.owner,
            }),
        )?;
        Ok(run_id)
    }

    /// Applies one step transition after checking it against the transition table.
    pub fn transition_step(&self, change: &StepTransition) -> Result<()> {
        let from: String = self
            .txn
            .prepare_cached("SELECT state FROM steps WHERE run_id = ?1 AND step_id = ?2")?
            .query_row(params![change.run_id, change.step_id], |row| row.get(0))
            .optional()?
            .ok_or_else(|| Error::StepNotFound {
                run_id: change.run_id,
                step_id: change.step_id.clone(),
            })?;
        let from: StepState = from.parse().map_err(|detail| Error::BadValue {
            what: "steps.state",
            detail,
        })?;
        if !from.can_become(change.to) {
            return Err(Error::IllegalTransition {
                run_id: change.run_id,
                step_id: change.step_id.clone(),
                from,
                to: change.to,
            });
        }
        let now = now_ms();
        let (lease_owner, lease_expires_at) = change
            .lease
            .clone()
            .map_or((None, None), |(owner, expires)| {
                (Some(owner), Some(expires))
            });
        let outputs = change.outputs.as_ref().map(Value::to_string);
        self.txn
            .prepare_cached(
                "UPDATE steps SET
                    state = ?3,
                    attempts = COALESCE(?4, attempts),
                    outputs = COALESCE(?5, outputs),
                    error = ?6,
                    next_attempt_at = ?7,
                    lease_owner = ?8,
                    lease_expires_at = ?9,
                    started_at = CASE WHEN ?3 = 'running' THEN COALESCE(started_at, ?10)
                                      ELSE started_at END,
                    finished_at = CASE WHEN ?11 THEN ?10 ELSE NULL END
                 WHERE run_id = ?1 AND step_id = ?2",
            )?
            .execute(params![
                change.run_id,
                change.step_id,
                change.to.as_str(),
                change.attempt,
                outputs,
                change.error,
                change.next_attempt_at,
                lease_owner,
                lease_expires_at,
                now,
                change.to.is_terminal(),
            ])?;
        let mut data = match &change.detail {
            Value::Object(map) => map.clone(),
            Value::Null => serde_json::Map::new(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("detail".into(), other.clone());
                map
            }
        };
        data.insert("from".into(), from.as_str().into());
        if let Some(error) = &change.error {
            data.insert("error".into(), error.clone().into());
        }
        if let Some(outputs) = &change.outputs {
            data.insert("outputs".into(), outputs.clone());
        }
        self.append_event(
            change.run_id,
            Some(&change.step_id),
            change.attempt,
            &format!("step_{}", change.to.as_str()),
            &Value::Object(data),
        )
    }

    pub fn start_attempt(
        &self,
        run_id: i64,
        step_id: &str,
        attempt: u32,
        owner: &str,
    ) -> Result<()> {
        self.txn
            .prepare_cached(
                "INSERT INTO attempts (run_id, step_id, attempt, owner, state, started_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            )?
            .execute(params![run_id, step_id, attempt, owner, now_ms()])?;
        Ok(())
    }

    /// Closes an attempt row; `state` is succeeded, failed, interrupted or cancelled.
    // One argument per column of the row it closes; the caller's `Write` is the named form.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_attempt(
        &self,
        run_id: i64,
        step_id: &str,
        attempt: u32,
        state: &str,
        failure: Option<&str>,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        self.txn
            .prepare_cached(
                "UPDATE attempts SET state = ?4, failure = ?5, exit_code = ?6, error = ?7,
                        finished_at = ?8
                 WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            )?
            .execute(params![
                run_id,
                step_id,
                attempt,
                state,
                failure,
                exit_code,
                error,
                now_ms()
            ])?;
        Ok(())
    }

    /// Ends a run that is still `running`; a run already finished (by another engine, or by
    /// `cairn cancel`) is never finished twice.
    pub fn finish_run(&self, run_id: i64, state: RunState, reason: Option<&str>) -> Result<()> {
        let changed = self.txn.execute(
            "UPDATE runs SET state = ?2, reason = ?3, finished_at = ?4, lease_owner = NULL,
                    lease_expires_at = NULL
             WHERE id = ?1 AND state = 'running'",
            params![run_id, state.as_str(), reason, now_ms()],
        )?;
        if changed == 0 {
            return Err(Error::RunNotRunning(run_id));
        }
        self.append_event(
            run_id,
            None,
            None,
            &format!("run_{}", state.as_str()),
            &serde_json::json!({ "reason": reason }),
        )
    }

    pub fn request_cancel(&self, run_id: i64, by: &str) -> Result<()> {
        let changed = self.txn.execute(
            "UPDATE runs SET cancel_requested = 1 WHERE id = ?1",
            [run_id],
        )?;
        if changed == 0 {
            return Err(Error::RunNotFound(run_id));
        }
        self.append_event(
            run_id,
            None,
            None,
            "run_cancel_requested",
            &serde_json::json!({ "by": by }),
        )
    }

    /// Takes the run's lease for `owner` unless another live owner holds an unexpired one, and
    /// raises its fencing epoch: every later write of the previous holder fails its
    /// [`WriteTxn::check_fence`], however long it was stalled. `owner_alive` tells whether a
    /// recorded owner still exists (same host, same process).
    pub fn claim_run(
        &self,
        run_id: i64,
        owner: &str,
        lease_ms: i64,
        owner_alive: &dyn Fn(&str) -> bool,
    ) -> Result<Claim> {
        let now = now_ms();
        let (current, expires, epoch, state): (Option<String>, Option<i64>, i64, String) = self
            .txn
            .query_row(
                "SELECT lease_owner, lease_expires_at, lease_epoch, state FROM runs WHERE id = ?1",
                [run_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?
            .ok_or(Error::RunNotFound(run_id))?;
        if state != "running" {
            return Err(Error::RunNotRunning(run_id));
        }
        let previous = current.filter(|holder| holder != owner);
        if let Some(holder) = &previous {
            let expires = expires.unwrap_or(0);
            if expires > now && owner_alive(holder) {
                return Err(Error::LeaseHeld {
                    run_id,
                    owner: holder.clone(),
                    remaining_ms: expires - now,
                });
            }
        }
        let epoch = epoch + 1;
        self.txn.execute(
            "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?3, lease_epoch = ?4
             WHERE id = ?1",
            params![run_id, owner, now + lease_ms, epoch],
        )?;
        if let Some(holder) = &previous {
            let reason = if expires.unwrap_or(0) <= now {
                format!("lease of {holder} expired")
            } else {
                format!("owner {holder} is gone (process no longer exists)")
            };
            self.append_event(
                run_id,
                None,
                None,
                "run_reclaimed",
                &serde_json::json!({
                    "previous_owner": holder,
                    "owner": owner,
                    "epoch": epoch,
                    "reason": reason,
                }),
            )?;
        }
        Ok(Claim {
            fence: Fence {
                run_id,
                owner: owner.to_string(),
                epoch,
            },
            previous,
        })
    }

    /// Proves that `fence` still holds the run: same owner, same epoch, run still `running`.
    /// Every write of a driving engine starts with this, inside its transaction, so an engine
    /// that stalled past its lease and was replaced writes nothing when it wakes up.
    pub fn check_fence(&self, fence: &Fence) -> Result<()> {
        let found: Option<(Option<String>, i64, String)> = self
            .txn
            .prepare_cached("SELECT lease_owner, lease_epoch, state FROM runs WHERE id = ?1")?
            .query_row([fence.run_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        match found {
            Some((Some(owner), epoch, state))
                if owner == fence.owner && epoch == fence.epoch && state == "running" =>
            {
                Ok(())
            }
            Some((holder, epoch, state)) => Err(Error::LeaseLost {
                run_id: fence.run_id,
                holder: holder.unwrap_or_else(|| "nobody".into()),
                epoch,
                state,
            }),
            None => Err(Error::RunNotFound(fence.run_id)),
        }
    }

    /// Extends the lease `fence` holds on its run and the run's running steps; fails with
    /// [`Error::LeaseLost`] when another engine has claimed the run since.
    pub fn renew_lease(&self, fence: &Fence, lease_ms: i64) -> Result<()> {
        self.check_fence(fence)?;
        let expires = now_ms() + lease_ms;
        self.txn.execute(
            "UPDATE runs SET lease_expires_at = ?2 WHERE id = ?1",
            params![fence.run_id, expires],
        )?;
        self.txn.execute(
            "UPDATE steps SET lease_expires_at = ?3
             WHERE run_id = ?1 AND lease_owner = ?2 AND state = 'running'",
            params![fence.run_id, fence.owner, expires],
        )?;
        Ok(())
    }

    pub fn set_cursor(
        &self,
        workflow: &str,
        repo_url: &str,
        branch: &str,
        commit: &str,
    ) -> Result<()> {
        self.txn
            .prepare_cached(
                "INSERT INTO cursors (workflow, repo_url, branch, commit_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workflow, repo_url, branch)
                 DO UPDATE SET commit_id = excluded.commit_id, updated_at = excluded.updated_at",
            )?
            .execute(params![workflow, repo_url, branch, commit, now_ms()])?;
        Ok(())
    }

    /// Moves a cursor from `expected` to `commit` if nobody moved it since `expected` was read
    /// (compare-and-set); returns whether it moved. Two pollers of one repository (two `cairn
    /// serve` on one home, a webhook and a cron tick) both see the same new commits, but only
    /// the one whose transaction moves the cursor creates their runs.
    pub fn advance_cursor(
        &self,
        workflow: &str,
        repo_url: &str,
        branch: &str,
        expected: Option<&str>,
        commit: &str,
    ) -> Result<bool> {
        let current: Option<String> = self
            .txn
            .prepare_cached(
                "SELECT commit_id FROM cursors WHERE workflow = ?1 AND repo_url = ?2 AND branch = ?3",
            )?
            .query_row(params![workflow, repo_url, branch], |row| row.get(0))
            .optional()?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        self.set_cursor(workflow, repo_url, branch, commit)?;
        Ok(true)
    }

    pub fn delete_cursor(&self, workflow: &str, repo_url: &str, branch: &str) -> Result<()> {
        self.txn.execute(
            "DELETE FROM cursors WHERE workflow = ?1 AND repo_url = ?2 AND branch = ?3",
            params![workflow, repo_url, branch],
        )?;
        Ok(())
    }

    /// Records a poll of a repository: success resets its failure count, failure raises it
    /// and sets when to try next.
    pub fn record_poll(
        &self,
        url: &str,
        error: Option<&str>,
        note: Option<&str>,
        next_attempt_at: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        self.txn
            .prepare_cached(
                "INSERT INTO repositories (url, failures, last_error, last_note, last_ok_at,
                                           last_poll_at, next_attempt_at)
                 VALUES (?1, CASE WHEN ?2 IS NULL THEN 0 ELSE 1 END, ?2, ?3,
                         CASE WHEN ?2 IS NULL THEN ?4 END, ?4, ?5)
                 ON CONFLICT (url) DO UPDATE SET
                    failures = CASE WHEN ?2 IS NULL THEN 0 ELSE failures + 1 END,
                    last_error = ?2,
                    last_note = COALESCE(?3, last_note),
                    last_ok_at = CASE WHEN ?2 IS NULL THEN ?4 ELSE last_ok_at END,
                    last_poll_at = ?4,
                    next_attempt_at = ?5",
            )?
            .execute(params![url, error, note, now, next_attempt_at])?;
        Ok(())
    }

    pub fn release_run(&self, run_id: i64, owner: &str) -> Result<()> {
        self.txn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?1 AND lease_owner = ?2",
            params![run_id, owner],
        )?;
        Ok(())
    }
}

pub(super) const RUN_COLUMNS: &str = "id, workflow, source_path, definition, definition_sha256, context, \
     state, reason, cancel_requested, lease_owner, lease_expires_at, created_at, finished_at";
/// [`RUN_COLUMNS`] without the definition's text (an empty string in its place): lists show
/// runs, not their YAML, and a long workflow's text copied for every row of every request is
/// most of what a list costs.
pub(super) const RUN_SUMMARY_COLUMNS: &str = "id, workflow, source_path, '' AS definition, definition_sha256, \
     context, state, reason, cancel_requested, lease_owner, lease_expires_at, created_at, finished_at";

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
    let state: String = row.get(6)?;
    Ok(state
        .parse::<RunState>()
        .map_err(|detail| Error::BadValue {
            what: "runs.state",
            detail,
        })
        .and_then(|state| {
            Ok(RunRecord {
                id: row.get(0)?,
                workflow: row.get(1)?,
                source_path: row.get(2)?,
                definition: row.get(3)?,
                definition_sha256: row.get(4)?,
                context: parse_json(row.get::<_, String>(5)?),
                state,
                reason: row.get(7)?,
                cancel_requested: row.get(8)?,
                lease_owner: row.get(9)?,
                lease_expires_at: row.get(10)?,
                created_at: row.get(11)?,
                finished_at: row.get(12)?,
            })
        }))
}

const STEP_COLUMNS: &str = "run_id, step_id, position, state, attempts, outputs, error, \
     next_attempt_at, lease_owner, lease_expires_at, started_at, finished_at";

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<Result<StepRecord>> {
    let state: String = row.get(3)?;
    Ok(state
        .parse::<StepState>()
        .map_err(|detail| Error::BadValue {
            what: "steps.state",
            detail,
        })
        .and_then(|state| {
            Ok(StepRecord {
                run_id: row.get(0)?,
                step_id: row.get(1)?,
                position: row.get(2)?,
                state,
                attempts: row.get(4)?,
                outputs: row.get::<_, Option<String>>(5)?.map(parse_json),
                error: row.get(6)?,
                next_attempt_at: row.get(7)?,
                lease_owner: row.get(8)?,
                lease_expires_at: row.get(9)?,
                started_at: row.get(10)?,
                finished_at: row.get(11)?,
            })
        }))
}

/// Stored JSON was written by us; if it is unreadable anyway, show it as a string rather than
/// refusing to display the run.
pub(super) fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Makes a new database under a temporary name, migrated and closed, then links it into place,
/// so that no process ever sees a half-made (empty) `cairn.db`: an empty one is then always
/// damage, refused by `check.rs`. When several processes create one at once the first link
/// wins and the others open it; a process killed midway leaves only its temporary file.
fn create_if_missing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        // Reported with its cause by `refuse_damaged`.
        Err(_) => return Ok(()),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cairn.db".to_owned());
    let temporary = path.with_file_name(format!(
        ".{name}.new-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let made = (|| -> Result<()> {
        let mut conn = Connection::open(&temporary).map_err(|source| {
            let error = Error::Open {
                path: path.to_path_buf(),
                source,
            };
            match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(dir) => check::writable_or(dir, error),
                None => error,
            }
        })?;
        // WAL is recorded in the file's header, so the linked database opens in WAL mode.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn, path)?;
        // Closing the last connection checkpoints the WAL into the file and removes it.
        conn.close().map_err(|(_, source)| Error::Sqlite(source))?;
        match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(Error::Create {
                path: path.to_path_buf(),
                source,
            }),
        }
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut leftover = temporary.clone().into_os_string();
        leftover.push(suffix);
        let _ = std::fs::remove_file(leftover);
    }
    made
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
