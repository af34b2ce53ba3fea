//! The durable store: runs, steps, attempts, the append-only event log and step logs, in one
//! SQLite file or a PostgreSQL database. See `ARCHITECTURE.md`, "Durable execution".

mod check;
mod deployments;
mod error;
mod files;
mod llm;
mod location;
mod notifications;
mod postgres;
mod records;
mod retention;
mod risk_models;
mod runs;
mod schema;
mod secrets;
mod service;
#[cfg(test)]
mod shared_tests;
mod sql;
mod sqlite;
mod state;
mod tasks;
mod test_coverage;
mod test_learning;
#[cfg(any(test, feature = "test-support"))]
pub mod test_postgres;
mod tests_history;

pub use check::{Check, refuse_damaged};
pub use deployments::ServiceLock;
pub use error::{Error, Result};
pub use files::{ArtifactFile, ArtifactRecord, CacheEntry, CacheSave};
pub use llm::{BudgetLimits, CachedResponse, CallRecord, CostRow, day_and_month};
pub use location::{Location, LocationError};
pub use records::{
    Claim, EventRecord, Fence, LogFence, LogLine, NewRun, RepositoryStatus, RunRecord, StepRecord,
    StepTransition, StoredLogLine,
};
pub use retention::{Pruned, RetentionPolicy};
pub use risk_models::StoredRiskModel;
pub use runs::WriteTxn;
pub use schema::LATEST_VERSION;
pub use secrets::SealedSecret;
pub use service::{AttemptRecord, FlakyTest, MetricCounts, RunFilter, RunSummary, TokenRecord};
pub use sql::Backend;
pub use sqlite::{Store, now_ms};
pub use state::{RunState, StepState};
pub use tasks::{NewTask, TaskFence, TaskLease, TaskRecord, TaskResult, TaskSpec, TaskTxn};
pub use test_coverage::TestCoverage;
pub use test_learning::{ProposalRecord, TestLink};
pub use tests_history::QuarantinedTest;
