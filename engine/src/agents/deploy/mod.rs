//! `agent: deploy_agent`: ships an image as N replicas behind HAProxy (driven through its
//! runtime API) with a rolling, blue-green, canary or hotfix strategy, checks every replica's
//! `/healthz` before it gets traffic, analyses a canary against the baseline statistically, and
//! rolls back on its own. See `DESIGN.md`, "The pipeline" (deploy and monitor stages).
//!
//! Outputs: `service`, `version`, `image`, `strategy` and why, `outcome` (`deployed`,
//! `rolled_back`), `reason`, `replicas`, `previous`, `verdicts` (canary), `rollback_ms`,
//! `duration_ms`, `events` (every traffic change with its time).

mod agent;
mod analysis;
mod choose;
mod config;
mod docker;
mod error;
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

pub use agent::DeployAgent;
pub use analysis::{Outcome, Thresholds, Verdict, analyse};
pub use choose::is_hotfix;
pub use config::{DeployConfig, Strategy};
pub use error::Error;
pub use managed::stop as stop_managed_proxy;
pub use metrics::{Histogram, Snapshot, parse_exposition};
pub use monitor::MonitorAgent;
pub use notify::{Alert, Notifier, NotifyConfig, Severity};
pub use proxy::{Proxy, haproxy_config};
pub use rollback::{rollback, rollback_run};
pub use source::MetricsSource;
pub use stats::{mann_whitney_from_buckets, normal_cdf, two_proportion_z};
