//! Retention and `cairn gc`: how long runs, logs and workspaces are kept, and removing what is
//! past that. See `ARCHITECTURE.md`, "Retention".

mod config;
mod gc;

pub use config::{ConfigError, Retention, WorkspacePolicy};
pub use gc::{GcReport, collect};
