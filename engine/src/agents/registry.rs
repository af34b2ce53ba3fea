//! The agent trait and the registry that maps `agent:` names to implementations.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::exec::LogSink;

/// Everything an agent may use for one attempt.
pub struct AgentContext {
    pub run_id: i64,
    pub step_id: String,
    pub attempt: u32,
    /// Stable across attempts of the same step: `run_id/step_id`.
    pub idempotency_key: String,
    /// The step's `with:` block (`null` when absent).
    pub with: Value,
    /// The run context: trigger facts plus ancestors' outputs (see `RunMachine::context_for`).
    pub context: Value,
    /// The run's working directory (a checkout of the commit when the run has one).
    pub workspace: PathBuf,
    pub logs: LogSink,
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

pub type AgentFuture = Pin<Box<dyn Future<Output = Result<Value, AgentError>> + Send>>;

pub trait Agent: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs one attempt. The future may be dropped at any await point (timeout, cancel).
    fn run(&self, context: AgentContext) -> AgentFuture;
}

/// Agents by name.
#[derive(Clone)]
pub struct Registry {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
}

impl Registry {
    /// Every agent this build ships.
    pub fn builtin() -> Registry {
        let mut registry = Registry {
            agents: BTreeMap::new(),
        };
        registry.register(Arc::new(super::noop::Noop));
        registry.register(Arc::new(super::orchestrator::Orchestrator));
        registry
    }

    pub fn register(&mut self, agent: Arc<dyn Agent>) {
        self.agents.insert(agent.name(), agent);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.agents.keys().copied().collect()
    }
}
