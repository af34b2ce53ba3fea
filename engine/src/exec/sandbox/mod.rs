//! Sandboxed step processes: every `run:` step, the test agent's runners, the generation gate
//! and build commands run through [`Sandbox::command`], which turns a planned shell command
//! and the step's declared policy into a [`tokio::process::Command`] inside bubblewrap
//! (mount, PID, IPC, UTS, user and optionally network namespaces), with a clean environment
//! and resource limits. See `ARCHITECTURE.md` ("Sandbox").

mod bwrap;
mod cgroup;
mod command;
mod detect;
mod env;
mod error;
mod global;
mod hidden;

pub use command::{DEFAULT_LIMITS, Guard, Plan, Sandbox, Sandboxed};
pub use detect::Mechanism;
pub use error::Error;
pub use global::{current, install};
