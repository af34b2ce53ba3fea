//! The tokio DAG executor: a deterministic run machine, and a driver that persists its
//! decisions and performs them (processes, agents). See `ARCHITECTURE.md`, "Executor".

mod agent;
mod blocking;
mod driver;
mod error;
pub mod files;
mod git;
mod logs;
mod machine;
mod mirror;
mod orphans;
mod owner;
mod process;
mod remote;
mod retry;
pub mod sandbox;
pub mod worker;
mod workspace;

pub use agent::{AgentCall, AgentError, AgentFuture, Agents};
pub use driver::{Abandon, Engine, EngineSettings, Observer, RunEvent};
pub use error::{Error, Result};
pub use git::{GIT_TIMEOUT, git, git_async, git_within};
pub use logs::LogSink;
pub use machine::{Effects, Outcome, RunMachine, Write};
pub use owner::{Owner, owner_alive};
pub use process::humanize;
pub use retry::FailureClass;
pub use workspace::remove_checkout;
