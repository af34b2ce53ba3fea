//! Polling watched repositories: once per repository per tick, fetch only when a head moved,
//! and create one run per new commit in the same transaction that advances the branch's
//! cursor — so a restart neither misses nor repeats a commit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use croner::Cron;
use serde_json::json;

use super::remote::{Mirror, branch_heads, default_branch};
use crate::exec::Engine;
use crate::pipeline::{self, BranchFilter, CommitSelection, LoadOptions, Trigger};
use crate::store::now_ms;

/// One workflow with a `trigger:` block.
pub struct Watch {
    pub name: String,
    pub file_name: String,
    pub source_path: Option<String>,
    pub definition: String,
    pub trigger: Trigger,
    pub schedule: Option<Cron>,
}

impl Watch {
    /// Loads a workflow file; `Ok(None)` when it has no trigger (nothing to watch).
    pub fn load(path: &Path, known_agents: &[&str]) -> Result<Option<Watch>, pipeline::Error> {
        let workflow = pipeline::load_file(
            path,
            &LoadOptions {
                known_agents,
                check_with: None,
            },
        )?;
        let definition = pipeline::limits::read_limited(path).unwrap_or_default();
        let Some(trigger) = workflow.trigger else {
            return Ok(None);
        };
        let schedule = trigger
            .schedule
            .as_deref()
            .and_then(|text| pipeline::parse_schedule(text).ok());
        Ok(Some(Watch {
            name: workflow.name,
            file_name: path.display().to_string(),
            source_path: std::fs::canonicalize(path)
                .ok()
                .map(|p| p.display().to_string()),
            definition,
            trigger,
            schedule,
        }))
    }
}

/// Delay before polling a failing repository again: the next tick after the first failure,
/// then doubling up to 15 minutes.
pub fn backoff_ms(failures: u32) -> i64 {
    if failures <= 1 {
        return 0;
    }
    (15_000i64 << (failures - 2).min(6)).min(15 * 60_000)
}

pub struct Poller<'e> {
    engine: &'e Engine,
    mirrors: PathBuf,
}

/// What one tick did, for the log and the tests.
#[derive(Debug, Default)]
pub struct TickReport {
    pub runs: Vec<i64>,
    pub polled: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub skipped_backoff: Vec<String>,
}

impl<'e> Poller<'e> {
    pub fn new(engine: &'e Engine, mirrors: PathBuf) -> Self {
        Self { engine, mirrors }
    }

    /// Polls every repository the given watches name, once each. `respect_backoff: false`
    /// polls failing repositories too (an explicit `serve --once`).
    pub async fn tick(&self, watches: &[&Watch], respect_backoff: bool) -> TickReport {
        let mut report = TickReport::default();
        let urls: BTreeSet<&str> = watches
            .iter()
            .flat_map(|w| w.trigger.repositories.iter().map(|r| r.url.as_str()))
            .collect();
        let statuses = self.engine.store().repositories().unwrap_or_default();
        for url in urls {
            let status = statuses.iter().find(|s| s.url == url);
            if let Some(next) = status
                .and_then(|s| s.next_attempt_at)
                .filter(|_| respect_backoff)
                && next > now_ms()
            {
                report.skipped_backoff.push(url.to_string());
                continue;
            }
            match self.poll(url, watches, &mut report.runs).await {
                Ok(note) => {
                    if let Some(note) = &note {
                        tracing::info!(repository = url, "{note}");
                    }
                    let _ = self
                        .engine
                        .store()
                        .write(|txn| txn.record_poll(url, None, note.as_deref(), None));
                    report.polled.push(url.to_string());
                }
                Err(error) => {
                    let failures = status.map_or(0, |s| s.failures) + 1;
                    let next = now_ms() + backoff_ms(failures);
                    tracing::warn!(repository = url, failures, "{error}");
                    let _ = self
                        .engine
                        .store()
                        .write(|txn| txn.record_poll(url, Some(&error), None, Some(next)));
                    report.failed.push((url.to_string(), error));
                }
            }
        }
        report
    }

    async fn poll(
        &self,
        url: &str,
        watches: &[&Watch],
        runs: &mut Vec<i64>,
    ) -> Result<Option<String>, String> {
        let heads = branch_heads(url).await?;
        let mut notes = Vec::new();
        // (watch, branch, cursor, head) for every watched branch.
        let mut plan = Vec::new();
        for watch in watches {
            for repository in watch.trigger.repositories.iter().filter(|r| r.url == url) {
                // Checked when the workflow was loaded; an unreadable filter here watches
                // nothing rather than everything.
                let filter = BranchFilter::new(&repository.branches).map_err(|e| e.to_string())?;
                let branches: Vec<String> = if repository.branches.is_empty() {
                    default_branch(url).await.into_iter().collect()
                } else {
                    heads
                        .keys()
                        .filter(|b| filter.matches(b))
                        .cloned()
                        .collect()
                };
                let watched = |branch: &str| {
                    if repository.branches.is_empty() {
                        branches.iter().any(|b| b == branch)
                    } else {
                        filter.matches(branch)
                    }
                };
                let store = self.engine.store();
                for branch in store
                    .cursor_branches(&watch.name, url)
                    .map_err(|e| e.to_string())?
                {
                    if !heads.contains_key(&branch) && watched(&branch) {
                        store
                            .write(|txn| txn.delete_cursor(&watch.name, url, &branch))
                            .map_err(|e| e.to_string())?;
                        notes.push(format!(
                            "branch `{branch}` was deleted; its cursor is dropped"
                        ));
                    }
                }
                for branch in branches {
                    let Some(head) = heads.get(&branch) else {
                        continue;
                    };
                    let cursor = store
                        .cursor(&watch.name, url, &branch)
                        .map_err(|e| e.to_string())?;
                    plan.push((*watch, branch, cursor, head.clone()));
                }
            }
        }
        let moved = plan
            .iter()
            .any(|(_, _, cursor, head)| cursor.as_deref() != Some(head.as_str()));
        if !moved {
            return Ok(join(notes));
        }
        let mirror = Mirror::for_url(&self.mirrors, url);
        mirror.sync(url).await?;
        for (watch, branch, cursor, head) in plan {
            let (mut commits, rewritten) = mirror.new_commits(cursor.as_deref(), &head).await?;
            if rewritten {
                notes.push(format!(
                    "branch `{branch}` was force-pushed ({} -> {}); running its {} new commit(s)",
                    short(cursor.as_deref().unwrap_or("?")),
                    short(&head),
                    commits.len()
                ));
            }
            if watch.trigger.commits == CommitSelection::Latest && commits.len() > 1 {
                commits.drain(..commits.len() - 1);
            }
            let mut new_runs = Vec::new();
            for commit in &commits {
                let context = json!({
                    "trigger": "poll",
                    "repo": mirror.path.display().to_string(),
                    "repo_url": url,
                    "branch": branch,
                    "commit": commit,
                });
                let (new, _) = self
                    .engine
                    .new_run(
                        &watch.definition,
                        &watch.file_name,
                        watch.source_path.clone(),
                        context,
                    )
                    .map_err(|e| e.to_string())?;
                new_runs.push(new);
            }
            let created = self
                .engine
                .store()
                .write(|txn| {
                    // Another poller of this home got here first: its runs are the runs.
                    if !txn.advance_cursor(&watch.name, url, &branch, cursor.as_deref(), &head)? {
                        return Ok(Vec::new());
                    }
                    let mut ids = Vec::new();
                    for new in &new_runs {
                        ids.push(txn.create_run(new)?);
                    }
                    Ok(ids)
                })
                .map_err(|e| e.to_string())?;
            for (run_id, commit) in created.iter().zip(&commits) {
                tracing::info!(
                    repository = url,
                    branch,
                    commit = short(commit),
                    run_id,
                    workflow = watch.name,
                    "new commit: run started"
                );
            }
            runs.extend(created);
        }
        Ok(join(notes))
    }
}

fn join(notes: Vec<String>) -> Option<String> {
    if notes.is_empty() {
        None
    } else {
        Some(notes.join("; "))
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
