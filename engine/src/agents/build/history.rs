//! Build history: recent builds per image repository, kept in the store (table `builds`),
//! used to measure the time a cached build saved against the last full build of the same
//! repository. A re-run attempt replaces its own record (keyed by `run_id/step_id`), and the
//! newest [`KEEP_PER_REPOSITORY`] builds of a repository are kept.

use serde::{Deserialize, Serialize};

use crate::store::Store;

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

/// The builds of `repository`, oldest first. The history is advisory: an unreadable one only
/// means no comparison, so errors are logged and read as empty.
fn builds(store: &Store, repository: &str) -> Vec<BuildRecord> {
    match store.builds(repository) {
        Ok(values) => values
            .into_iter()
            .filter_map(|value| serde_json::from_value(value).ok())
            .collect(),
        Err(error) => {
            tracing::warn!(%error, repository, "ignoring an unreadable build history");
            Vec::new()
        }
    }
}

/// The most recent full build of `repository`, other than the build with `key`.
pub fn last_full(store: &Store, repository: &str, key: &str) -> Option<BuildRecord> {
    builds(store, repository)
        .into_iter()
        .filter(|b| b.decision == "full" && b.key != key)
        .max_by_key(|b| b.at_ms)
}

/// Whether any build of `repository` was recorded.
pub fn any(store: &Store, repository: &str) -> bool {
    !builds(store, repository).is_empty()
}

pub fn record(store: &Store, build: &BuildRecord) -> Result<(), String> {
    let value = serde_json::to_value(build)
        .map_err(|e| format!("failed to encode the build record: {e}"))?;
    store
        .write(|txn| {
            txn.record_build(
                &build.key,
                &build.repository,
                build.at_ms,
                &value,
                KEEP_PER_REPOSITORY,
            )
        })
        .map_err(|e| format!("failed to record the build: {e}"))
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
        let store = Store::open(&dir.path().join("cairn.db")).expect("store");
        assert!(last_full(&store, "svc", "k").is_none());
        record(&store, &build("1/build", "full", 1)).expect("record");
        record(&store, &build("2/build", "full", 2)).expect("record");
        record(&store, &build("2/build", "full", 3)).expect("record");
        record(&store, &build("3/build", "cached", 4)).expect("record");
        assert_eq!(builds(&store, "svc").len(), 3);
        assert_eq!(
            last_full(&store, "svc", "3/build").map(|b| b.key),
            Some("2/build".into())
        );
        assert!(any(&store, "svc") && !any(&store, "other"));
        for n in 0..60 {
            record(&store, &build(&format!("{}/build", n + 10), "full", 10 + n)).expect("record");
        }
        assert_eq!(builds(&store, "svc").len(), KEEP_PER_REPOSITORY);
    }
}
