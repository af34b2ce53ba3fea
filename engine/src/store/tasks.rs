//! Work for workers: a step attempt that must run on a worker with certain labels (`runs_on:`)
//! is a task. The engine driving the run queues it and waits for its result; a worker
//! (`cairn worker`, on this host or another one sharing the store) leases it, renews the lease
//! while the command runs, and writes the result.
//!
//! Every lease raises the task's epoch, and every write of a worker (renewal, log lines, the
//! result) checks the epoch it leased with inside its transaction: a worker that stalled or
//! was cut off past its lease, whose task another worker then took, writes nothing when it
//! comes back. A task whose lease expired is leasable again as if queued.
//!
//! A worker's writes ([`TaskTxn`]: lease, renewal, result) lock only the task's row, not the
//! whole store: on PostgreSQL a lease takes the first matching task no other transaction
//! holds (`FOR UPDATE SKIP LOCKED`), and a renewal or a result locks its task's row before
//! checking the fence, so the check and the write see the same epoch. Many workers lease at
//! once without waiting for each other or for the engines' writes. (On SQLite every write
//! transaction is the only one, as ever.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Error, Result};
use super::runs::WriteTxn;
use super::sql::{Backend, Conn, Row};
use super::sqlite::{Store, now_ms, parse_json};

/// What a worker runs: the command and its environment, prepared by the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub command: String,
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
    /// The step's secrets, by name (environment variable, secret): the worker opens them
    /// itself, with its own copy of the secrets key, so no value travels through the store.
    #[serde(default)]
    pub secrets: Vec<(String, String)>,
}

/// A task to queue.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub run_id: i64,
    pub step_id: String,
    pub attempt: u32,
    pub labels: Vec<String>,
    pub spec: TaskSpec,
}

/// How a task ended, as its worker wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaskResult {
    Succeeded {
        outputs: Value,
    },
    Failed {
        /// The failure class (`exit_code`, `timeout`, `spawn`…), as the engine names them.
        class: String,
        exit_code: Option<i32>,
        message: String,
    },
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: i64,
    pub run_id: i64,
    pub step_id: String,
    pub attempt: u32,
    pub labels: Vec<String>,
    pub spec: TaskSpec,
    /// queued, leased, succeeded, failed or cancelled.
    pub state: String,
    pub cancel_requested: bool,
    pub worker: Option<String>,
    pub epoch: i64,
    pub lease_expires_at: Option<i64>,
    pub result: Option<TaskResult>,
}

impl TaskRecord {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// Proof of holding a task: the worker and the epoch its lease set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFence {
    pub task_id: i64,
    pub worker: String,
    pub epoch: i64,
}

/// A leased task and the fence to write with.
#[derive(Debug, Clone)]
pub struct TaskLease {
    pub task: TaskRecord,
    pub fence: TaskFence,
    /// The worker whose expired lease this one replaces.
    pub previous: Option<String>,
}

/// Queued tasks looked at per lease: enough that a worker finds one it can run behind
/// tasks that need labels it lacks.
const LEASE_SCAN: i64 = 200;

const TASK_COLUMNS: &str = "id, run_id, step_id, attempt, labels, spec, state, cancel_requested, \
     worker, lease_epoch, lease_expires_at, result";

impl Store {
    pub fn task(&self, task_id: i64) -> Result<TaskRecord> {
        self.read(|conn| {
            let row = conn.query_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                &[&task_id],
            )?;
            task_from_row(&row.ok_or(Error::TaskNotFound(task_id))?)
        })
    }

    /// The task of a step whose result the engine has not read yet: after a restart, the
    /// engine adopts it instead of running the step again.
    pub fn unread_task(&self, run_id: i64, step_id: &str) -> Result<Option<TaskRecord>> {
        self.read(|conn| {
            conn.query_opt(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks
                     WHERE run_id = ?1 AND step_id = ?2 AND consumed = 0 AND state <> 'cancelled'
                     ORDER BY id DESC LIMIT 1"
                ),
                &[&run_id, &step_id],
            )?
            .map(|row| task_from_row(&row))
            .transpose()
        })
    }

    /// Every task of a run, in the order they were queued.
    pub fn tasks(&self, run_id: i64) -> Result<Vec<TaskRecord>> {
        self.read(|conn| {
            conn.query(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 ORDER BY id"),
                &[&run_id],
            )?
            .iter()
            .map(task_from_row)
            .collect()
        })
    }
}

impl WriteTxn<'_> {
    pub fn enqueue_task(&self, task: &NewTask) -> Result<i64> {
        let labels = serde_json::to_string(&task.labels).map_err(bad_json)?;
        let spec = serde_json::to_string(&task.spec).map_err(bad_json)?;
        let id: i64 = self
            .conn
            .query_opt(
                "INSERT INTO tasks (run_id, step_id, attempt, labels, spec, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)
                 RETURNING id",
                &[
                    &task.run_id,
                    &task.step_id,
                    &task.attempt,
                    &labels,
                    &spec,
                    &now_ms(),
                ],
            )?
            .ok_or(Error::BadColumn {
                index: 0,
                detail: "inserting a task returned no id".into(),
            })?
            .get(0)?;
        self.append_event(
            task.run_id,
            Some(&task.step_id),
            Some(task.attempt),
            "task_queued",
            &serde_json::json!({ "task": id, "labels": task.labels }),
        )?;
        Ok(id)
    }

    /// The engine gave up on the task (its worker did not stop when asked): it is never
    /// adopted again. A task that finished is marked read by `finish_attempt` instead.
    pub fn consume_task(&self, task_id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE tasks SET consumed = 1 WHERE id = ?1", &[&task_id])?;
        Ok(())
    }

    /// Asks for a task to stop: a queued one is cancelled at once, a leased one by its worker
    /// at its next renewal.
    pub fn cancel_task(&self, task_id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE tasks SET cancel_requested = 1,
                    state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END
             WHERE id = ?1",
            &[&task_id],
        )?;
        Ok(())
    }
}

/// One transaction of a worker's writes to its tasks (see the module docs): a lease, a
/// renewal or a result. Made by [`Store::task_write`].
pub struct TaskTxn<'a> {
    conn: &'a dyn Conn,
}

impl Store {
    /// Runs a worker's `work` in one transaction that locks only the rows of the tasks it
    /// touches (on PostgreSQL; SQLite has one writer at a time anyway).
    pub fn task_write<T: Send>(
        &self,
        work: impl FnOnce(&TaskTxn<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        self.write_row_locked(|conn| work(&TaskTxn { conn }))
    }
}

/// A row lock for a `SELECT`: how a worker's transaction keeps a task to itself until it
/// commits. Nothing on SQLite, whose write transaction is the only one.
fn row_lock(conn: &dyn Conn, lock: &'static str) -> &'static str {
    match conn.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => lock,
    }
}

impl TaskTxn<'_> {
    /// Leases the oldest queued (or lease-expired) task whose labels `labels` all has, for
    /// `lease_ms`, raising its epoch; `None` when there is none.
    ///
    /// The candidates are read without locks, then taken one by one with `FOR UPDATE SKIP
    /// LOCKED` and the condition checked again: a task another worker is leasing (or its
    /// holder renewing) at this moment is passed over, not waited for, and one leased since
    /// the candidates were read no longer matches.
    pub fn lease_task(
        &self,
        worker: &str,
        labels: &[String],
        lease_ms: i64,
    ) -> Result<Option<TaskLease>> {
        let now = now_ms();
        let candidates = self.conn.query(
            "SELECT id, labels FROM tasks
             WHERE state = 'queued' OR (state = 'leased' AND lease_expires_at < ?1)
             ORDER BY id LIMIT ?2",
            &[&now, &LEASE_SCAN],
        )?;
        let take = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE id = ?1 AND (state = 'queued' OR (state = 'leased' AND lease_expires_at < ?2)){}",
            row_lock(self.conn, " FOR UPDATE SKIP LOCKED")
        );
        for row in &candidates {
            let (id, needed): (i64, String) = (row.get(0)?, row.get(1)?);
            let needed: Vec<String> = serde_json::from_str(&needed).map_err(bad_json)?;
            if !needed.iter().all(|label| labels.contains(label)) {
                continue;
            }
            let Some(row) = self.conn.query_opt(&take, &[&id, &now])? else {
                continue;
            };
            let task = task_from_row(&row)?;
            if task.cancel_requested {
                self.conn.execute(
                    "UPDATE tasks SET state = 'cancelled', finished_at = ?2 WHERE id = ?1",
                    &[&task.id, &now],
                )?;
                continue;
            }
            let epoch = task.epoch + 1;
            self.conn.execute(
                "UPDATE tasks SET state = 'leased', worker = ?2, lease_epoch = ?3,
                        lease_expires_at = ?4
                 WHERE id = ?1",
                &[&task.id, &worker, &epoch, &(now + lease_ms)],
            )?;
            let previous = task.worker.clone().filter(|_| task.state == "leased");
            self.append_event(
                &task,
                if previous.is_some() {
                    "task_reclaimed"
                } else {
                    "task_leased"
                },
                &serde_json::json!({
                    "task": task.id,
                    "worker": worker,
                    "epoch": epoch,
                    "previous_worker": previous,
                }),
            )?;
            let fence = TaskFence {
                task_id: task.id,
                worker: worker.to_string(),
                epoch,
            };
            let task = TaskRecord {
                state: "leased".into(),
                worker: Some(worker.to_string()),
                epoch,
                lease_expires_at: Some(now + lease_ms),
                ..task
            };
            return Ok(Some(TaskLease {
                task,
                fence,
                previous,
            }));
        }
        Ok(None)
    }

    /// Locks the task's row and proves that `fence` still holds it: same worker, same epoch,
    /// still leased. The lock keeps a lease from raising the epoch before this transaction's
    /// write commits.
    fn hold(&self, fence: &TaskFence) -> Result<TaskRecord> {
        let task = self
            .conn
            .query_opt(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1{}",
                    row_lock(self.conn, " FOR UPDATE")
                ),
                &[&fence.task_id],
            )?
            .ok_or(Error::TaskNotFound(fence.task_id))
            .and_then(|row| task_from_row(&row))?;
        if task.worker.as_deref() == Some(fence.worker.as_str())
            && task.epoch == fence.epoch
            && task.state == "leased"
        {
            return Ok(task);
        }
        Err(Error::TaskLost {
            task_id: fence.task_id,
            holder: task.worker.unwrap_or_else(|| "nobody".into()),
            epoch: task.epoch,
            state: task.state,
        })
    }

    /// Extends the lease; whether the engine asked for the task to be cancelled.
    pub fn renew_task(&self, fence: &TaskFence, lease_ms: i64) -> Result<bool> {
        let task = self.hold(fence)?;
        self.conn.execute(
            "UPDATE tasks SET lease_expires_at = ?2 WHERE id = ?1",
            &[&fence.task_id, &(now_ms() + lease_ms)],
        )?;
        Ok(task.cancel_requested)
    }

    /// Writes the result of a task `fence` still holds.
    pub fn finish_task(&self, fence: &TaskFence, result: &TaskResult) -> Result<()> {
        let task = self.hold(fence)?;
        let state = match result {
            TaskResult::Succeeded { .. } => "succeeded",
            TaskResult::Failed { .. } => "failed",
            TaskResult::Cancelled => "cancelled",
        };
        let text = serde_json::to_string(result).map_err(bad_json)?;
        self.conn.execute(
            "UPDATE tasks SET state = ?2, result = ?3, finished_at = ?4, lease_expires_at = NULL
             WHERE id = ?1",
            &[&fence.task_id, &state, &text, &now_ms()],
        )?;
        self.append_event(
            &task,
            &format!("task_{state}"),
            &serde_json::json!({ "task": fence.task_id, "worker": fence.worker, "epoch": fence.epoch }),
        )
    }

    fn append_event(&self, task: &TaskRecord, kind: &str, data: &Value) -> Result<()> {
        WriteTxn { conn: self.conn }.append_event(
            task.run_id,
            Some(&task.step_id),
            Some(task.attempt),
            kind,
            data,
        )
    }
}

/// Whether `fence` still holds its task, for writes outside a [`TaskTxn`] (log lines, under
/// the store's write lock). The shared row lock keeps a lease from raising the epoch before
/// the lines commit.
pub(super) fn task_epoch_holds(conn: &dyn Conn, fence: &TaskFence) -> Result<bool> {
    Ok(conn
        .query_opt(
            &format!(
                "SELECT 1 FROM tasks WHERE id = ?1 AND lease_epoch = ?2 AND worker = ?3
                                       AND state = 'leased'{}",
                row_lock(conn, " FOR SHARE")
            ),
            &[&fence.task_id, &fence.epoch, &fence.worker],
        )?
        .is_some())
}

fn task_from_row(row: &Row) -> Result<TaskRecord> {
    let labels: String = row.get(4)?;
    let spec: String = row.get(5)?;
    let result: Option<String> = row.get(11)?;
    Ok(TaskRecord {
        id: row.get(0)?,
        run_id: row.get(1)?,
        step_id: row.get(2)?,
        attempt: row.get(3)?,
        labels: serde_json::from_str(&labels).map_err(|e| Error::BadValue {
            what: "tasks.labels",
            detail: e.to_string(),
        })?,
        spec: serde_json::from_str(&spec).map_err(|e| Error::BadValue {
            what: "tasks.spec",
            detail: e.to_string(),
        })?,
        state: row.get(6)?,
        cancel_requested: row.get(7)?,
        worker: row.get(8)?,
        epoch: row.get(9)?,
        lease_expires_at: row.get(10)?,
        result: result
            .map(|text| {
                serde_json::from_value(parse_json(text)).map_err(|e| Error::BadValue {
                    what: "tasks.result",
                    detail: e.to_string(),
                })
            })
            .transpose()?,
    })
}

fn bad_json(error: serde_json::Error) -> Error {
    Error::BadValue {
        what: "tasks",
        detail: error.to_string(),
    }
}
