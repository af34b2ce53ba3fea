//! The team service of `cairn serve --listen`: a versioned JSON API (`/api/v1/…`), Prometheus
//! `/metrics` and signed webhooks (`/hooks/…`), on axum. It reads the store through its own
//! connections and asks the serving loop (`trigger::serve`) to drive runs and poll
//! repositories, so runs are still created only through the durable cursor. See
//! `ARCHITECTURE.md`, "Team service".

mod auth;
mod dashboard;
mod error;
mod hooks;
mod logs;
mod metrics;
mod openapi;
mod records;
mod redact;
mod router;
mod runs;
mod state;

pub use auth::{Scope, hash_token, new_token};
pub use error::Error;
pub use hooks::{HookSecrets, signature_matches};
pub use router::{Listening, ROUTES, Tls, listen, router};
pub use state::{ApiOptions, ApiState, ServedWorkflow};
