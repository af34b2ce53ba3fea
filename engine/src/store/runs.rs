//! The durable core of a run, on either backend: runs, steps, attempts, the append-only event
//! log, step logs, leases and fencing, trigger cursors and repository health.
//!
//! Every state change goes through a [`WriteTxn`], which appends the matching row to `events`
//! in the same transaction. Callers batch several changes into one transaction (group commit)
//! to get throughput without weakening durability.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use super::records::{
    Claim, EventRecord, Fence, LogFence, LogLine, NewRun, RepositoryStatus, RunRecord, StepRecord,
    StepTransition, StoredLogLine,
};
use super::sql::{Conn, Row};
use super::sqlite::{Store, now_ms, parse_json};
use super::state::{RunState, StepState};

/// A write transaction. Every method that changes state also appends its event.
pub struct WriteTxn<'a> {
    pub(super) conn: &'a dyn Conn,
}

impl Store {
    pub fn run(&self, run_id: i64) -> Result<RunRecord> {
        self.read(|conn| {
            let row = conn.query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                &[&run_id],
            )?;
            run_from_row(&row.ok_or(Error::RunNotFound(run_id))?)
        })
    }

    /// The newest runs first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let limit = limit as i64;
        self.read(|conn| {
            conn.query(
                &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"),
                &[&limit],
            )?
            .iter()
            .map(run_from_row)
            .collect()
        })
    }

    /// Runs not in a terminal state, oldest first.
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        self.read(|conn| {
            conn.query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' ORDER BY id"),
                &[],
            )?
            .iter()
            .map(run_from_row)
            .collect()
        })
    }

    pub fn steps(&self, run_id: i64) -> Result<Vec<StepRecord>> {
        self.read(|conn| {
            conn.query(
                &format!("SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?1 ORDER BY position"),
                &[&run_id],
            )?
            .iter()
            .map(step_from_row)
            .collect()
        })
    }

    pub fn events(&self, run_id: i64) -> Result<Vec<EventRecord>> {
        self.read(|conn| {
            conn.query(
                "SELECT seq, run_id, step_id, attempt, kind, data, at FROM events
                 WHERE run_id = ?1 ORDER BY seq",
                &[&run_id],
            )?
            .iter()
            .map(|row| {
                Ok(EventRecord {
                    seq: row.get(0)?,
                    run_id: row.get(1)?,
                    step_id: row.get(2)?,
                    attempt: row.get(3)?,
                    kind: row.get(4)?,
                    data: parse_json(row.get(5)?),
                    at: row.get(6)?,
                })
            })
            .collect()
        })
    }

    /// Log lines of a run (optionally one step) with `seq > after`, in order.
    pub fn logs(
        &self,
        run_id: i64,
        step_id: Option<&str>,
        after: i64,
    ) -> Result<Vec<StoredLogLine>> {
        self.read(|conn| {
            conn.query(
                "SELECT seq, step_id, attempt, stream, line, at FROM step_logs
                 WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) AND seq > ?3 ORDER BY seq",
                &[&run_id, &step_id, &after],
            )?
            .iter()
            .map(log_from_row)
            .collect()
        })
    }

    /// Appends log lines in one transaction (logs are batched by the caller). With a `fence`,
    /// the lines are dropped when another engine has claimed the run since (its epoch moved):
    /// a replaced engine's late output must not land beside its successor's.
    pub fn append_logs(&self, lines: &[LogLine], fence: Option<&LogFence>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let holds = match fence {
                None => true,
                Some(LogFence::Run(fence)) => {
                    let epoch: Option<i64> = txn
                        .conn
                        .query_opt(
                            "SELECT lease_epoch FROM runs WHERE id = ?1",
                            &[&fence.run_id],
                        )?
                        .map(|row| row.get(0))
                        .transpose()?;
                    epoch == Some(fence.epoch)
                }
                Some(LogFence::Task(fence)) => super::tasks::task_epoch_holds(txn.conn, fence)?,
            };
            if !holds {
                return Ok(());
            }
            for line in lines {
                txn.conn.execute(
                    "INSERT INTO step_logs (run_id, step_id, attempt, stream, line, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &[
                        &line.run_id,
                        &line.step_id,
                        &line.attempt,
                        &line.stream,
                        &line.line,
                        &line.at,
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Failed attempts per step (interrupted ones are not failures).
    pub fn failed_attempts(&self, run_id: i64) -> Result<HashMap<String, u32>> {
        self.read(|conn| {
            conn.query(
                "SELECT step_id, COUNT(*) FROM attempts WHERE run_id = ?1 AND state = 'failed'
                 GROUP BY step_id",
                &[&run_id],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
        })
    }

    /// The last commit a workflow has started runs up to on a watched branch.
    pub fn cursor(&self, workflow: &str, repo_url: &str, branch: &str) -> Result<Option<String>> {
        self.read(|conn| cursor(conn, workflow, repo_url, branch))
    }

    /// Branches with a cursor for a workflow and repository.
    pub fn cursor_branches(&self, workflow: &str, repo_url: &str) -> Result<Vec<String>> {
        self.read(|conn| {
            conn.query(
                "SELECT branch FROM cursors WHERE workflow = ?1 AND repo_url = ?2 ORDER BY branch",
                &[&workflow, &repo_url],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
        })
    }

    pub fn repositories(&self) -> Result<Vec<RepositoryStatus>> {
        self.read(|conn| {
            conn.query(
                "SELECT url, failures, last_error, last_note, last_ok_at, last_poll_at,
                        next_attempt_at
                 FROM repositories ORDER BY url",
                &[],
            )?
            .iter()
            .map(|row| {
                Ok(RepositoryStatus {
                    url: row.get(0)?,
                    failures: row.get(1)?,
                    last_error: row.get(2)?,
                    last_note: row.get(3)?,
                    last_ok_at: row.get(4)?,
                    last_poll_at: row.get(5)?,
                    next_attempt_at: row.get(6)?,
                })
            })
            .collect()
        })
    }

    pub fn cancel_requested(&self, run_id: i64) -> Result<bool> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT cancel_requested FROM runs WHERE id = ?1",
                &[&run_id],
            )?
            .ok_or(Error::RunNotFound(run_id))?
            .get(0)
        })
    }
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
        self.conn.execute(
            "INSERT INTO events (run_id, step_id, attempt, kind, data, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                &run_id,
                &step_id,
                &attempt,
                &kind,
                &data.to_string(),
                &now_ms(),
            ],
        )?;
        Ok(())
    }

    /// Creates a run in state `running`, leased to `new.owner`, with all steps pending.
    pub fn create_run(&self, new: &NewRun) -> Result<i64> {
        let now = now_ms();
        let sha = hex::encode(Sha256::digest(new.definition.as_bytes()));
        let run_id: i64 = self
            .conn
            .query_opt(
                "INSERT INTO runs (workflow, source_path, definition, definition_sha256, context,
                                   state, lease_owner, lease_expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)
                 RETURNING id",
                &[
                    &new.workflow,
                    &new.source_path,
                    &new.definition,
                    &sha,
                    &new.context.to_string(),
                    &new.owner,
                    &(now + new.lease_ms),
                    &now,
                ],
            )?
            .ok_or(Error::BadColumn {
                index: 0,
                detail: "inserting a run returned no id".into(),
            })?
            .get(0)?;
        for (position, step_id) in new.step_ids.iter().enumerate() {
            self.conn.execute(
                "INSERT INTO steps (run_id, step_id, position, state) VALUES (?1, ?2, ?3, 'pending')",
                &[&run_id, step_id, &(position as i64)],
            )?;
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
            .conn
            .query_opt(
                "SELECT state FROM steps WHERE run_id = ?1 AND step_id = ?2",
                &[&change.run_id, &change.step_id],
            )?
            .ok_or_else(|| Error::StepNotFound {
                run_id: change.run_id,
                step_id: change.step_id.clone(),
            })?
            .get(0)?;
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
        self.conn.execute(
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
                finished_at = CASE WHEN ?11 = 1 THEN ?10 ELSE NULL END
             WHERE run_id = ?1 AND step_id = ?2",
            &[
                &change.run_id,
                &change.step_id,
                &change.to.as_str(),
                &change.attempt,
                &outputs,
                &change.error,
                &change.next_attempt_at,
                &lease_owner,
                &lease_expires_at,
                &now,
                &change.to.is_terminal(),
            ],
        )?;
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
        self.conn.execute(
            "INSERT INTO attempts (run_id, step_id, attempt, owner, state, started_at)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            &[&run_id, &step_id, &attempt, &owner, &now_ms()],
        )?;
        Ok(())
    }

    /// Closes an attempt row; `state` is succeeded, failed, interrupted or cancelled.
    ///
    /// An attempt that ended (not one cut off) has read its step's finished task, if it ran on a
    /// worker: the task is marked read in this same transaction. Were it marked in one of its
    /// own, an engine dying between the two would find the attempt interrupted on resume and no
    /// task left to adopt, and queue the step a second time.
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
        self.conn.execute(
            "UPDATE attempts SET state = ?4, failure = ?5, exit_code = ?6, error = ?7,
                    finished_at = ?8
             WHERE run_id = ?1 AND step_id = ?2 AND attempt = ?3",
            &[
                &run_id,
                &step_id,
                &attempt,
                &state,
                &failure,
                &exit_code,
                &error,
                &now_ms(),
            ],
        )?;
        if state != "interrupted" {
            self.conn.execute(
                "UPDATE tasks SET consumed = 1
                 WHERE run_id = ?1 AND step_id = ?2 AND consumed = 0
                   AND state IN ('succeeded', 'failed', 'cancelled')",
                &[&run_id, &step_id],
            )?;
        }
        Ok(())
    }

    /// Ends a run that is still `running`; a run already finished (by another engine, or by
    /// `cairn cancel`) is never finished twice.
    pub fn finish_run(&self, run_id: i64, state: RunState, reason: Option<&str>) -> Result<()> {
        let changed = self.conn.execute(
            "UPDATE runs SET state = ?2, reason = ?3, finished_at = ?4, lease_owner = NULL,
                    lease_expires_at = NULL
             WHERE id = ?1 AND state = 'running'",
            &[&run_id, &state.as_str(), &reason, &now_ms()],
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
        let changed = self.conn.execute(
            "UPDATE runs SET cancel_requested = 1 WHERE id = ?1",
            &[&run_id],
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
        let row = self
            .conn
            .query_opt(
                "SELECT lease_owner, lease_expires_at, lease_epoch, state FROM runs WHERE id = ?1",
                &[&run_id],
            )?
            .ok_or(Error::RunNotFound(run_id))?;
        let (current, expires, epoch, state): (Option<String>, Option<i64>, i64, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
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
        self.conn.execute(
            "UPDATE runs SET lease_owner = ?2, lease_expires_at = ?3, lease_epoch = ?4
             WHERE id = ?1",
            &[&run_id, &owner, &(now + lease_ms), &epoch],
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
        let row = self
            .conn
            .query_opt(
                "SELECT lease_owner, lease_epoch, state FROM runs WHERE id = ?1",
                &[&fence.run_id],
            )?
            .ok_or(Error::RunNotFound(fence.run_id))?;
        let (holder, epoch, state): (Option<String>, i64, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        if holder.as_deref() == Some(fence.owner.as_str())
            && epoch == fence.epoch
            && state == "running"
        {
            return Ok(());
        }
        Err(Error::LeaseLost {
            run_id: fence.run_id,
            holder: holder.unwrap_or_else(|| "nobody".into()),
            epoch,
            state,
        })
    }

    /// Extends the lease `fence` holds on its run and the run's running steps; fails with
    /// [`Error::LeaseLost`] when another engine has claimed the run since.
    pub fn renew_lease(&self, fence: &Fence, lease_ms: i64) -> Result<()> {
        self.check_fence(fence)?;
        let expires = now_ms() + lease_ms;
        self.conn.execute(
            "UPDATE runs SET lease_expires_at = ?2 WHERE id = ?1",
            &[&fence.run_id, &expires],
        )?;
        self.conn.execute(
            "UPDATE steps SET lease_expires_at = ?3
             WHERE run_id = ?1 AND lease_owner = ?2 AND state = 'running'",
            &[&fence.run_id, &fence.owner, &expires],
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
        self.conn.execute(
            "INSERT INTO cursors (workflow, repo_url, branch, commit_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (workflow, repo_url, branch)
             DO UPDATE SET commit_id = excluded.commit_id, updated_at = excluded.updated_at",
            &[&workflow, &repo_url, &branch, &commit, &now_ms()],
        )?;
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
        if cursor(self.conn, workflow, repo_url, branch)?.as_deref() != expected {
            return Ok(false);
        }
        self.set_cursor(workflow, repo_url, branch, commit)?;
        Ok(true)
    }

    pub fn delete_cursor(&self, workflow: &str, repo_url: &str, branch: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM cursors WHERE workflow = ?1 AND repo_url = ?2 AND branch = ?3",
            &[&workflow, &repo_url, &branch],
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
        self.conn.execute(
            "INSERT INTO repositories (url, failures, last_error, last_note, last_ok_at,
                                       last_poll_at, next_attempt_at)
             VALUES (?1, CASE WHEN ?2 IS NULL THEN 0 ELSE 1 END, ?2, ?3,
                     CASE WHEN ?2 IS NULL THEN ?4 END, ?4, ?5)
             ON CONFLICT (url) DO UPDATE SET
                failures = CASE WHEN ?2 IS NULL THEN 0 ELSE repositories.failures + 1 END,
                last_error = ?2,
                last_note = COALESCE(?3, repositories.last_note),
                last_ok_at = CASE WHEN ?2 IS NULL THEN ?4 ELSE repositories.last_ok_at END,
                last_poll_at = ?4,
                next_attempt_at = ?5",
            &[&url, &error, &note, &now_ms(), &next_attempt_at],
        )?;
        Ok(())
    }

    pub fn release_run(&self, run_id: i64, owner: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?1 AND lease_owner = ?2",
            &[&run_id, &owner],
        )?;
        Ok(())
    }
}

fn cursor(conn: &dyn Conn, workflow: &str, repo_url: &str, branch: &str) -> Result<Option<String>> {
    conn.query_opt(
        "SELECT commit_id FROM cursors WHERE workflow = ?1 AND repo_url = ?2 AND branch = ?3",
        &[&workflow, &repo_url, &branch],
    )?
    .map(|row| row.get(0))
    .transpose()
}

pub(super) const RUN_COLUMNS: &str = "id, workflow, source_path, definition, definition_sha256, context, \
     state, reason, cancel_requested, lease_owner, lease_expires_at, created_at, finished_at";
/// [`RUN_COLUMNS`] without the definition's text (an empty string in its place): lists show
/// runs, not their YAML, and a long workflow's text copied for every row of every request is
/// most of what a list costs.
pub(super) const RUN_SUMMARY_COLUMNS: &str = "id, workflow, source_path, '' AS definition, definition_sha256, \
     context, state, reason, cancel_requested, lease_owner, lease_expires_at, created_at, finished_at";

pub(super) fn run_from_row(row: &Row) -> Result<RunRecord> {
    let state: String = row.get(6)?;
    let state = state
        .parse::<RunState>()
        .map_err(|detail| Error::BadValue {
            what: "runs.state",
            detail,
        })?;
    Ok(RunRecord {
        id: row.get(0)?,
        workflow: row.get(1)?,
        source_path: row.get(2)?,
        definition: row.get(3)?,
        definition_sha256: row.get(4)?,
        context: parse_json(row.get(5)?),
        state,
        reason: row.get(7)?,
        cancel_requested: row.get(8)?,
        lease_owner: row.get(9)?,
        lease_expires_at: row.get(10)?,
        created_at: row.get(11)?,
        finished_at: row.get(12)?,
    })
}

const STEP_COLUMNS: &str = "run_id, step_id, position, state, attempts, outputs, error, \
     next_attempt_at, lease_owner, lease_expires_at, started_at, finished_at";

fn step_from_row(row: &Row) -> Result<StepRecord> {
    let state: String = row.get(3)?;
    let state = state
        .parse::<StepState>()
        .map_err(|detail| Error::BadValue {
            what: "steps.state",
            detail,
        })?;
    Ok(StepRecord {
        run_id: row.get(0)?,
        step_id: row.get(1)?,
        position: row.get(2)?,
        state,
        attempts: row.get(4)?,
        outputs: row.get::<Option<String>>(5)?.map(parse_json),
        error: row.get(6)?,
        next_attempt_at: row.get(7)?,
        lease_owner: row.get(8)?,
        lease_expires_at: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
    })
}

pub(super) fn log_from_row(row: &Row) -> Result<StoredLogLine> {
    Ok(StoredLogLine {
        seq: row.get(0)?,
        step_id: row.get(1)?,
        attempt: row.get(2)?,
        stream: row.get(3)?,
        line: row.get(4)?,
        at: row.get(5)?,
    })
}
