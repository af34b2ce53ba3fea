//! What an attempt does with artifacts and caches around its step: before the step, restore
//! the artifacts of the steps it depends on (directly or not) and its cache; after a success,
//! store its artifacts and, when its cache key missed, save its cache.
//!
//! Artifacts are part of the step's contract: a declared path that matches nothing, a blob
//! that is missing or damaged, an archive entry that would leave the workspace, fail the step
//! with a message naming it (as `upload-artifact`'s `if-no-files-found: error` does). Caches
//! are an optimisation: anything wrong with one is a miss or a skipped save, said in the step's
//! log, except a key that cannot be computed (a `{{ hash }}` of a file that is not there),
//! which fails the step before it runs. Everything here is blocking file work: callers run it
//! on a blocking thread.

use std::path::PathBuf;

use crate::pipeline::{CacheSpec, StepFiles};
use crate::store::{Store, now_ms};

use super::archive::{Collected, Entry, collect, extract, write_tar};
use super::blobs::Blobs;
use super::error::Error;
use super::key::render;
use crate::exec::LogSink;

/// Everything an attempt needs to restore and store its step's files.
#[derive(Clone)]
pub struct AttemptFiles {
    pub store: Store,
    pub blobs: Blobs,
    pub run_id: i64,
    pub step_id: String,
    pub files: StepFiles,
    /// Steps this one depends on, directly or not, that declare artifacts, dependencies first
    /// (so a later step's version of a path wins).
    pub sources: Vec<String>,
    /// Whose caches these are: the run's repository, or `workflow:<name>` without one.
    pub scope: String,
    /// Most bytes all cache entries may hold together.
    pub cache_limit: u64,
    pub workspace: PathBuf,
}

/// What [`AttemptFiles::before`] found, for [`AttemptFiles::after`].
#[derive(Debug, Default)]
pub struct Restored {
    /// The rendered key, when the exact key missed and the cache should be saved.
    save_as: Option<String>,
}

impl AttemptFiles {
    /// Whether this attempt has anything to do with files at all.
    pub fn is_needed(&self) -> bool {
        !self.sources.is_empty() || !self.files.artifacts.is_empty() || self.files.cache.is_some()
    }

    /// Restores artifacts, then the cache. `Err` fails the step with that message.
    pub fn before(&self, logs: &LogSink) -> Result<Restored, String> {
        for source in &self.sources {
            self.restore_artifacts(source, logs).map_err(|error| {
                format!("failed to restore the artifacts of step `{source}`: {error}")
            })?;
        }
        let Some(cache) = &self.files.cache else {
            return Ok(Restored::default());
        };
        let key = render(&cache.key, &self.workspace).map_err(|error| {
            format!(
                "failed to compute the cache key `{}`: {error}",
                cache.key.source
            )
        })?;
        Ok(Restored {
            save_as: self.restore_cache(cache, &key, logs).then_some(key),
        })
    }

    /// Stores artifacts and saves the cache after the step succeeded. `Err` fails the step.
    pub fn after(&self, restored: Restored, logs: &LogSink) -> Result<(), String> {
        if !self.files.artifacts.is_empty() {
            self.store_artifacts(logs).map_err(|error| {
                format!(
                    "failed to store the artifacts of step `{}`: {error}",
                    self.step_id
                )
            })?;
        }
        if let (Some(cache), Some(key)) = (&self.files.cache, restored.save_as)
            && let Err(error) = self.save_cache(cache, &key, logs)
        {
            logs.line("engine", format!("cache: not saved: {error}"));
        }
        Ok(())
    }

    fn restore_artifacts(&self, source: &str, logs: &LogSink) -> Result<(), Error> {
        // A source that was skipped, or failed under `on_failure: continue`, stored nothing.
        let Some(archive) = self.store.artifact_archive(self.run_id, source)? else {
            return Ok(());
        };
        let blob = self.blobs.open_verified(&archive)?;
        let extracted = extract(std::io::BufReader::new(blob), &self.workspace)?;
        logs.line(
            "engine",
            format!(
                "artifacts: restored {} from step `{source}` (sha256:{})",
                files_and_bytes(extracted.files, extracted.bytes),
                short(&archive)
            ),
        );
        Ok(())
    }

    fn store_artifacts(&self, logs: &LogSink) -> Result<(), Error> {
        let collected = collect(&self.workspace, &self.files.artifacts, true)?;
        let (archive, size, files) = self.write_blob(&collected)?;
        self.store
            .record_artifacts(self.run_id, &self.step_id, &archive, &files, now_ms())?;
        logs.line(
            "engine",
            format!(
                "artifacts: stored {} as sha256:{} ({size} bytes archived)",
                files_and_bytes(files.len(), files.iter().map(|file| file.size).sum()),
                short(&archive)
            ),
        );
        Ok(())
    }

    /// Restores the exact key, else the newest entry under the first restore key that has one.
    /// Returns whether the exact key missed (so the cache is to be saved after the step).
    fn restore_cache(&self, cache: &CacheSpec, key: &str, logs: &LogSink) -> bool {
        let exact = self.store.cache_entry(&self.scope, key);
        if let Ok(Some(entry)) = exact {
            match self.extract_cache(&entry.key, &entry.blob) {
                Ok(description) => {
                    logs.line("engine", format!("cache: restored `{key}` ({description})"));
                    return false;
                }
                Err(error) => logs.line(
                    "engine",
                    format!("cache: entry `{key}` is unusable ({error}); treated as a miss"),
                ),
            }
        }
        for prefix in &cache.restore_keys {
            let prefix = match render(prefix, &self.workspace) {
                Ok(prefix) => prefix,
                Err(error) => {
                    logs.line(
                        "engine",
                        format!("cache: restore key `{}` skipped: {error}", prefix.source),
                    );
                    continue;
                }
            };
            let Ok(Some(entry)) = self.store.cache_entry_by_prefix(&self.scope, &prefix) else {
                continue;
            };
            match self.extract_cache(&entry.key, &entry.blob) {
                Ok(description) => {
                    logs.line(
                        "engine",
                        format!(
                            "cache: `{key}` missed; restored `{}` by restore key `{prefix}` ({description})",
                            entry.key
                        ),
                    );
                    return true;
                }
                Err(error) => logs.line(
                    "engine",
                    format!(
                        "cache: entry `{}` is unusable ({error}); treated as a miss",
                        entry.key
                    ),
                ),
            }
        }
        logs.line("engine", format!("cache: `{key}` missed; nothing restored"));
        true
    }

    /// Extracts one entry and marks it used; a missing or damaged blob also drops the entry.
    fn extract_cache(&self, key: &str, blob: &str) -> Result<String, Error> {
        let opened = self.blobs.open_verified(blob);
        if let Err(Error::BlobMissing { .. } | Error::BlobDamaged { .. }) = &opened {
            let _ = self.store.forget_cache(&self.scope, key);
        }
        let extracted = extract(std::io::BufReader::new(opened?), &self.workspace)?;
        self.store.touch_cache(&self.scope, key, now_ms())?;
        Ok(files_and_bytes(extracted.files, extracted.bytes))
    }

    fn save_cache(&self, cache: &CacheSpec, key: &str, logs: &LogSink) -> Result<(), Error> {
        let collected = collect(&self.workspace, &cache.paths, false)?;
        if !collected.values().any(|entry| *entry == Entry::File) {
            logs.line(
                "engine",
                format!(
                    "cache: not saved: no file matches {}",
                    cache.paths.join(", ")
                ),
            );
            return Ok(());
        }
        // Files alone already past the cap: do not write an archive only to drop it.
        let estimate: u64 = collected
            .iter()
            .filter(|(_, entry)| **entry == Entry::File)
            .filter_map(|(path, _)| std::fs::symlink_metadata(self.workspace.join(path)).ok())
            .map(|metadata| metadata.len())
            .sum();
        if estimate > self.cache_limit {
            logs.line("engine", self.too_large(key, estimate));
            return Ok(());
        }
        let (blob, size, _) = self.write_blob(&collected)?;
        if size > self.cache_limit {
            self.drop_unreferenced(&blob);
            logs.line("engine", self.too_large(key, size));
            return Ok(());
        }
        let saved =
            self.store
                .save_cache(&self.scope, key, &blob, size, now_ms(), self.cache_limit)?;
        if saved.saved {
            logs.line("engine", format!("cache: saved `{key}` ({size} bytes)"));
        } else {
            self.drop_unreferenced(&blob);
            logs.line(
                "engine",
                format!(
                    "cache: `{key}` was saved by another run meanwhile; keys are never overwritten"
                ),
            );
        }
        for (evicted, evicted_blob) in saved.evicted {
            self.drop_unreferenced(&evicted_blob);
            logs.line(
                "engine",
                format!(
                    "cache: evicted `{evicted}` (least recently used) to stay within {} bytes",
                    self.cache_limit
                ),
            );
        }
        Ok(())
    }

    fn too_large(&self, key: &str, size: u64) -> String {
        format!(
            "cache: not saved: `{key}` would hold {size} bytes, more than the cache limit of {} bytes (`retention.cache_size` in cairn.yaml)",
            self.cache_limit
        )
    }

    /// Archives `collected` into a new blob: `(sha256, size, regular files)`.
    fn write_blob(
        &self,
        collected: &Collected,
    ) -> Result<(String, u64, Vec<crate::store::ArtifactFile>), Error> {
        let mut writer = self.blobs.writer()?;
        match write_tar(
            &self.workspace,
            collected,
            std::io::BufWriter::new(&mut writer),
        ) {
            Ok(files) => {
                let (sha256, size) = writer.finish()?;
                Ok((sha256, size, files))
            }
            Err(error) => {
                writer.abandon();
                Err(error)
            }
        }
    }

    fn drop_unreferenced(&self, blob: &str) {
        if let Ok(false) = self.store.blob_referenced(blob) {
            let _ = self.blobs.remove(blob);
        }
    }
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn files_and_bytes(files: usize, bytes: u64) -> String {
    let noun = if files == 1 { "file" } else { "files" };
    format!("{files} {noun}, {bytes} bytes")
}
