//! The agent trait and the registry that maps `agent:` names to implementations.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::exec::Agents;
pub use crate::exec::{AgentCall as AgentContext, AgentError, AgentFuture};
use crate::llm::{CallScope, Router};

/// The scope of an attempt's language-model calls: replayed by index on a re-run, bounded by
/// the step's deadline, limited to the models the step may use (its `llm:`).
pub fn call_scope(call: &AgentContext) -> CallScope {
    CallScope::new(call.run_id, call.step_id.clone())
        .with_deadline(call.deadline)
        .with_models(call.models)
}

pub trait Agent: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs one attempt. The future may be dropped at any await point (timeout, cancel).
    fn run(&self, context: AgentContext) -> AgentFuture;
    /// Checks the step's `with:` at load (see `exec::Agents::check_with`); agents whose
    /// configuration needs the run (its context, its workspace) check what they can.
    fn check_with(&self, with: &serde_json::Value) -> Result<(), String> {
        let _ = with;
        Ok(())
    }
}

/// Agents by name.
#[derive(Clone)]
pub struct Registry {
    agents: BTreeMap<&'static str, Arc<dyn Agent>>,
}

impl Registry {
    /// Every agent this build ships. `llm` is the language-model router the agents share;
    /// without one they decide with their rules alone.
    pub fn builtin(llm: Option<Arc<Router>>) -> Registry {
        let mut registry = Registry {
            agents: BTreeMap::new(),
        };
        registry.register(Arc::new(super::noop::Noop));
        registry.register(Arc::new(super::orchestrator::Orchestrator::new(
            llm.clone(),
        )));
        registry.register(Arc::new(super::build::BuildAgent::new(llm.clone())));
        registry.register(Arc::new(super::test::TestAgent::new(llm.clone())));
        registry.register(Arc::new(super::deploy::DeployAgent::new(llm)));
        registry.register(Arc::new(super::deploy::MonitorAgent));
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

impl Agents for Registry {
    fn names(&self) -> Vec<&'static str> {
        Registry::names(self)
    }

    fn check_with(&self, name: &str, with: &serde_json::Value) -> Result<(), String> {
        self.get(name)
            .map_or(Ok(()), |agent| agent.check_with(with))
    }

    fn start(&self, name: &str, call: AgentContext) -> Option<AgentFuture> {
        self.get(name).map(|agent| agent.run(call))
    }
}
