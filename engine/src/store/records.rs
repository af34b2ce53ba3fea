//! Rows of the durable store as Rust values.

use serde::Serialize;
use serde_json::Value;

use super::state::{RunState, StepState};

/// Everything needed to create a run and its pending steps in one transaction.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workflow: String,
    pub source_path: Option<String>,
    /// The exact workflow text; resume parses this, never the file on disk.
    pub definition: String,
    pub context: Value,
    /// Step ids in file order.
    pub step_ids: Vec<String>,
    pub owner: String,
    pub lease_ms: i64,
}

/// Proof of driving a run: its lease holder and the fencing epoch that holder's claim set.
/// Checked inside every driver transaction ([`super::WriteTxn::check_fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub run_id: i64,
    pub owner: String,
    pub epoch: i64,
}

/// Who may add a step's log lines: the engine driving the run, or the worker holding the
/// step's task. Lines under a fence that no longer holds are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFence {
    Run(Fence),
    Task(super::tasks::TaskFence),
}

/// What claiming a run's lease gave: the fence to write with, and the owner it was taken
/// from, when it was taken over.
#[derive(Debug, Clone)]
pub struct Claim {
    pub fence: Fence,
    pub previous: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub workflow: String,
    pub source_path: Option<String>,
    #[serde(skip)]
    pub definition: String,
    pub definition_sha256: String,
    pub context: Value,
    #[serde(serialize_with = "as_str_run")]
    pub state: RunState,
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub run_id: i64,
    pub step_id: String,
    pub position: i64,
    #[serde(serialize_with = "as_str_step")]
    pub state: StepState,
    pub attempts: u32,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub seq: i64,
    pub run_id: i64,
    pub step_id: Option<String>,
    pub attempt: Option<u32>,
    pub kind: String,
    pub data: Value,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub run_id: i64,
    pub step_id: String,
    pub attempt: u32,
    /// `stdout`, `stderr` or `engine`.
    pub stream: &'static str,
    pub line: String,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredLogLine {
    pub seq: i64,
    pub step_id: String,
    pub attempt: u32,
    pub stream: String,
    pub line: String,
    pub at: i64,
}

/// One state change of a step, with what the row should record alongside it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTransition {
    pub run_id: i64,
    pub step_id: String,
    pub to: StepState,
    /// Attempt number this transition belongs to (the new one when entering `Running`).
    pub attempt: Option<u32>,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
    /// Lease holder and expiry when entering `Running`.
    pub lease: Option<(String, i64)>,
    /// Extra facts for the event (failure class, exit code, reason for a skip…).
    pub detail: Value,
}

impl StepTransition {
    pub fn new(run_id: i64, step_id: impl Into<String>, to: StepState) -> Self {
        Self {
            run_id,
            step_id: step_id.into(),
            to,
            attempt: None,
            outputs: None,
            error: None,
            next_attempt_at: None,
            lease: None,
            detail: Value::Null,
        }
    }
}

fn as_str_run<S: serde::Serializer>(state: &RunState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

fn as_str_step<S: serde::Serializer>(state: &StepState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// How polling a watched repository has been going.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryStatus {
    pub url: String,
    pub failures: u32,
    pub last_error: Option<String>,
    /// The last notable thing polling saw (a force-push, a deleted branch).
    pub last_note: Option<String>,
    pub last_ok_at: Option<i64>,
    pub last_poll_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}
