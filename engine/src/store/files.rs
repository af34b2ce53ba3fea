//! The index of artifacts and caches (migration 16). The bytes live in blob files named by
//! their SHA-256 (`exec/files/blobs.rs`); a row here is what makes a blob worth keeping.
//!
//! Artifacts belong to their run and go with it (`store/retention.rs`). Cache entries belong
//! to a scope (the run's repository, or the workflow's name without one); a key once saved is
//! never overwritten, and the least recently used entries are evicted past a size cap.

use std::collections::HashSet;

use super::error::Result;
use super::runs::WriteTxn;
use super::sql::Row;
use super::sqlite::Store;

/// One file of a step's artifact archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactFile {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the file's content, hex.
    pub sha256: String,
}

/// An artifact file as listed (`cairn artifacts list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactRecord {
    pub step_id: String,
    #[serde(flatten)]
    pub file: ArtifactFile,
    /// SHA-256 of the step's archive (the blob holding every file of the step).
    pub archive: String,
}

/// One saved cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    /// SHA-256 of the archive blob.
    pub blob: String,
    pub size: u64,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// What [`Store::save_cache`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheSave {
    /// False when another run saved the same key first (keys are immutable).
    pub saved: bool,
    /// Entries evicted to stay under the cap, least recently used first: (key, blob).
    pub evicted: Vec<(String, String)>,
}

fn cache_entry(row: &Row) -> Result<CacheEntry> {
    Ok(CacheEntry {
        key: row.get(0)?,
        blob: row.get(1)?,
        size: row.get::<i64>(2)?.max(0) as u64,
        created_at: row.get(3)?,
        last_used_at: row.get(4)?,
    })
}

const CACHE_COLUMNS: &str = "key, blob, size, created_at, last_used_at";

impl Store {
    /// Records step `step_id`'s artifacts, replacing what an earlier attempt of the same step
    /// recorded (a step re-run after a crash archives again).
    pub fn record_artifacts(
        &self,
        run_id: i64,
        step_id: &str,
        archive: &str,
        files: &[ArtifactFile],
        now: i64,
    ) -> Result<()> {
        self.write(|txn| {
            txn.conn.execute(
                "DELETE FROM artifacts WHERE run_id = ?1 AND step_id = ?2",
                &[&run_id, &step_id],
            )?;
            for file in files {
                txn.conn.execute(
                    "INSERT INTO artifacts (run_id, step_id, path, size, sha256, archive, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &[
                        &run_id,
                        &step_id,
                        &file.path,
                        &file.size,
                        &file.sha256,
                        &archive,
                        &now,
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every artifact file of a run, in step order, then by path.
    pub fn artifacts(&self, run_id: i64) -> Result<Vec<ArtifactRecord>> {
        self.read(|conn| {
            conn.query(
                "SELECT a.step_id, a.path, a.size, a.sha256, a.archive FROM artifacts a
                 LEFT JOIN steps s ON s.run_id = a.run_id AND s.step_id = a.step_id
                 WHERE a.run_id = ?1 ORDER BY s.position, a.step_id, a.path",
                &[&run_id],
            )?
            .iter()
            .map(|row| {
                Ok(ArtifactRecord {
                    step_id: row.get(0)?,
                    file: ArtifactFile {
                        path: row.get(1)?,
                        size: row.get::<i64>(2)?.max(0) as u64,
                        sha256: row.get(3)?,
                    },
                    archive: row.get(4)?,
                })
            })
            .collect()
        })
    }

    /// The archive blob of a step's artifacts, if it recorded any.
    pub fn artifact_archive(&self, run_id: i64, step_id: &str) -> Result<Option<String>> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT archive FROM artifacts WHERE run_id = ?1 AND step_id = ?2 LIMIT 1",
                &[&run_id, &step_id],
            )?
            .map(|row| row.get(0))
            .transpose()
        })
    }

    /// The entry saved under exactly `key` in `scope`.
    pub fn cache_entry(&self, scope: &str, key: &str) -> Result<Option<CacheEntry>> {
        self.read(|conn| {
            conn.query_opt(
                &format!("SELECT {CACHE_COLUMNS} FROM caches WHERE scope = ?1 AND key = ?2"),
                &[&scope, &key],
            )?
            .map(|row| cache_entry(&row))
            .transpose()
        })
    }

    /// The newest entry of `scope` whose key starts with `prefix` (compared as text, so `%`
    /// and `_` in a key mean themselves). Entries saved in the same millisecond are told apart
    /// by key, the last in text order winning.
    pub fn cache_entry_by_prefix(&self, scope: &str, prefix: &str) -> Result<Option<CacheEntry>> {
        self.read(|conn| {
            conn.query_opt(
                &format!(
                    "SELECT {CACHE_COLUMNS} FROM caches
                     WHERE scope = ?1 AND substr(key, 1, length(?2)) = ?2
                     ORDER BY created_at DESC, key DESC LIMIT 1"
                ),
                &[&scope, &prefix],
            )?
            .map(|row| cache_entry(&row))
            .transpose()
        })
    }

    /// Marks an entry used now, for least-recently-used eviction.
    pub fn touch_cache(&self, scope: &str, key: &str, now: i64) -> Result<()> {
        self.write(|txn| {
            // CASE rather than SQLite's two-argument max(), which PostgreSQL spells GREATEST.
            txn.conn.execute(
                "UPDATE caches
                 SET last_used_at = CASE WHEN ?3 > last_used_at THEN ?3 ELSE last_used_at END
                 WHERE scope = ?1 AND key = ?2",
                &[&scope, &key, &now],
            )?;
            Ok(())
        })
    }

    /// Drops an entry whose blob turned out missing or damaged, so the next run saves afresh.
    pub fn forget_cache(&self, scope: &str, key: &str) -> Result<()> {
        self.write(|txn| {
            txn.conn.execute(
                "DELETE FROM caches WHERE scope = ?1 AND key = ?2",
                &[&scope, &key],
            )?;
            Ok(())
        })
    }

    /// Saves `key` unless it exists, then evicts least recently used entries (of every scope:
    /// the cap bounds the disk) until the total is at most `cap` bytes, in one transaction.
    pub fn save_cache(
        &self,
        scope: &str,
        key: &str,
        blob: &str,
        size: u64,
        now: i64,
        cap: u64,
    ) -> Result<CacheSave> {
        self.write(|txn| {
            let saved = txn.conn.execute(
                "INSERT INTO caches (scope, key, blob, size, created_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT DO NOTHING",
                &[&scope, &key, &blob, &size, &now],
            )? == 1;
            let evicted = evict_within(txn, cap)?;
            Ok(CacheSave { saved, evicted })
        })
    }

    /// Evicts least recently used entries until all together hold at most `cap` bytes (for
    /// `cairn gc`, after the cap was lowered); returns them as (key, blob).
    pub fn evict_caches(&self, cap: u64) -> Result<Vec<(String, String)>> {
        self.write(|txn| evict_within(txn, cap))
    }

    /// Whether any artifact or cache row names blob `sha256`.
    pub fn blob_referenced(&self, sha256: &str) -> Result<bool> {
        self.read(|conn| {
            conn.query_opt(
                "SELECT EXISTS (SELECT 1 FROM artifacts WHERE archive = ?1)
                     OR EXISTS (SELECT 1 FROM caches WHERE blob = ?1)",
                &[&sha256],
            )?
            .map_or(Ok(false), |row| row.get(0))
        })
    }

    /// Every blob an artifact or cache row names.
    pub fn referenced_blobs(&self) -> Result<HashSet<String>> {
        self.read(|conn| {
            conn.query(
                "SELECT archive FROM artifacts UNION SELECT blob FROM caches",
                &[],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
        })
    }
}

/// Deletes the least recently used cache entries, of every scope, until the total is at most
/// `cap` bytes.
fn evict_within(txn: &WriteTxn<'_>, cap: u64) -> Result<Vec<(String, String)>> {
    let mut total: i64 = txn
        .conn
        .query_opt(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM caches",
            &[],
        )?
        .map_or(Ok(0), |row| row.get(0))?;
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let mut evicted = Vec::new();
    if total <= cap {
        return Ok(evicted);
    }
    let mut victims = Vec::new();
    // The key breaks ties between entries last used in the same millisecond.
    for row in txn.conn.query(
        "SELECT scope, key, blob, size FROM caches ORDER BY last_used_at, created_at, scope, key",
        &[],
    )? {
        if total <= cap {
            break;
        }
        let (scope, key, blob, size): (String, String, String, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        total -= size;
        victims.push((scope, key, blob));
    }
    for (scope, key, blob) in victims {
        txn.conn.execute(
            "DELETE FROM caches WHERE scope = ?1 AND key = ?2",
            &[&scope, &key],
        )?;
        evicted.push((key, blob));
    }
    Ok(evicted)
}
