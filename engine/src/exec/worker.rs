//! `cairn worker`: runs the tasks of `runs_on:` steps, leased from the store the engines share
//! (see `store/tasks.rs`). Each task runs like an engine's own `run:` step (`process.rs`: its
//! process group, the sandbox, the timeout, outputs from `$CAIRN_OUTPUT`) in a scratch
//! directory of the worker's; its log lines go to the store under the task's fence.
//!
//! While the command runs, a heartbeat renews the lease every third of its length. A renewal
//! that finds the task taken (this worker stalled or was cut off past its lease, and another
//! worker leased it) stops the command and writes nothing more: the other worker's run is the
//! one that counts. A renewal that finds a cancellation request stops the command too.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::blocking::store_call;
use super::logs::LogWriter;
use super::machine::Outcome;
use super::orphans::TOKEN_VARIABLE;
use super::process::{ProcessSpec, run_command};
use crate::store::{self, LogFence, Store, TaskLease, TaskResult};

/// Who this worker is and what it can run.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Unique among workers: recorded on every task it leases.
    pub name: String,
    pub labels: Vec<String>,
    /// How long a lease lasts without renewal: how soon another worker takes over a task of
    /// a worker that died or was cut off.
    pub lease: Duration,
    /// Where task directories are made (each removed when its task ends).
    pub dir: PathBuf,
    /// How often an idle worker asks for work.
    pub poll: Duration,
}

/// What one worker did, for its exit message.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    pub finished: u64,
    /// Tasks another worker took over while this one ran them.
    pub lost: u64,
}

/// Leases and runs tasks until `shutdown` turns true (a running task is finished first).
pub async fn run_worker(
    store: Store,
    settings: WorkerSettings,
    mut shutdown: watch::Receiver<bool>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let lease_ms = settings.lease.as_millis() as i64;
    while !*shutdown.borrow() {
        let leased = match store_call(&store, {
            let (name, labels) = (settings.name.clone(), settings.labels.clone());
            move |s| s.write(|txn| txn.lease_task(&name, &labels, lease_ms))
        })
        .await
        {
            Ok(leased) => leased,
            // The store is unreachable for now: ask again after the poll interval.
            Err(error) => {
                tracing::warn!(%error, "failed to ask the store for work");
                None
            }
        };
        let Some(lease) = leased else {
            tokio::select! {
                () = tokio::time::sleep(settings.poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        tracing::info!(
            task = lease.task.id,
            run_id = lease.task.run_id,
            step_id = %lease.task.step_id,
            epoch = lease.fence.epoch,
            previous = ?lease.previous,
            "leased a task"
        );
        if run_task(&store, &settings, lease).await {
            stats.finished += 1;
        } else {
            stats.lost += 1;
        }
    }
    stats
}

/// Runs one leased task; false when the lease was lost on the way (nothing was recorded).
async fn run_task(store: &Store, settings: &WorkerSettings, lease: TaskLease) -> bool {
    let TaskLease { task, fence, .. } = lease;
    let dir = settings
        .dir
        .join(format!("task-{}-{}", task.id, fence.epoch));
    let token = format!("cairn-worker-{}-{}", task.id, rand::random::<u64>());
    let writer = LogWriter::start(store.clone(), None, Some(LogFence::Task(fence.clone())));
    let logs = writer.sink(task.run_id, &task.step_id, task.attempt);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let heartbeat = {
        let store = store.clone();
        let fence = fence.clone();
        let lease = settings.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewing = fence.clone();
                let renewal = store_call(&store, move |s| {
                    s.write(|txn| txn.renew_task(&renewing, lease.as_millis() as i64))
                });
                match renewal.await {
                    Ok(false) => {}
                    Ok(true) => {
                        let _ = cancel_tx.send(true);
                    }
                    Err(super::Error::Store(store::Error::TaskLost { .. })) => {
                        let _ = lost_tx.send(true);
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    // The store is unreachable for now (a restart, the network): keep the
                    // command running and try again; the lease decides who wins.
                    Err(error) => tracing::warn!(%error, "failed to renew a task's lease"),
                }
            }
        })
    };
    let outcome = match std::fs::create_dir_all(&dir) {
        Err(error) => Outcome::Failed {
            class: super::retry::FailureClass::Spawn,
            exit_code: None,
            message: format!(
                "failed to create the task directory {}: {error}",
                dir.display()
            ),
        },
        Ok(()) => {
            logs.line(
                "engine",
                format!("on worker {} (lease {})", settings.name, fence.epoch),
            );
            let mut env = task.spec.env.clone();
            let output_file = dir.join(".cairn-output");
            env.extend([
                ("CAIRN_WORKSPACE".to_string(), dir.display().to_string()),
                ("CAIRN_OUTPUT".into(), output_file.display().to_string()),
                ("CAIRN_WORKER".into(), settings.name.clone()),
                (TOKEN_VARIABLE.into(), token.clone()),
            ]);
            let spec = ProcessSpec {
                command: task.spec.command.clone(),
                cwd: dir.clone(),
                env,
                timeout: task.spec.timeout_ms.map(Duration::from_millis),
                output_file,
                token,
                sandbox: Default::default(),
                requirement: Default::default(),
            };
            run_command(spec, logs.clone(), cancel_rx).await
        }
    };
    let outcome = logs.settle(outcome).await;
    drop(logs);
    writer.finish().await;
    heartbeat.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if *lost_rx.borrow_and_update() {
        tracing::warn!(
            task = task.id,
            "the task's lease was lost; its result is dropped"
        );
        return false;
    }
    let result = match outcome {
        Outcome::Succeeded { outputs } => TaskResult::Succeeded { outputs },
        Outcome::Failed {
            class,
            exit_code,
            message,
        } => TaskResult::Failed {
            class: class.as_str().to_string(),
            exit_code,
            message,
        },
        Outcome::Cancelled => TaskResult::Cancelled,
    };
    // The result is written until it lands or the task is found taken: a worker that gave up
    // on an unreachable store would see its task leased again and run it twice.
    let mut pause = Duration::from_millis(200);
    loop {
        let (finishing, recorded) = (fence.clone(), result.clone());
        let finished = store_call(store, move |s| {
            s.write(|txn| txn.finish_task(&finishing, &recorded))
        });
        match finished.await {
            Ok(()) => return true,
            Err(error) if error.is_store_unavailable() => {
                tracing::warn!(task = task.id, %error, "failed to record a result; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::warn!(task = task.id, %error, "the task's result was not recorded");
                return false;
            }
        }
    }
}
