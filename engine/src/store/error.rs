//! Errors of the durable store.

use std::path::PathBuf;

use super::state::StepState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to open the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state database {path} is corrupt (it failed its integrity check, `{check}`): \
         {report}. It was left exactly as found; restore it from a backup, or move it aside \
         (with its -wal and -shm files) to start with an empty history"
    )]
    Corrupt {
        path: PathBuf,
        check: &'static str,
        report: String,
    },
    #[error(
        "the state database {path} is empty (0 bytes), so it holds no history; if that is \
         expected, remove it and Cairn starts a new one, otherwise restore it from a backup"
    )]
    EmptyFile { path: PathBuf },
    #[error("the state database {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("failed to create the state database {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to inspect the state database {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write to {dir}, where Cairn keeps its state ({reason}); set CAIRN_HOME or \
         --home to a writable directory"
    )]
    NotWritable { dir: PathBuf, reason: String },
    #[error(
        "the state database {path} was written by a newer Cairn (schema version {found}, this \
         build knows up to {supported}); upgrade Cairn to open it"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("failed to migrate the state database to schema version {version}")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no run with id {0}")]
    RunNotFound(i64),
    #[error("run {run_id} has no step `{step_id}`")]
    StepNotFound { run_id: i64, step_id: String },
    #[error("illegal transition of step `{step_id}` in run {run_id}: {from} -> {to}")]
    IllegalTransition {
        run_id: i64,
        step_id: String,
        from: StepState,
        to: StepState,
    },
    #[error("run {run_id} is held by {owner} (lease valid for {remaining_ms} ms more)")]
    LeaseHeld {
        run_id: i64,
        owner: String,
        remaining_ms: i64,
    },
    #[error(
        "run {run_id} is no longer driven by this engine: another engine claimed it \
         (now held by {holder}, epoch {epoch}, state {state})"
    )]
    LeaseLost {
        run_id: i64,
        holder: String,
        epoch: i64,
        state: String,
    },
    #[error("no task with id {0}")]
    TaskNotFound(i64),
    #[error(
        "task {task_id} is no longer this worker's: its lease expired and it was taken \
         (now held by {holder}, epoch {epoch}, state {state})"
    )]
    TaskLost {
        task_id: i64,
        holder: String,
        epoch: i64,
        state: String,
    },
    #[error("run {0} is not running any more")]
    RunNotRunning(i64),
    #[error("the state database holds a bad value in {what}: {detail}")]
    BadValue { what: &'static str, detail: String },
    #[error("the state database returned an unexpected value in column {index}: {detail}")]
    BadColumn { index: usize, detail: String },
    #[error("state database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL query failed")]
    Postgres(#[from] postgres::Error),
    #[error("failed to connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: postgres::Error,
    },
    #[error(
        "the PostgreSQL database at {url} holds schema version {found}, but this build knows up to {supported}; upgrade Cairn to use it"
    )]
    NewerPostgresSchema {
        url: String,
        found: i64,
        supported: i64,
    },
    #[error("failed to migrate the PostgreSQL database to schema version {version}")]
    MigratePostgres {
        version: i64,
        #[source]
        source: postgres::Error,
    },
    #[error("the PostgreSQL session thread panicked")]
    SessionPanicked,
}

impl Error {
    /// The database could not be reached (PostgreSQL restarting, the network cut): the same
    /// request may succeed later, unlike a refused or failed statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Postgres(source) => {
                source.is_closed() || postgres_unavailable(source)
            }
            _ => false,
        }
    }
}

/// An error that says the server cannot be reached or is going down or coming up, rather
/// than that it refused what was asked.
pub(super) fn postgres_unavailable(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    match error.code() {
        None => error.as_db_error().is_none(),
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
        ]
        .contains(code),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
