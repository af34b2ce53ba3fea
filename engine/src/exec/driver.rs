//! The driver: performs what the [`RunMachine`] decides.
//!
//! One loop per run: take every attempt outcome that has arrived, let the machine plan, commit
//! all resulting writes in one transaction (group commit), then launch the new attempts. Leases
//! are renewed in the background of the same loop and cancellation requests are polled from the
//! store, so `cairn cancel` works from another process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::agent::{AgentCall, Agents};
use super::error::{Error, Result};
use super::logs::{LogSink, LogWriter};
use super::machine::{Effects, Outcome, RunMachine, Write};
use super::orphans::{TOKEN_VARIABLE, kill_orphans, kill_token_prefix};
use super::owner::{Owner, owner_alive};
use super::process::{ProcessSpec, cancelled, deadline, humanize, run_command};
use super::retry::FailureClass;
use super::workspace::Workspace;
use crate::pipeline::{self, Action, LoadOptions, Step, Workflow};
use crate::store::{
    LogLine, NewRun, RunRecord, RunState, StepState, StepTransition, Store, WriteTxn, now_ms,
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
        }
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
        let run_id = self.store.write(|txn| txn.create_run(&new))?;
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
        let workflow = pipeline::load_str(
            file_name,
            definition,
            &LoadOptions {
                known_agents: &names,
            },
        )?;
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
        self.store
            .write(|txn| txn.claim_run(run_id, &owner, lease_ms, &owner_alive))?;
        let run = self.store.run(run_id)?;
        if run.state.is_terminal() {
            return Err(Error::AlreadyFinished {
                run_id,
                state: run.state,
            });
        }
        let names = self.agents.names();
        let workflow = pipeline::load_str(
            &format!("run {run_id} ({})", run.workflow),
            &run.definition,
            &LoadOptions {
                known_agents: &names,
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
            (owner.clone(), now_ms() + lease_ms),
        );
        self.close_interrupted_attempts(run_id, &machine)?;

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
        let logs = LogWriter::start(self.store.clone(), echo);
        let (cancel_sender, cancel_receiver) = watch::channel(false);
        let (done_sender, mut done_receiver) = mpsc::unbounded_channel::<(usize, u32, Outcome)>();
        let mut arrived: Vec<(usize, u32, Outcome)> = Vec::new();
        let mut last_cancel_poll = 0i64;
        let mut last_renewal = now_ms();

        let final_state = loop {
            let now = now_ms();
            if !machine.is_cancelling() && now - last_cancel_poll >= CANCEL_POLL.as_millis() as i64
            {
                last_cancel_poll = now;
                if self.store.cancel_requested(run_id)? {
                    machine.cancel();
                    let _ = cancel_sender.send(true);
                }
            }
            if now - last_renewal >= lease_ms / 3 {
                last_renewal = now;
                self.store.write(|txn| txn.renew_leases(&owner, lease_ms))?;
            }

            let mut effects = Effects::default();
            arrived.extend(std::iter::from_fn(|| done_receiver.try_recv().ok()));
            for (index, attempt, outcome) in arrived.drain(..) {
                merge(
                    &mut effects,
                    machine.record_outcome(index, attempt, outcome, now, rand::random()),
                );
            }
            merge(&mut effects, machine.plan(now));
            if !effects.writes.is_empty() {
                self.store
                    .write(|txn| apply(txn, run_id, &owner, &effects.writes))?;
                notify(&observer, run_id, &effects.writes);
            }
            for (index, attempt) in effects.spawns {
                let step = workflow.steps[index].clone();
                let sink = logs.sink(run_id, &step.id, attempt);
                let attempt_context = AttemptContext {
                    store: self.store.clone(),
                    run_id,
                    attempt,
                    token: self.attempt_token(run_id, &step.id),
                    context: machine.context_for(index),
                    workspace: workspace.clone(),
                    workflow_env: workflow.env.clone().into_iter().collect(),
                };
                let agents = self.agents.clone();
                let done = done_sender.clone();
                let cancel = cancel_receiver.clone();
                tokio::spawn(async move {
                    let outcome =
                        run_attempt(&step, attempt_context, agents.as_ref(), sink, cancel).await;
                    let _ = done.send((index, attempt, outcome));
                });
            }
            if let Some(state) = effects.finished {
                break state;
            }

            let wake = machine
                .next_wakeup()
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(CANCEL_POLL)
                .min(CANCEL_POLL);
            tokio::select! {
                outcome = done_receiver.recv() => arrived.extend(outcome),
                () = tokio::time::sleep(wake) => {}
            }
        };
        logs.finish().await;
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

    /// Records that attempts cut off by a dead engine ended, and kills what they left running.
    fn close_interrupted_attempts(&self, run_id: i64, machine: &RunMachine<'_>) -> Result<()> {
        let interrupted = machine.interrupted();
        if interrupted.is_empty() {
            return Ok(());
        }
        let mut killed = Vec::new();
        for &(index, _) in &interrupted {
            let step_id = machine.step_id(index);
            killed.push(kill_orphans(&self.attempt_token(run_id, step_id)));
        }
        self.store.write(|txn| {
            for (&(index, attempt), pids) in interrupted.iter().zip(&killed) {
                let step_id = machine.step_id(index);
                txn.finish_attempt(
                    run_id,
                    step_id,
                    attempt,
                    "interrupted",
                    None,
                    None,
                    Some("the engine running this attempt stopped"),
                )?;
                txn.append_event(
                    run_id,
                    Some(step_id),
                    Some(attempt),
                    "step_interrupted",
                    &serde_json::json!({ "orphans_killed": pids }),
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn attempt_token(&self, run_id: i64, step_id: &str) -> String {
        format!("{}/{run_id}/{step_id}", self.token_prefix)
    }
}

fn merge(into: &mut Effects, from: Effects) {
    into.writes.extend(from.writes);
    into.spawns.extend(from.spawns);
    into.finished = into.finished.or(from.finished);
}

fn apply(
    txn: &WriteTxn<'_>,
    run_id: i64,
    owner: &str,
    writes: &[Write],
) -> crate::store::Result<()> {
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
}

async fn run_attempt(
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
            for key in ["repo", "commit", "branch", "risk"] {
                if let Some(value) = attempt.context.get(key).and_then(Value::as_str) {
                    env.push((format!("CAIRN_{}", key.to_uppercase()), value.to_string()));
                }
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
                deadline: step.timeout.map(|t| std::time::Instant::now() + t),
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
