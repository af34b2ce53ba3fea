//! A `run:` step with `runs_on:` runs on a worker (`cairn worker`), on this host or another
//! one sharing the store: the engine queues a task holding the command and the environment it
//! would have given the process itself, then waits for a worker's result and turns it into
//! the attempt's outcome. The run machine does not know the difference.
//!
//! After a restart the engine adopts a task whose result it had not read yet instead of
//! queueing the step again, so a step a worker already ran (or is running) is not run twice.
//! Cancelling the run asks the worker to stop the command at its next lease renewal.

use std::time::Duration;

use tokio::sync::watch;

use super::Error;
use super::blocking::store_call;
use super::logs::LogSink;
use super::machine::Outcome;
use super::process::cancelled;
use super::retry::FailureClass;
use crate::store::{NewTask, Store, TaskRecord, TaskResult};

/// How often the engine looks at its task.
const POLL: Duration = Duration::from_millis(200);

/// How often a still-queued task is mentioned in the step's log.
const WAITING_NOTE: Duration = Duration::from_secs(30);

/// How long the store may be unreachable while the engine waits for a task.
const STORE_PATIENCE: Duration = Duration::from_secs(120);

/// How long a cancelled task's worker has to report before the attempt ends anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

pub async fn dispatch(
    store: &Store,
    task: NewTask,
    logs: &LogSink,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let step = task.step_id.clone();
    let id = match adopt_or_enqueue(store, &task, logs).await {
        Ok(id) => id,
        Err(error) => return store_failure(logs, &step, &error),
    };
    let mut seen_epoch = 0;
    let mut waiting_since = tokio::time::Instant::now();
    let mut cancelled_at: Option<tokio::time::Instant> = None;
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        let record = match store_call(store, move |s| s.task(id)).await {
            Ok(record) => {
                unreachable_since = None;
                record
            }
            // The worker goes on meanwhile; only a store gone for long ends the attempt.
            Err(error) if error.is_store_unavailable() => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > STORE_PATIENCE {
                    return store_failure(logs, &step, &error);
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(error) => return store_failure(logs, &step, &error),
        };
        if record.epoch != seen_epoch && record.state == "leased" {
            seen_epoch = record.epoch;
            logs.line(
                "engine",
                format!(
                    "task {id} running on worker {} (lease {})",
                    record.worker.as_deref().unwrap_or("?"),
                    record.epoch
                ),
            );
        }
        if record.is_finished() {
            if let Err(error) = patiently(store, move |s| s.write(|txn| txn.consume_task(id))).await
            {
                return store_failure(logs, &step, &error);
            }
            return outcome(&record);
        }
        if let Some(at) = cancelled_at
            && at.elapsed() > CANCEL_GRACE
        {
            logs.line(
                "engine",
                format!("task {id}: its worker did not stop within {CANCEL_GRACE:?}; giving up"),
            );
            let _ = store_call(store, move |s| s.write(|txn| txn.consume_task(id))).await;
            return Outcome::Cancelled;
        }
        if record.state == "queued" && waiting_since.elapsed() > WAITING_NOTE {
            waiting_since = tokio::time::Instant::now();
            logs.line(
                "engine",
                format!(
                    "task {id} still waits for a worker with labels [{}]",
                    record.labels.join(", ")
                ),
            );
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = cancelled(&mut cancel), if cancelled_at.is_none() => {
                cancelled_at = Some(tokio::time::Instant::now());
                if let Err(error) = patiently(store, move |s| s.write(|txn| txn.cancel_task(id))).await {
                    return store_failure(logs, &step, &error);
                }
            }
        }
    }
}

/// The step's task: one queued before this engine started whose result nobody read yet, or a
/// new one. The look-up runs again before each enqueue that is tried again, so an enqueue
/// whose commit landed but whose reply was lost (PostgreSQL restarting) is adopted, not queued
/// twice.
async fn adopt_or_enqueue(store: &Store, task: &NewTask, logs: &LogSink) -> Result<i64, Error> {
    let handed = patiently(store, {
        let task = task.clone();
        move |s| match s.unread_task(task.run_id, &task.step_id)? {
            Some(earlier) => Ok(Handed::Adopted(Box::new(earlier))),
            None => s.write(|txn| txn.enqueue_task(&task)).map(Handed::Queued),
        }
    })
    .await?;
    let (id, line) = match handed {
        Handed::Queued(id) => (
            id,
            format!(
                "queued as task {id} for a worker with labels [{}]",
                task.labels.join(", ")
            ),
        ),
        Handed::Adopted(earlier) => (
            earlier.id,
            format!(
                "adopting task {} of attempt {} (queued before this engine started; state {})",
                earlier.id, earlier.attempt, earlier.state
            ),
        ),
    };
    logs.line("engine", line);
    Ok(id)
}

enum Handed {
    Queued(i64),
    Adopted(Box<TaskRecord>),
}

/// A store call that is idempotent, tried again while the store is unreachable, for up to
/// [`STORE_PATIENCE`].
async fn patiently<T: Send + 'static>(
    store: &Store,
    call: impl Fn(&Store) -> crate::store::Result<T> + Clone + Send + 'static,
) -> Result<T, Error> {
    let unreachable_since = tokio::time::Instant::now();
    loop {
        match store_call(store, call.clone()).await {
            Err(error)
                if error.is_store_unavailable() && unreachable_since.elapsed() < STORE_PATIENCE =>
            {
                tokio::time::sleep(POLL).await;
            }
            result => return result,
        }
    }
}

fn outcome(record: &TaskRecord) -> Outcome {
    match &record.result {
        Some(TaskResult::Succeeded { outputs }) => Outcome::Succeeded {
            outputs: outputs.clone(),
        },
        Some(TaskResult::Failed {
            class,
            exit_code,
            message,
        }) => Outcome::Failed {
            class: FailureClass::parse(class).unwrap_or(FailureClass::ExitCode),
            exit_code: *exit_code,
            message: message.clone(),
        },
        Some(TaskResult::Cancelled) | None => Outcome::Cancelled,
    }
}

fn store_failure(logs: &LogSink, step: &str, error: &Error) -> Outcome {
    logs.line("engine", format!("step `{step}`: {error}"));
    Outcome::Failed {
        class: FailureClass::Spawn,
        exit_code: None,
        message: format!("failed to hand the step to a worker: {error}"),
    }
}
