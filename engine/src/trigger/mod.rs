//! Triggers: cron-scheduled polling of git repositories, producing one run per new commit.
//! See `ARCHITECTURE.md`, "Triggers".

mod poller;
mod remote;
mod serve;
mod upkeep;

pub use poller::{Poller, TickReport, Watch, backoff_ms};
pub use serve::{ServeCommand, ServeOptions, ServeReport, serve};
