//! `agent: deploy_agent`: ships an image as N replicas behind HAProxy (driven through its
//! runtime API) with a rolling, blue-green, canary or hotfix strategy, checks every replica's
//! `/healthz` before it gets traffic, analyses a canary against the baseline statistically, and
//! rolls back on its own. See `DESIGN.md`, "The pipeline" (deploy and monitor stages).
//!
//! Outputs: `service`, `version`, `image`, `strategy` and why, `outcome` (`deployed`,
//! `rolled_back`), `reason`, `replicas`, `previous`, `verdicts` (canary), `rollback_ms`,
//! `duration_ms`, `events` (every traffic change with its time), `window` (what let it go when
//! a deploy window or freeze applies).

mod agent;
mod alert_format;
mod analysis;
mod choose;
mod config;
mod docker;
mod drill;
mod error;
mod gate;
mod managed;
mod metrics;
mod monitor;
mod notify;
mod probe;
mod proxy;
mod rollback;
mod source;
mod state;
mod stats;
mod strategy;
mod window;

pub use agent::DeployAgent;
pub use analysis::{Outcome, Thresholds, Verdict, analyse};
pub use choose::is_hotfix;
pub use config::{DeployConfig, Inconclusive, Strategy};
pub use drill::drill;
pub use error::Error;
pub use gate::approve_run;
pub use managed::stop as stop_managed_proxy;
pub use metrics::{Histogram, Snapshot, parse_exposition};
pub use monitor::MonitorAgent;
pub use notify::{Alert, Destination, Notifier, NotifyConfig, Route, Severity};
/// Containers and the health probe, shared with the build agent's proof of a proposed
/// Dockerfile (it runs the proposal's image as a replica would run).
pub(crate) mod containers {
    pub(crate) use super::docker::{create_published, exited, remove, running};
}
pub(crate) use probe::{client as probe_client, wait_healthy};
pub use proxy::{Proxy, haproxy_config};
pub use rollback::{promote_run, rollback, rollback_run};
pub use source::MetricsSource;
pub use state::{Held, ServiceState, Waiting, all as service_states};
pub use stats::{mann_whitney_from_buckets, normal_cdf, two_proportion_z};
pub use window::{Calendar, Gate};
