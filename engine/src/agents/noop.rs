//! `agent: noop`: does nothing and succeeds. Used by the engine benchmark to measure the
//! durable path alone, and in workflows as a join point.
//!
//! `with: { outputs: {...} }` echoes the given outputs back.

use serde_json::{Value, json};

use super::registry::{Agent, AgentContext, AgentFuture};

pub struct Noop;

impl Agent for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        let outputs = context
            .with
            .get("outputs")
            .cloned()
            .unwrap_or_else(|| json!({}));
        Box::pin(async move { Ok::<Value, _>(outputs) })
    }
}
