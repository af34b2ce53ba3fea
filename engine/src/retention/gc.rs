//! `cairn gc` (and `cairn serve` once an hour): apply the retention policy to the database,
//! then to the run directories under `$CAIRN_HOME/work` and the blobs under `$CAIRN_HOME/blobs`.

use std::path::Path;

use crate::exec::files::Blobs;
use crate::exec::remove_checkout;
use crate::store::{Pruned, Store, now_ms};

use super::config::{Retention, WorkspacePolicy};

/// What a collection removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub database: Pruned,
    /// Run directories removed whole (their run is gone from the database).
    pub run_directories: Vec<String>,
    /// Checkouts of finished runs removed (left by an engine that stopped before it could).
    pub checkouts: usize,
    /// Artifact and cache blobs no row names any more (older than `GARBAGE_GRACE`), and
    /// their bytes.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Step cache entries evicted (least recently used) to fit `retention.cache_size`.
    pub cache_evictions: usize,
}

/// Prunes the database, then removes run directories whose run no longer exists, and (unless
/// workspaces are kept) checkouts of finished runs.
pub fn collect(
    store: &Store,
    work_dir: &Path,
    retention: &Retention,
) -> Result<GcReport, crate::store::Error> {
    let mut report = GcReport {
        database: store.prune(&retention.policy, now_ms())?,
        ..GcReport::default()
    };
    // A lowered cap applies now, not at the next save.
    report.cache_evictions = store.evict_caches(retention.cache_size)?.len();
    // After the rows: deleted runs' artifacts and evicted caches leave their blobs unreferenced.
    match Blobs::beside(store).collect_garbage(&store.referenced_blobs()?) {
        Ok((count, bytes)) => (report.blobs, report.blob_bytes) = (count, bytes),
        Err(error) => tracing::warn!(%error, "failed to remove unreferenced blobs"),
    }
    let known = store.run_ids()?;
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return Ok(report);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run_id) = name
            .strip_prefix("run-")
            .and_then(|id| id.parse::<i64>().ok())
        else {
            continue;
        };
        if !known.contains(&run_id) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => report.run_directories.push(name),
                Err(error) => tracing::warn!(%error, directory = name, "failed to remove"),
            }
            continue;
        }
        if retention.workspaces == WorkspacePolicy::Remove
            && entry.path().join("src").exists()
            && store.run(run_id).is_ok_and(|run| run.state.is_terminal())
        {
            match remove_checkout(work_dir, run_id) {
                Ok(()) => report.checkouts += 1,
                Err(error) => tracing::warn!(%error, run_id, "failed to remove a checkout"),
            }
        }
    }
    Ok(report)
}
