//! What is deployed, kept in a JSON file (`deployments.json` beside the run directories, as
//! the build agent keeps `builds.json`): per service the active release, the retired ones kept
//! for instant rollback, the deploy in progress with the release it replaces, and the history
//! of every deploy and rollback with its reason.
//!
//! The in-progress entry is written before any traffic moves, so a re-attempt after an engine
//! crash knows exactly which servers to restore. Writes go to a temporary file that is synced
//! and renamed over the old one: a crash leaves the old file or the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::docker::Replica;
use super::error::Error;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub key: String,
    pub version: String,
    pub image: String,
    pub replicas: Vec<Replica>,
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProgress {
    pub key: String,
    pub version: String,
    pub strategy: String,
    /// The release serving traffic before this deploy touched anything.
    pub replaces: Option<Release>,
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub version: String,
    pub strategy: String,
    /// `deployed`, `rolled_back` or `recovered` (rolled back on a re-attempt after a crash).
    pub outcome: String,
    pub reason: String,
    pub rollback_ms: Option<u64>,
    pub at_ms: i64,
    /// The canary verdicts (with the values they were based on) and traffic events.
    #[serde(default)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub active: Option<Release>,
    /// Previous releases kept running (out of rotation) until `retired_ms + keep_previous`.
    pub retired: Vec<(i64, Release)>,
    pub in_progress: Option<InProgress>,
    pub history: Vec<Record>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub services: BTreeMap<String, ServiceState>,
}

fn error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

pub fn load(path: &Path) -> Result<StateFile, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(error(path, e)),
    }
}

pub fn save(path: &Path, state: &StateFile) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| error(path, e))?;
    }
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| error(path, e))?;
    let mut file = std::fs::File::create(&temporary).map_err(|e| error(path, e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| error(path, e))?;
    std::fs::rename(&temporary, path).map_err(|e| error(path, e))
}

/// Reads, changes and writes back one service's state.
pub fn update<T>(
    path: &Path,
    service: &str,
    change: impl FnOnce(&mut ServiceState) -> T,
) -> Result<T, Error> {
    let mut state = load(path)?;
    let result = change(state.services.entry(service.to_string()).or_default());
    save(path, &state)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deployments.json");
        assert_eq!(load(&path).expect("missing is empty"), StateFile::default());
        let release = Release {
            key: "1/deploy".into(),
            version: "v1".into(),
            image: "shop:v1".into(),
            replicas: vec![Replica {
                name: "a".into(),
                address: "127.0.0.1:1".into(),
            }],
            since_ms: 5,
        };
        update(&path, "shop", |s| {
            s.active = Some(release.clone());
            s.in_progress = Some(InProgress {
                key: "2/deploy".into(),
                version: "v2".into(),
                strategy: "canary".into(),
                replaces: Some(release.clone()),
                started_ms: 6,
            });
        })
        .expect("update");
        let state = load(&path).expect("load");
        assert_eq!(state.services["shop"].active.as_ref(), Some(&release));
        assert_eq!(
            state.services["shop"]
                .in_progress
                .as_ref()
                .map(|p| p.key.as_str()),
            Some("2/deploy")
        );
        std::fs::write(&path, "{ not json").expect("corrupt");
        assert!(
            load(&path).is_err(),
            "a corrupt file is an error, not an empty state"
        );
    }
}
