//! `cairn worker`: runs the tasks of `runs_on:` steps, leased from the store the engines share
//! (see `store/tasks.rs`). Each task runs like an engine's own `run:` step (`process.rs`: its
//! process group, the sandbox, the timeout, outputs from `$CAIRN_OUTPUT`) in a directory of the
//! worker's, in a checkout of the run's commit when it has one (`mirror.rs`); its log lines go
//! to the store under the task's fence.
//!
//! While the command runs, a heartbeat renews the lease every third of its length. A renewal
//! that finds the task taken (this worker stalled or was cut off past its lease, and another
//! worker leased it) stops the command and writes nothing more: the other worker's run is the
//! one that counts. A renewal that finds a cancellation request stops the command too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::blocking::store_call;
use super::logs::{LogSink, LogWriter};
use super::machine::Outcome;
use super::orphans::TOKEN_VARIABLE;
use super::process::{ProcessSpec, run_command};
use crate::secrets::Masker;
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
            move |s| s.task_write(|txn| txn.lease_task(&name, &labels, lease_ms))
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
    let secrets = open_secrets(store, task.spec.secrets.clone()).await;
    let logs = writer
        .sink(task.run_id, &task.step_id, task.attempt)
        .masked(secrets.masker.clone());
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
                    s.task_write(|txn| txn.renew_task(&renewing, lease.as_millis() as i64))
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
    logs.line(
        "engine",
        format!("on worker {} (lease {})", settings.name, fence.epoch),
    );
    let prepared = match secrets.env {
        Ok(env) => prepare(&settings.dir, &dir, &task.spec.env, &logs)
            .await
            .map(|cwd| (cwd, env)),
        Err(message) => Err(message),
    };
    let outcome = match prepared {
        Err(message) => Outcome::Failed {
            class: super::retry::FailureClass::Spawn,
            exit_code: None,
            message,
        },
        Ok((cwd, secret_env)) => {
            let mut env = task.spec.env.clone();
            env.extend(secret_env);
            let output_file = dir.join(".cairn-output");
            env.extend([
                ("CAIRN_WORKSPACE".to_string(), cwd.display().to_string()),
                ("CAIRN_OUTPUT".into(), output_file.display().to_string()),
                ("CAIRN_WORKER".into(), settings.name.clone()),
                (TOKEN_VARIABLE.into(), token.clone()),
            ]);
            let spec = ProcessSpec {
                command: task.spec.command.clone(),
                cwd,
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
    let outcome = super::driver::mask_outcome(&secrets.masker, logs.settle(outcome).await);
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
            s.task_write(|txn| txn.finish_task(&finishing, &recorded))
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

/// Makes the task's directory and, when the run has a repository and a commit, checks the
/// commit out in its `src/` ([`super::mirror`]); where the command runs.
async fn prepare(
    worker_dir: &Path,
    dir: &Path,
    env: &[(String, String)],
    logs: &LogSink,
) -> Result<PathBuf, String> {
    let var = |name: &str| {
        env.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("failed to create the task directory {}: {e}", dir.display()))?;
    let (Some(repo), Some(commit)) = (var("CAIRN_REPO"), var("CAIRN_COMMIT")) else {
        return Ok(dir.to_path_buf());
    };
    logs.line("engine", format!("checking out {commit} of {repo}"));
    let src = dir.join("src");
    let (worker_dir, target) = (worker_dir.to_path_buf(), src.clone());
    tokio::task::spawn_blocking(move || {
        super::mirror::checkout(&worker_dir, &repo, &commit, &target)
    })
    .await
    .map_err(|error| format!("the checkout stopped: {error}"))??;
    Ok(src)
}

/// A task's secrets as its command's environment, and what to mask in its logs and result.
struct Secrets {
    env: Result<Vec<(String, String)>, String>,
    masker: Arc<Masker>,
}

/// Opens the task's secrets (variable, name) with this worker's key, as the engine does for
/// its own steps; every secret the key opens is masked, as the engine masks them. A secret
/// that does not open fails the task with the vault's reason (a missing key says where the
/// key belongs).
async fn open_secrets(store: &Store, wanted: Vec<(String, String)>) -> Secrets {
    let opened = store_call(store, move |s| {
        let vault = crate::secrets::Vault::new(s);
        let masker = Masker::new(&vault.values().unwrap_or_default());
        let env = wanted
            .iter()
            .map(|(variable, name)| {
                vault
                    .get(name)
                    .map(|value| (variable.clone(), value))
                    .map_err(|error| error.to_string())
            })
            .collect();
        Ok((env, masker))
    })
    .await;
    match opened {
        Ok((env, masker)) => Secrets {
            env,
            masker: Arc::new(masker),
        },
        Err(error) => Secrets {
            env: Err(format!("failed to read the secrets: {error}")),
            masker: Arc::default(),
        },
    }
}
