//! What a long-running `cairn serve` does besides polling: retention (`cairn gc`) once an
//! hour, and the full database integrity check that ordinary commands skip (they run
//! `quick_check` on open) once a day.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exec::Engine;
use crate::retention::{Retention, collect};

/// How often `serve` applies retention; the first pass runs at start.
pub const GC_EVERY: Duration = Duration::from_secs(3600);

/// Applies retention on a blocking thread; failures are logged, and the next pass retries.
pub async fn collect_garbage(engine: &Arc<Engine>, work_dir: PathBuf, retention: Retention) {
    let store = engine.store().clone();
    let result = tokio::task::spawn_blocking(move || collect(&store, &work_dir, &retention)).await;
    match result {
        Ok(Ok(report)) => tracing::info!(
            runs = report.database.runs.len(),
            log_lines = report.database.log_lines,
            directories = report.run_directories.len(),
            "retention applied"
        ),
        Ok(Err(error)) => tracing::warn!("failed to apply retention: {error}"),
        Err(error) => tracing::warn!("retention stopped: {error}"),
    }
}

/// How often `serve` runs `PRAGMA integrity_check`. The check reads the whole database, so it
/// runs rarely, and on a blocking thread so polling and runs carry on meanwhile.
pub const INTEGRITY_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Runs the full integrity check and reports damage loudly (stderr and the log); the engine
/// keeps serving, as the damage may be in history only, but a person must look.
pub async fn check_integrity(engine: &Arc<Engine>) {
    let store = engine.store().clone();
    let result = tokio::task::spawn_blocking(move || store.integrity_check()).await;
    let path = engine.store().path().display().to_string();
    match result {
        Ok(Ok(report)) if report == "ok" => tracing::info!(path, "integrity check: ok"),
        Ok(Ok(report)) => {
            tracing::error!(path, report, "integrity check failed");
            eprintln!(
                "error: the state database {path} failed its integrity check: {report}; stop \
                 Cairn and run `cairn doctor`, then restore it from a backup"
            );
        }
        Ok(Err(error)) => tracing::error!(path, "failed to run the integrity check: {error}"),
        Err(error) => tracing::error!(path, "the integrity check stopped: {error}"),
    }
}
