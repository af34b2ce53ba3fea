//! A `run:` step with `runs_on:` runs on a worker (`cairn worker`), on this host or another
//! one sharing the store: the engine queues a task holding the command and the environment it
//! would have given the process itself, then waits for a worker's result and turns it into
//! the attempt's outcome. The run machine does not know the difference.
//!
//! After a restart the engine adopts a task whose result no attempt has recorded yet instead
//! of queueing the step again, so a step a worker already ran (or is running) is not run
//! twice. The task is marked read in the transaction that records the attempt's end.
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
    loop {
        // The worker goes on meanwhile; only a store gone for long ends the attempt.
        let record = match patiently(store, move |s| s.task(id)).await {
            Ok(record) => record,
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
            // The task is marked read with the attempt's end (`finish_attempt`), in one write.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::exec::logs::LogWriter;
    use crate::store::{NewRun, TaskSpec, test_postgres};

    /// A run of one step, `s`.
    fn one_step_run(store: &Store) -> i64 {
        store
            .write(|txn| {
                txn.create_run(&NewRun {
                    workflow: "w".into(),
                    source_path: None,
                    definition: "name: w\n".into(),
                    context: json!({}),
                    step_ids: vec!["s".into()],
                    owner: "engine".into(),
                    lease_ms: 60_000,
                })
            })
            .expect("a run")
    }

    /// Step `s`'s task for a worker labelled `linux`.
    fn step_task(run_id: i64, attempt: u32) -> NewTask {
        NewTask {
            run_id,
            step_id: "s".into(),
            attempt,
            labels: vec!["linux".into()],
            spec: TaskSpec {
                command: "true".into(),
                env: Vec::new(),
                timeout_ms: None,
                secrets: Vec::new(),
            },
        }
    }

    /// PostgreSQL restarting while the engine queues a step's task (the enqueue's connection
    /// is cut mid-statement): the engine waits until the store is back and queues the step
    /// once, instead of failing it.
    #[test]
    fn a_store_restart_while_a_step_is_handed_over_is_waited_out() {
        let server = test_postgres::Server::dedicated();
        let url = server.database();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_postgres(&url, &dir.path().join("cairn.db")).expect("the store");
        let run_id = one_step_run(&store);
        let task = step_task(run_id, 1);
        // Another writer holds the store's write lock, so the enqueue waits on the server
        // until the restart cuts it off.
        let mut holder = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        holder
            .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(426836062830)")
            .expect("the write lock");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let tasks = runtime.block_on(hand_over_across_a_restart(server, holder, store, task));
        assert_eq!(tasks.len(), 1, "queued once: {tasks:?}");
    }

    /// The engine read its task's result and died before recording the attempt: the attempt
    /// after the resume adopts that result instead of queueing the step again, and recording
    /// it marks the task read.
    #[test]
    fn a_result_read_but_not_recorded_is_adopted_after_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("cairn.db")).expect("the store");
        let run_id = one_step_run(&store);
        let task = move |attempt| step_task(run_id, attempt);
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let outcomes = runtime.block_on(async {
            let writer = LogWriter::start(store.clone(), None, None);
            let (_cancel, cancelled) = watch::channel(false);
            let first = tokio::spawn({
                let (store, logs, cancelled) = (
                    store.clone(),
                    writer.sink(run_id, "s", 1),
                    cancelled.clone(),
                );
                async move { dispatch(&store, task(1), &logs, cancelled).await }
            });
            let worker = store_call(&store, |s| {
                loop {
                    let labels = ["linux".to_string()];
                    if let Some(lease) =
                        s.task_write(|txn| txn.lease_task("w1", &labels, 60_000))?
                    {
                        return Ok(lease);
                    }
                    std::thread::sleep(POLL);
                }
            });
            let lease = tokio::time::timeout(Duration::from_secs(30), worker)
                .await
                .expect("the task is queued")
                .expect("a lease");
            let result = TaskResult::Succeeded {
                outputs: json!({ "by": "w1" }),
            };
            store
                .task_write(|txn| txn.finish_task(&lease.fence, &result))
                .expect("the result");
            let first = first.await.expect("dispatch does not panic");
            // The engine dies here; its successor closes attempt 1 and starts attempt 2.
            store
                .write(|txn| txn.finish_attempt(run_id, "s", 1, "interrupted", None, None, None))
                .expect("attempt 1 closed");
            let logs = writer.sink(run_id, "s", 2);
            let second = tokio::time::timeout(
                Duration::from_secs(30),
                dispatch(&store, task(2), &logs, cancelled),
            )
            .await
            .expect("the result is adopted, not waited for");
            [first, second]
        });
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Outcome::Succeeded { outputs } if outputs["by"] == "w1"),
                "{outcome:?}"
            );
        }
        assert_eq!(store.tasks(run_id).expect("tasks").len(), 1, "queued once");
        store
            .write(|txn| txn.finish_attempt(run_id, "s", 2, "succeeded", None, None, None))
            .expect("attempt 2 recorded");
        assert!(store.unread_task(run_id, "s").expect("unread").is_none());
    }

    async fn hand_over_across_a_restart(
        server: test_postgres::Server,
        mut holder: postgres::Client,
        store: Store,
        task: NewTask,
    ) -> Vec<TaskRecord> {
        let run_id = task.run_id;
        let writer = LogWriter::start(store.clone(), None, None);
        let logs = writer.sink(run_id, "s", 1);
        let (cancel, cancelled) = watch::channel(false);
        let handing = tokio::spawn({
            let store = store.clone();
            async move { dispatch(&store, task, &logs, cancelled).await }
        });
        let _server = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let waiting =
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
            while holder
                .query_one(waiting, &[])
                .expect("pg_locks")
                .get::<_, i64>(0)
                == 0
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the enqueue never waited"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            server.restart();
            server
        })
        .await
        .expect("PostgreSQL restarts");
        let queued = loop {
            if let Ok(Some(task)) = store_call(&store, move |s| s.unread_task(run_id, "s")).await {
                break task;
            }
            assert!(!handing.is_finished(), "dispatch ended before queueing");
            tokio::time::sleep(POLL).await;
        };
        assert_eq!(queued.state, "queued");
        cancel.send(true).expect("the dispatch listens");
        let outcome = tokio::time::timeout(Duration::from_secs(30), handing)
            .await
            .expect("dispatch ends once cancelled")
            .expect("dispatch does not panic");
        assert!(matches!(outcome, Outcome::Cancelled), "{outcome:?}");
        store_call(&store, move |s| s.tasks(run_id))
            .await
            .expect("the tasks")
    }
}
