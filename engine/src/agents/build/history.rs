//! Build history: one JSON file of recent builds per image repository, used to measure the
//! time a cached build saved against the last full build of the same repository.
//!
//! Why a file and not the store: agents see no store handle (they get the run context), and a
//! new table would couple the store to one agent. The file sits beside the run directories
//! (`<work_dir>/builds.json`, i.e. `../../builds.json` from a run's checkout) unless `with:
//! history_file:` says otherwise. It is advisory: a missing or unreadable file only means no
//! comparison. Writers take an exclusive lock on `builds.json.lock` and replace the file by
//! rename, so concurrent runs neither interleave nor leave it half-written.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Builds kept per repository.
const KEEP_PER_REPOSITORY: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    pub repository: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// `full` or `cached`.
    pub decision: String,
    pub duration_ms: u64,
    pub image_id: String,
    pub size: u64,
    pub at_ms: i64,
    /// `run_id/step_id`: a re-run attempt replaces its own record instead of adding one.
    pub key: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    version: u32,
    builds: Vec<BuildRecord>,
}

/// The default place: beside the run directories (`<work>/run-N/src` → `<work>/builds.json`).
pub fn default_path(workspace: &Path) -> Option<PathBuf> {
    let run_dir = workspace.parent()?;
    let work_dir = run_dir.parent()?;
    run_dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
        .then(|| work_dir.join("builds.json"))
}

/// The most recent full build of `repository`, other than the build with `key`.
pub fn last_full(path: &Path, repository: &str, key: &str) -> Option<BuildRecord> {
    read(path)
        .builds
        .into_iter()
        .filter(|b| b.repository == repository && b.decision == "full" && b.key != key)
        .max_by_key(|b| b.at_ms)
}

/// Whether any build of `repository` was recorded.
pub fn any(path: &Path, repository: &str) -> bool {
    read(path).builds.iter().any(|b| b.repository == repository)
}

pub fn record(path: &Path, build: BuildRecord) -> Result<(), String> {
    let lock_path = path.with_extension("json.lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("failed to open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("failed to lock {}: {e}", lock_path.display()))?;
    let mut file = read(path);
    file.version = 1;
    file.builds.retain(|b| b.key != build.key);
    file.builds.push(build);
    file.builds.sort_by_key(|b| b.at_ms);
    let mut kept: Vec<BuildRecord> = Vec::new();
    for b in file.builds.iter().rev() {
        if kept.iter().filter(|k| k.repository == b.repository).count() < KEEP_PER_REPOSITORY {
            kept.push(b.clone());
        }
    }
    kept.reverse();
    file.builds = kept;
    let text = serde_json::to_string_pretty(&file)
        .map_err(|e| format!("failed to encode the build history: {e}"))?;
    let temporary = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)
        .map_err(|e| format!("failed to write {}: {e}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .map_err(|e| format!("failed to replace {}: {e}", path.display()))?;
    // Dropping the handle releases the lock.
    drop::<File>(lock);
    Ok(())
}

fn read(path: &Path) -> HistoryFile {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable build history");
            HistoryFile::default()
        }),
        Err(_) => HistoryFile::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(key: &str, decision: &str, at_ms: i64) -> BuildRecord {
        BuildRecord {
            repository: "svc".into(),
            branch: Some("main".into()),
            commit: None,
            decision: decision.into(),
            duration_ms: 1000,
            image_id: "sha256:x".into(),
            size: 1,
            at_ms,
            key: key.into(),
        }
    }

    #[test]
    fn records_replace_by_key_and_find_the_last_full_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("builds.json");
        assert!(last_full(&path, "svc", "k").is_none());
        record(&path, build("1/build", "full", 1)).expect("record");
        record(&path, build("2/build", "full", 2)).expect("record");
        record(&path, build("2/build", "full", 3)).expect("record");
        record(&path, build("3/build", "cached", 4)).expect("record");
        assert_eq!(read(&path).builds.len(), 3);
        assert_eq!(
            last_full(&path, "svc", "3/build").map(|b| b.key),
            Some("2/build".into())
        );
        assert!(any(&path, "svc") && !any(&path, "other"));
    }

    #[test]
    fn default_path_is_beside_the_run_directories() {
        assert_eq!(
            default_path(Path::new("/w/run-7/src")),
            Some(PathBuf::from("/w/builds.json"))
        );
        assert_eq!(default_path(Path::new("/home/me/checkout")), None);
    }
}
