//! Built-in agents: named step implementations that `agent:` steps call.
//!
//! An agent gets the run context and its `with:` configuration and returns its outputs as
//! JSON, which feed the `when:` conditions and inputs of the steps after it.

pub mod build;
pub mod deploy;
mod noop;
pub mod orchestrator;
mod registry;
pub mod test;
pub(crate) mod with;

pub use registry::{Agent, AgentContext, AgentError, AgentFuture, Registry};
