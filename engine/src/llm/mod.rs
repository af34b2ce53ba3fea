//! The language-model router: tasks → tiers (local model, remote API, rules), with redaction,
//! an exact-key response cache, atomic token budgets, a circuit breaker and durable replay.
//! See `ARCHITECTURE.md`, "Language models".

mod config;
mod redact;
mod remote;
mod router;
mod task;

pub use config::{ConfigError, RemoteSees, Settings};
pub use redact::{Redacted, redact};
pub use router::{Answer, CallScope, Request, Router, cache_key};
pub use task::{Task, Tier, TierChoice};
