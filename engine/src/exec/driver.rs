//! The driver: performs what the [`RunMachine`] decides.
//!
//! One loop per run: take every attempt outcome that has arrived, let the machine plan, commit
//! all resulting writes in one transaction (group commit), then launch the new attempts. Leases
//! are renewed in the background of the same loop and cancellation requests are polled from the
//! store, so `cairn cancel` works from another process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::agent::{AgentCall, Agents};
use super::blocking::store_call;
use super::error::{Error, Result};
use super::files::AttemptFiles;
use super::logs::{LogSink, LogWriter};
use super::machine::{Effects, Outcome, RunMachine, Write};
use super::orphans::{TOKEN_VARIABLE, kill_orphans, kill_token_prefix};
use super::owner::{Owner, owner_alive};
use super::process::{ProcessSpec, cancelled, deadline, humanize, run_command};
use super::retry::FailureClass;
use super::workspace::Workspace;
use crate::pipeline::{self, Action, LoadOptions, Step, Workflow};
use crate::store::{
    self, Fence, LogFence, LogLine, NewRun, NewTask, RunRecord, RunState, StepState,
    StepTransition, Store, TaskSpec, WriteTxn, now_ms,
};

/// How often a run checks for `cairn cancel` from another process.
const CANCEL_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Overrides every workflow's `concurrency:` when set.
    pub concurrency: Option<usize>,
    pub lease: Duration,
    /// Where run workspaces are created.
    pub work_dir: PathBuf,
}

impl EngineSettings {
    pub const DEFAULT_CONCURRENCY: usize = 8;
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
}

/// What a watcher of a run is told, in order.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Step {
        run_id: i64,
        step_id: String,
        state: StepState,
        attempt: Option<u32>,
        detail: Option<String>,
    },
    Log(LogLine),
    Finished {
        run_id: i64,
        state: RunState,
        reason: Option<String>,
    },
}

pub type Observer = mpsc::UnboundedSender<RunEvent>;

pub struct Engine {
    store: Store,
    owner: Owner,
    agents: Arc<dyn Agents>,
    settings: EngineSettings,
    /// Distinguishes this database's attempt tokens from another `CAIRN_HOME`'s.
    token_prefix: String,
    /// Runs this engine is driving right now.
    active: Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>,
    /// Remove a run's checkout when the run ends (`cairn` does unless asked to keep them).
    remove_workspaces: bool,
    /// Most bytes all cache entries may hold together (`retention.cache_size`).
    cache_limit: u64,
}

/// Stops the step processes of every run an engine is driving, for a clean exit on SIGTERM:
/// the runs stay `running` with a dead owner and the next start resumes them.
#[derive(Clone)]
pub struct Abandon {
    token_prefix: String,
    active: Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>,
}

impl Abandon {
    pub fn now(&self) -> usize {
        let runs: Vec<i64> = self
            .active
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        runs.iter()
            .map(|run_id| kill_token_prefix(&format!("{}/{run_id}/", self.token_prefix)).len())
            .sum()
    }
}

impl Engine {
    pub fn new(store: Store, agents: Arc<dyn Agents>, settings: EngineSettings) -> Engine {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(store.path().to_string_lossy().as_bytes());
        Engine {
            token_prefix: hex::encode(&digest[..6]),
            owner: Owner::current(),
            active: Arc::default(),
            store,
            agents,
            settings,
            remove_workspaces: false,
            cache_limit: super::files::DEFAULT_CACHE_LIMIT,
        }
    }

    /// Caps the bytes all cache entries hold together; least recently used ones are evicted.
    pub fn cache_limit(mut self, bytes: u64) -> Engine {
        self.cache_limit = bytes;
        self
    }

    /// Removes each run's checkout when the run ends (see `workspace::remove_checkout`);
    /// off by default, so library users can inspect what a run left.
    pub fn remove_workspaces(mut self, remove: bool) -> Engine {
        self.remove_workspaces = remove;
        self
    }

    pub fn abandon_handle(&self) -> Abandon {
        Abandon {
            token_prefix: self.token_prefix.clone(),
            active: self.active.clone(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether this engine is driving the run right now.
    pub fn is_driving(&self, run_id: i64) -> bool {
        self.active
            .lock()
            .map(|active| active.contains(&run_id))
            .unwrap_or(false)
    }

    pub fn agent_names(&self) -> Vec<&'static str> {
        self.agents.names()
    }

    /// Validates a workflow text and records a new run of it, leased to this engine.
    pub fn create_run(
        &self,
        definition: &str,
        file_name: &str,
        source_path: Option<String>,
        context: Value,
    ) -> Result<(i64, Workflow)> {
        let (new, workflow) = self.new_run(definition, file_name, source_path, context)?;
        // A store restarting now is ridden out: a transaction cut off before its commit
        // created nothing, so it runs again.
        let run_id = self.store.write_again(|txn| txn.create_run(&new))?;
        Ok((run_id, workflow))
    }

    /// Validates a workflow text and describes a run of it, for callers that create runs in
    /// their own transaction (the trigger advances its cursor in the same one).
    pub fn new_run(
        &self,
        definition: &str,
        file_name: &str,
        source_path: Option<String>,
        context: Value,
    ) -> Result<(NewRun, Workflow)> {
        let names = self.agents.names();
        let agents = self.agents.clone();
        let check = move |name: &str, with: &Value| agents.check_with(name, with);
        let workflow = pipeline::load_str(
            file_name,
            definition,
            &LoadOptions {
                known_agents: &names,
                check_with: Some(&check),
            },
        )?;
        // Refused before a run exists, so nothing is recorded for what cannot run here.
        super::sandbox::current().admit(workflow.sandbox)?;
        let new = NewRun {
            workflow: workflow.name.clone(),
            source_path,
            definition: definition.to_string(),
            context,
            step_ids: workflow.steps.iter().map(|s| s.id.clone()).collect(),
            owner: self.owner.to_string(),
            lease_ms: self.settings.lease.as_millis() as i64,
        };
        Ok((new, workflow))
    }

    /// Unfinished runs no live engine holds: what `cairn resume` picks up.
    pub fn resumable_runs(&self) -> Result<Vec<RunRecord>> {
        let now = now_ms();
        Ok(self
            .store
            .unfinished_runs()?
            .into_iter()
            .filter(|run| match &run.lease_owner {
                None => true,
                Some(owner) if owner == self.owner.as_str() => true,
                Some(owner) => run.lease_expires_at.unwrap_or(0) <= now || !owner_alive(owner),
            })
            .collect())
    }

    /// Drives a run until it finishes. Safe to call for a new run or for one an earlier engine
    /// left behind: completed steps are kept, interrupted ones are attempted again.
    pub async fn drive(&self, run_id: i64, observer: Option<Observer>) -> Result<RunState> {
        if let Ok(mut active) = self.active.lock() {
            active.insert(run_id);
        }
        let result = self.drive_claimed(run_id, observer).await;
        if let Ok(mut active) = self.active.lock() {
            active.remove(&run_id);
        }
        result
    }

    async fn drive_claimed(&self, run_id: i64, observer: Option<Observer>) -> Result<RunState> {
        let lease_ms = self.settings.lease.as_millis() as i64;
        let owner = self.owner.to_string();
        let claimed = self
            .write(move |txn| txn.claim_run(run_id, &owner, lease_ms, &owner_alive))
            .await;
        let fence = match claimed {
            Ok(claim) => claim.fence,
            Err(Error::Store(store::Error::RunNotRunning(_))) => {
                return Err(Error::AlreadyFinished {
                    run_id,
                    state: self.store.run(run_id)?.state,
                });
            }
            Err(error) => return Err(error),
        };
        // Known to hold until then: every fenced commit proves the lease for `lease_ms` more.
        let mut lease_valid_until = now_ms() + lease_ms;
        let run = self.store.run(run_id)?;
        let names = self.agents.names();
        let workflow = pipeline::load_str(
            &format!("run {run_id} ({})", run.workflow),
            &run.definition,
            // The definition was checked when the run started; a stricter agent check since
            // must not strand a run mid-way.
            &LoadOptions {
                known_agents: &names,
                check_with: None,
            },
        )
        .map_err(|source| Error::StoredDefinition { run_id, source })?;
        let records = self.store.steps(run_id)?;
        let failed = self.store.failed_attempts(run_id)?;
        let failures: Vec<u32> = workflow
            .steps
            .iter()
            .map(|s| failed.get(&s.id).copied().unwrap_or(0))
            .collect();
        let concurrency = self
            .settings
            .concurrency
            .or(workflow.concurrency)
            .unwrap_or(EngineSettings::DEFAULT_CONCURRENCY);
        let mut machine = RunMachine::new(
            run_id,
            &workflow,
            &records,
            &failures,
            run.context.clone(),
            concurrency,
            (fence.owner.clone(), now_ms() + lease_ms),
        );
        self.close_interrupted_attempts(&fence, &machine).await?;

        let context = run.context.clone();
        let work_dir = self.settings.work_dir.clone();
        let workspace =
            tokio::task::spawn_blocking(move || Workspace::prepare(&work_dir, run_id, &context))
                .await
                .map_err(|e| Error::Workspace {
                    run_id,
                    message: e.to_string(),
                })?
                .map_err(|message| Error::Workspace { run_id, message })?;
        let workspace = Arc::new(workspace);
        let artifact_sources = artifact_sources(&workflow);
        // Caches belong to the repository; a run without one shares them by workflow name.
        let cache_scope = run
            .context
            .get("repo")
            .and_then(Value::as_str)
            .map_or_else(|| format!("workflow:{}", workflow.name), str::to_owned);
        let blobs = super::files::Blobs::beside(&self.store);

        let echo = observer.as_ref().map(|observer| {
            let (sender, mut receiver) = mpsc::unbounded_channel::<LogLine>();
            let observer = observer.clone();
            tokio::spawn(async move {
                while let Some(line) = receiver.recv().await {
                    let _ = observer.send(RunEvent::Log(line));
                }
            });
            sender
        });
        let logs = LogWriter::start(self.store.clone(), echo, Some(LogFence::Run(fence.clone())));
        // Every stored secret is masked in what any step of the run writes: logs, outputs,
        // error messages. A key that cannot open them leaves nothing to mask: steps that need
        // a secret then fail saying why.
        let masker = Arc::new(
            crate::secrets::Vault::new(&self.store)
                .values()
                .map(|values| crate::secrets::Masker::new(&values))
                .unwrap_or_default(),
        );
        let (cancel_sender, cancel_receiver) = watch::channel(false);
        // Attempts run as tasks of this set: a panic comes back as a failed attempt instead of
        // an outcome that never arrives, and losing the lease aborts every one of them.
        let mut attempts: JoinSet<(usize, u32, Outcome)> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, (usize, u32, String)> = HashMap::new();
        let mut arrived: Vec<(usize, u32, Outcome)> = Vec::new();
        let mut last_cancel_poll = 0i64;
        let mut last_renewal = now_ms();

        let driven = loop {
            let now = now_ms();
            if !machine.is_cancelling() && now - last_cancel_poll >= CANCEL_POLL.as_millis() as i64
            {
                last_cancel_poll = now;
                match self.store.cancel_requested(run_id) {
                    Ok(true) => {
                        machine.cancel();
                        let _ = cancel_sender.send(true);
                    }
                    Ok(false) => {}
                    // Asked again at the next poll.
                    Err(error) if error.is_unavailable() => {}
                    Err(error) => break Err(error.into()),
                }
            }
            if now - last_renewal >= lease_ms / 3 {
                last_renewal = now;
                let renewing = fence.clone();
                match self
                    .write(move |txn| txn.renew_lease(&renewing, lease_ms))
                    .await
                {
                    Ok(()) => lease_valid_until = now + lease_ms,
                    // The store is unreachable (restarting): the lease still holds for a
                    // while, so try again in a second rather than give the run up.
                    Err(error) if error.is_store_unavailable() && now_ms() < lease_valid_until => {
                        last_renewal = now - lease_ms / 3 + 1_000;
                    }
                    Err(error) => break Err(error),
                }
            }

            let mut effects = Effects::default();
            let now = now_ms();
            for (index, attempt, outcome) in arrived.drain(..) {
                merge(
                    &mut effects,
                    machine.record_outcome(index, attempt, outcome, now, rand::random()),
                );
            }
            merge(&mut effects, machine.plan(now));
            if !effects.writes.is_empty() {
                let writes = std::mem::take(&mut effects.writes);
                let writing = fence.clone();
                let committed = self
                    .write(move |txn| {
                        txn.check_fence(&writing)?;
                        apply(txn, &writing, &writes)?;
                        Ok(writes)
                    })
                    .await;
                match committed {
                    Ok(writes) => {
                        lease_valid_until = now + lease_ms;
                        notify(&observer, run_id, &writes);
                    }
                    Err(error) => break Err(error),
                }
            }
            if !effects.spawns.is_empty() && now_ms() >= lease_valid_until {
                // Stalled between the commit and here for longer than the lease: another
                // engine may hold the run now, so start nothing before a write proves otherwise.
                let renewing = fence.clone();
                match self
                    .write(move |txn| txn.renew_lease(&renewing, lease_ms))
                    .await
                {
                    Ok(()) => lease_valid_until = now_ms() + lease_ms,
                    Err(error) => break Err(error),
                }
            }
            for (index, attempt) in effects.spawns {
                let step = workflow.steps[index].clone();
                let sink = logs.sink(run_id, &step.id, attempt).masked(masker.clone());
                let token = self.attempt_token(run_id, &step.id, fence.epoch, attempt);
                let attempt_context = AttemptContext {
                    store: self.store.clone(),
                    run_id,
                    attempt,
                    token: token.clone(),
                    context: machine.context_for(index),
                    workspace: workspace.clone(),
                    workflow_env: workflow.env.clone().into_iter().collect(),
                    requirement: workflow.sandbox,
                    models: step.llm.over(workflow.llm),
                    files: Some(AttemptFiles {
                        store: self.store.clone(),
                        blobs: blobs.clone(),
                        run_id,
                        step_id: step.id.clone(),
                        files: step.sandbox.files.clone(),
                        sources: artifact_sources[index].clone(),
                        scope: cache_scope.clone(),
                        cache_limit: self.cache_limit,
                        workspace: workspace.cwd.clone(),
                    })
                    .filter(AttemptFiles::is_needed),
                };
                let agents = self.agents.clone();
                let cancel = cancel_receiver.clone();
                let masker = masker.clone();
                let handle = attempts.spawn(async move {
                    let outcome =
                        run_attempt(&step, attempt_context, agents.as_ref(), sink, cancel).await;
                    (index, attempt, mask_outcome(&masker, outcome))
                });
                running.insert(handle.id(), (index, attempt, token));
            }
            if let Some(state) = effects.finished {
                break Ok(state);
            }

            let wake = machine
                .next_wakeup()
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(CANCEL_POLL)
                .min(CANCEL_POLL);
            tokio::select! {
                joined = attempts.join_next_with_id(), if !attempts.is_empty() => {
                    arrived.extend(joined.map(|joined| attempt_ended(joined, &mut running)));
                }
                () = tokio::time::sleep(wake) => {}
            }
            while let Some(joined) = attempts.try_join_next_with_id() {
                arrived.push(attempt_ended(joined, &mut running));
            }
        };
        let final_state = match driven {
            Ok(state) => state,
            Err(error) => {
                // Most likely the lease was lost: nothing of this engine may keep running.
                let _ = cancel_sender.send(true);
                attempts.abort_all();
                for (_, _, token) in running.values() {
                    kill_orphans(token);
                }
                while attempts.join_next().await.is_some() {}
                logs.finish().await;
                return Err(error);
            }
        };
        logs.finish().await;
        if self.remove_workspaces && final_state.is_terminal() {
            let work_dir = self.settings.work_dir.clone();
            let removed = tokio::task::spawn_blocking(move || {
                super::workspace::remove_checkout(&work_dir, run_id)
            })
            .await;
            if let Ok(Err(error)) = removed {
                tracing::warn!(run_id, %error, "failed to remove the run's workspace");
            }
        }
        if let Some(observer) = &observer {
            let reason = self.store.run(run_id)?.reason;
            let _ = observer.send(RunEvent::Finished {
                run_id,
                state: final_state,
                reason,
            });
        }
        Ok(final_state)
    }

    /// Runs a store transaction on a blocking thread (see `blocking.rs`).
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTxn<'_>) -> store::Result<T> + Send + 'static,
    ) -> Result<T> {
        store_call(&self.store, move |store| store.write(work)).await
    }

    /// Records that attempts cut off by an engine that died or lost its lease ended, and kills
    /// what they left running (every earlier epoch's processes of the run).
    async fn close_interrupted_attempts(
        &self,
        fence: &Fence,
        machine: &RunMachine<'_>,
    ) -> Result<()> {
        let run_id = fence.run_id;
        let interrupted: Vec<(String, u32, Vec<i32>)> = machine
            .interrupted()
            .into_iter()
            .map(|(index, attempt)| {
                let step_id = machine.step_id(index).to_string();
                let pids = kill_token_prefix(&format!("{}/{run_id}/{step_id}/", self.token_prefix));
                (step_id, attempt, pids)
            })
            .collect();
        // A stalled engine may hold processes of steps the store does not show running (started
        // just before it stalled): none of them may outlive the reclaim.
        let stray = kill_token_prefix(&format!("{}/{run_id}/", self.token_prefix));
        if interrupted.is_empty() && stray.is_empty() {
            return Ok(());
        }
        let fence = fence.clone();
        self.write(move |txn| {
            txn.check_fence(&fence)?;
            for (step_id, attempt, pids) in &interrupted {
                txn.finish_attempt(
                    run_id,
                    step_id,
                    *attempt,
                    "interrupted",
                    None,
                    None,
                    Some("the engine running this attempt stopped or lost its lease"),
                )?;
                txn.append_event(
                    run_id,
                    Some(step_id),
                    Some(*attempt),
                    "step_interrupted",
                    &serde_json::json!({ "orphans_killed": pids }),
                )?;
            }
            if !stray.is_empty() {
                txn.append_event(
                    run_id,
                    None,
                    None,
                    "orphans_killed",
                    &serde_json::json!({ "pids": stray }),
                )?;
            }
            Ok(())
        })
        .await
    }

    /// `CAIRN_ATTEMPT_TOKEN` of an attempt: `<home>/<run>/<step>/<epoch>.<attempt>`. The epoch
    /// keeps a replaced engine's processes apart from its successor's.
    fn attempt_token(&self, run_id: i64, step_id: &str, epoch: i64, attempt: u32) -> String {
        format!("{}/{run_id}/{step_id}/{epoch}.{attempt}", self.token_prefix)
    }
}

/// The outcome of an attempt task that ended: its own, or a failure saying it panicked.
fn attempt_ended(
    joined: std::result::Result<(tokio::task::Id, (usize, u32, Outcome)), tokio::task::JoinError>,
    running: &mut HashMap<tokio::task::Id, (usize, u32, String)>,
) -> (usize, u32, Outcome) {
    match joined {
        Ok((id, ended)) => {
            running.remove(&id);
            ended
        }
        Err(error) => {
            let (index, attempt, token) = running.remove(&error.id()).unwrap_or_default();
            // Whatever the attempt started must not outlive it.
            if !token.is_empty() {
                kill_orphans(&token);
            }
            let message = if error.is_panic() {
                let payload = error.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic payload".into());
                format!("the step panicked: {text}")
            } else {
                "the step's task was aborted".to_string()
            };
            (
                index,
                attempt,
                Outcome::Failed {
                    class: FailureClass::Panicked,
                    exit_code: None,
                    message,
                },
            )
        }
    }
}

/// A step's outputs and error message with every secret value masked, before they are
/// stored (steps row, events) or passed to dependants.
pub(super) fn mask_outcome(masker: &crate::secrets::Masker, outcome: Outcome) -> Outcome {
    if masker.is_empty() {
        return outcome;
    }
    match outcome {
        Outcome::Succeeded { outputs } => Outcome::Succeeded {
            outputs: masker.mask_json(&outputs),
        },
        Outcome::Failed {
            class,
            exit_code,
            message,
        } => Outcome::Failed {
            class,
            exit_code,
            message: masker.mask(&message).into_owned(),
        },
        other => other,
    }
}

fn merge(into: &mut Effects, from: Effects) {
    into.writes.extend(from.writes);
    into.spawns.extend(from.spawns);
    into.finished = into.finished.or(from.finished);
}

fn apply(txn: &WriteTxn<'_>, fence: &Fence, writes: &[Write]) -> store::Result<()> {
    let (run_id, owner) = (fence.run_id, fence.owner.as_str());
    for write in writes {
        match write {
            Write::Step(change) => txn.transition_step(change)?,
            Write::StartAttempt { step_id, attempt } => {
                txn.start_attempt(run_id, step_id, *attempt, owner)?;
            }
            Write::FinishAttempt {
                step_id,
                attempt,
                state,
                failure,
                exit_code,
                error,
            } => txn.finish_attempt(
                run_id,
                step_id,
                *attempt,
                state,
                *failure,
                *exit_code,
                error.as_deref(),
            )?,
            Write::FinishRun { state, reason } => {
                txn.finish_run(run_id, *state, reason.as_deref())?
            }
        }
    }
    Ok(())
}

fn notify(observer: &Option<Observer>, run_id: i64, writes: &[Write]) {
    let Some(observer) = observer else { return };
    for write in writes {
        if let Write::Step(StepTransition {
            step_id,
            to,
            attempt,
            error,
            detail,
            ..
        }) = write
        {
            let detail = error.clone().or_else(|| {
                detail
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let _ = observer.send(RunEvent::Step {
                run_id,
                step_id: step_id.clone(),
                state: *to,
                attempt: *attempt,
                detail,
            });
        }
    }
}

struct AttemptContext {
    store: Store,
    run_id: i64,
    attempt: u32,
    token: String,
    context: Value,
    workspace: Arc<Workspace>,
    workflow_env: Vec<(String, String)>,
    requirement: crate::pipeline::SandboxRequirement,
    /// The step's `llm:` over the workflow's.
    models: crate::pipeline::ModelUse,
    /// Artifacts and cache around the step; `None` when it has neither.
    files: Option<AttemptFiles>,
}

async fn run_attempt(
    step: &Step,
    attempt: AttemptContext,
    agents: &dyn Agents,
    logs: LogSink,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let outcome = match attempt.files.clone() {
        None => perform_attempt(step, attempt, agents, logs.clone(), cancel).await,
        Some(files) => with_files(files, step, attempt, agents, logs.clone(), cancel).await,
    };
    // The attempt's log is complete (and stored) before its outcome counts; a log that could
    // not be stored makes a success a failure that says so.
    logs.settle(outcome).await
}

/// Restores what the step receives, runs it, and after a success stores what it hands on. The
/// file work is blocking and runs on a blocking thread.
async fn with_files(
    files: AttemptFiles,
    step: &Step,
    attempt: AttemptContext,
    agents: &dyn Agents,
    logs: LogSink,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let failed = |message: String| Outcome::Failed {
        class: FailureClass::ExitCode,
        exit_code: None,
        message,
    };
    let files = Arc::new(files);
    let (before, sink) = (files.clone(), logs.clone());
    let restored = match tokio::task::spawn_blocking(move || before.before(&sink)).await {
        Ok(Ok(restored)) => restored,
        Ok(Err(message)) => {
            logs.line("engine", message.clone());
            return failed(message);
        }
        Err(error) => return failed(format!("restoring the step's files stopped: {error}")),
    };
    let outcome = perform_attempt(step, attempt, agents, logs.clone(), cancel).await;
    if !matches!(outcome, Outcome::Succeeded { .. }) {
        return outcome;
    }
    let sink = logs.clone();
    match tokio::task::spawn_blocking(move || files.after(restored, &sink)).await {
        Ok(Ok(())) => outcome,
        Ok(Err(message)) => {
            logs.line("engine", message.clone());
            failed(message)
        }
        Err(error) => failed(format!("storing the step's files stopped: {error}")),
    }
}

/// For each step, the steps it depends on (directly or not) that declare artifacts, in
/// dependency order: what is restored into the workspace before it starts.
fn artifact_sources(workflow: &Workflow) -> Vec<Vec<String>> {
    // Walking every step's ancestors is quadratic on long chains: only pay when it matters.
    if workflow
        .steps
        .iter()
        .all(|step| step.sandbox.files.artifacts.is_empty())
    {
        return vec![Vec::new(); workflow.steps.len()];
    }
    let dag = pipeline::Dag::new(workflow);
    let mut rank = vec![0; workflow.steps.len()];
    for (position, index) in dag.topological_order().into_iter().enumerate() {
        rank[index] = position;
    }
    (0..workflow.steps.len())
        .map(|index| {
            let mut ancestors: Vec<usize> = dag
                .ancestors(index)
                .into_iter()
                .filter(|&ancestor| !workflow.steps[ancestor].sandbox.files.artifacts.is_empty())
                .collect();
            ancestors.sort_by_key(|&ancestor| rank[ancestor]);
            ancestors
                .into_iter()
                .map(|ancestor| workflow.steps[ancestor].id.clone())
                .collect()
        })
        .collect()
}

async fn perform_attempt(
    step: &Step,
    attempt: AttemptContext,
    agents: &dyn Agents,
    logs: LogSink,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let idempotency_key = format!("{}/{}", attempt.run_id, step.id);
    match &step.action {
        Action::Run { command } => {
            let mut env = attempt.workflow_env.clone();
            env.extend(step.env.clone());
            // The step's secrets, opened now: never in the workflow, the context or the store
            // in clear. A worker opens a `runs_on:` step's secrets itself.
            if !step.secrets.is_empty() && step.runs_on.is_empty() {
                let vault = crate::secrets::Vault::new(&attempt.store);
                for (variable, name) in &step.secrets {
                    match vault.get(name) {
                        Ok(value) => env.push((variable.clone(), value)),
                        Err(error) => {
                            logs.line("engine", format!("step `{}`: {error}", step.id));
                            return Outcome::Failed {
                                class: FailureClass::ExitCode,
                                exit_code: None,
                                message: error.to_string(),
                            };
                        }
                    }
                }
            }
            env.extend([
                ("CAIRN_RUN_ID".to_string(), attempt.run_id.to_string()),
                ("CAIRN_STEP_ID".into(), step.id.clone()),
                ("CAIRN_ATTEMPT".into(), attempt.attempt.to_string()),
                ("CAIRN_IDEMPOTENCY_KEY".into(), idempotency_key),
                ("CAIRN_CONTEXT".into(), attempt.context.to_string()),
                (
                    "CAIRN_WORKSPACE".into(),
                    attempt.workspace.cwd.display().to_string(),
                ),
                (TOKEN_VARIABLE.into(), attempt.token.clone()),
            ]);
            // Outputs of direct dependencies, for scripts that cannot read JSON
            // (`${{ needs.X.outputs.Y }}` of an Actions workflow).
            if let Some(steps) = attempt.context.get("steps").and_then(Value::as_object) {
                for (dependency, view) in steps {
                    let Some(outputs) = view.get("outputs").and_then(Value::as_object) else {
                        continue;
                    };
                    for (key, value) in outputs {
                        let text = match value {
                            Value::String(text) => text.clone(),
                            Value::Number(_) | Value::Bool(_) => value.to_string(),
                            _ => continue,
                        };
                        if text.contains('\0') {
                            continue;
                        }
                        env.push((
                            crate::pipeline::dependency_output_variable(dependency, key),
                            text,
                        ));
                    }
                }
            }
            for key in ["repo", "commit", "branch", "risk"] {
                if let Some(value) = attempt.context.get(key).and_then(Value::as_str) {
                    env.push((format!("CAIRN_{}", key.to_uppercase()), value.to_string()));
                }
            }
            if !step.runs_on.is_empty() {
                // The worker gives the command its own workspace, output file and token.
                env.retain(|(name, _)| name != "CAIRN_WORKSPACE" && name != TOKEN_VARIABLE);
                let task = NewTask {
                    run_id: attempt.run_id,
                    step_id: step.id.clone(),
                    attempt: attempt.attempt,
                    labels: step.runs_on.clone(),
                    spec: TaskSpec {
                        command: command.clone(),
                        env,
                        timeout_ms: step.timeout.map(|t| t.as_millis() as u64),
                        secrets: step
                            .secrets
                            .iter()
                            .map(|(variable, name)| (variable.clone(), name.clone()))
                            .collect(),
                    },
                };
                return super::remote::dispatch(&attempt.store, task, &logs, cancel).await;
            }
            let output_file = attempt
                .workspace
                .outputs
                .join(format!("{}.{}", step.id, attempt.attempt));
            env.push(("CAIRN_OUTPUT".into(), output_file.display().to_string()));
            let spec = ProcessSpec {
                command: command.clone(),
                cwd: attempt.workspace.cwd.clone(),
                env,
                timeout: step.timeout,
                output_file,
                token: attempt.token.clone(),
                sandbox: step.sandbox.clone(),
                requirement: attempt.requirement,
            };
            run_command(spec, logs, cancel).await
        }
        Action::Agent { name, with } => {
            let call = AgentCall {
                run_id: attempt.run_id,
                step_id: step.id.clone(),
                attempt: attempt.attempt,
                idempotency_key,
                with: with.clone(),
                context: attempt.context,
                workspace: attempt.workspace.cwd.clone(),
                logs: logs.clone(),
                store: attempt.store.clone(),
                env: attempt
                    .workflow_env
                    .iter()
                    .cloned()
                    .chain(step.env.clone())
                    .collect(),
                sandbox: step.sandbox.clone(),
                sandbox_requirement: attempt.requirement,
                deadline: step.timeout.map(|t| std::time::Instant::now() + t),
                models: attempt.models,
            };
            let Some(running) = agents.start(name, call) else {
                return Outcome::Failed {
                    class: FailureClass::Spawn,
                    exit_code: None,
                    message: format!("unknown agent `{name}`"),
                };
            };
            let deadline = deadline(step.timeout);
            let cancelled = cancelled(&mut cancel);
            tokio::select! {
                result = running => match result {
                    Ok(outputs) => Outcome::Succeeded { outputs },
                    Err(error) => {
                        logs.line("engine", format!("agent `{name}` failed: {error}"));
                        Outcome::Failed { class: FailureClass::ExitCode, exit_code: None, message: error.message }
                    }
                },
                () = deadline => Outcome::Failed {
                    class: FailureClass::Timeout,
                    exit_code: None,
                    message: format!("timed out after {}", humanize(step.timeout.unwrap_or_default())),
                },
                () = cancelled => Outcome::Cancelled,
            }
        }
    }
}
