//! What the executor needs from agents, as a trait: the executor runs `agent:` steps through
//! it without knowing which agents exist (they live in `crate::agents`, above `exec`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde_json::Value;

use super::logs::LogSink;
use crate::store::Store;

/// Everything an agent may use for one attempt.
pub struct AgentCall {
    pub run_id: i64,
    pub step_id: String,
    pub attempt: u32,
    /// Stable across attempts of the same step: `run_id/step_id`.
    pub idempotency_key: String,
    /// The step's `with:` block (`{}` when absent).
    pub with: Value,
    /// The run context: trigger facts plus ancestors' outputs (see `RunMachine::context_for`).
    pub context: Value,
    /// The run's working directory (a checkout of the commit when the run has one).
    pub workspace: PathBuf,
    pub logs: LogSink,
    /// The run's store, for agents that keep their own records (test history, builds).
    pub store: Store,
    /// The workflow's `env:` with the step's own on top (the step wins), for the processes an
    /// agent runs on the step's behalf (a test runner).
    pub env: Vec<(String, String)>,
    /// The step's declared sandbox exceptions and limits, for the processes the agent runs
    /// on the repository's behalf (test suites); see [`super::sandbox`].
    pub sandbox: crate::pipeline::StepSandbox,
    pub sandbox_requirement: crate::pipeline::SandboxRequirement,
    /// When the step times out (its `timeout:` from the attempt's start); work with a
    /// fallback (language-model calls) gives up early enough to use it.
    pub deadline: Option<std::time::Instant>,
    /// Which language models the step may use (its `llm:` over the workflow's).
    pub models: crate::pipeline::ModelUse,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub message: String,
}

impl AgentError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The outputs of a successful attempt, or why it failed. The future may be dropped at any
/// await point (timeout, cancellation).
pub type AgentFuture = Pin<Box<dyn Future<Output = Result<Value, AgentError>> + Send>>;

/// The set of agents a run can call.
pub trait Agents: Send + Sync {
    fn names(&self) -> Vec<&'static str>;
    /// Checks agent `name`'s `with:` block when the workflow is loaded, so a typo is reported
    /// by `cairn validate` and before a run starts, not mid-pipeline. The message names the
    /// key it is about first (`key: …` or `` `key` ``) so the loader can point at it.
    fn check_with(&self, name: &str, with: &serde_json::Value) -> Result<(), String> {
        let _ = (name, with);
        Ok(())
    }
    /// Starts agent `name`; `None` when no such agent exists.
    fn start(&self, name: &str, call: AgentCall) -> Option<AgentFuture>;
}
