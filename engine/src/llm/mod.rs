//! The language-model router: tasks → tiers (local model, remote API, rules), with redaction,
//! the least context for the remote, an exact-key response cache, hard token budgets with
//! upper-bound reservations, step deadlines, a circuit breaker and durable replay.
//! See `ARCHITECTURE.md`, "Language models".

mod budget;
mod config;
mod context;
mod redact;
mod remote;
mod router;
mod task;

pub use config::{ConfigError, RemoteSees, Settings};
pub use context::minimal_diff;
pub use redact::{RedactError, Redacted, Redactor, redact};
pub use router::{Answer, CallScope, Request, Router, cache_key};
pub use task::{Task, Tier, TierChoice};
