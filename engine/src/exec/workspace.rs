//! A run's working directory: `<work>/run-<id>/`, with the commit checked out in `src/` when
//! the run has a repository and commit, and step outputs in `outputs/`.
//!
//! Preparing it is idempotent, because a resumed run prepares it again.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::git::git;

pub struct Workspace {
    /// Where steps run: the checkout, or `root/src` as an empty directory.
    pub cwd: PathBuf,
    pub outputs: PathBuf,
}

impl Workspace {
    pub fn prepare(work_dir: &Path, run_id: i64, context: &Value) -> Result<Workspace, String> {
        let root = work_dir.join(format!("run-{run_id}"));
        let cwd = root.join("src");
        let outputs = root.join("outputs");
        std::fs::create_dir_all(&outputs)
            .map_err(|e| format!("failed to create {}: {e}", outputs.display()))?;
        let repo = context.get("repo").and_then(Value::as_str);
        let commit = context.get("commit").and_then(Value::as_str);
        match (repo, commit) {
            (Some(repo), Some(commit)) => checkout(repo, commit, &cwd)?,
            _ => std::fs::create_dir_all(&cwd)
                .map_err(|e| format!("failed to create {}: {e}", cwd.display()))?,
        }
        Ok(Workspace { cwd, outputs })
    }
}

/// What stays in `run-<id>/` after the run: step output files and accepted test proposals are
/// small and are the run's record; everything else (the checkout, scratch worktrees) is the
/// bulk of the disk a run uses and is only needed while it runs.
const KEPT_AFTER_RUN: &[&str] = &["outputs", "test-proposals"];

/// Removes what a finished run no longer needs from its directory; a missing directory is
/// fine. `cairn gc` removes whole run directories later, by age.
pub fn remove_checkout(work_dir: &Path, run_id: i64) -> Result<(), String> {
    let root = work_dir.join(format!("run-{run_id}"));
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(format!("failed to read {}: {error}", root.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if KEPT_AFTER_RUN.iter().any(|kept| name == *kept) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|error| format!("failed to remove {}: {error}", path.display()))?;
    }
    Ok(())
}

pub(super) fn checkout(repo: &str, commit: &str, dir: &Path) -> Result<(), String> {
    if dir.join(".git").exists()
        && let Ok(head) = git(dir, &["rev-parse", "HEAD"])
        && (head.trim() == commit || head.trim().starts_with(commit))
    {
        return Ok(());
    }
    // The checkout is made beside its place and moved in once complete, so `dir` is never
    // half-made. What an engine killed mid-clone left there is moved aside, not deleted in
    // place: its orphaned `git` may still be writing into it, and deleting a directory that is
    // being filled fails with "directory not empty".
    let parent = dir.parent().unwrap_or(dir);
    let name = dir
        .file_name()
        .map_or_else(|| "src".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique = format!("{}-{nanos}", std::process::id());
    let fresh = parent.join(format!("{name}.new-{unique}"));
    let fresh_text = fresh.to_string_lossy();
    git(
        parent,
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            "--shared",
            repo,
            &fresh_text,
        ],
    )
    .or_else(|_| {
        git(
            parent,
            &["clone", "--quiet", "--no-checkout", repo, &fresh_text],
        )
    })?;
    git(&fresh, &["checkout", "--quiet", "--detach", commit])?;
    if dir.exists() {
        let stale = parent.join(format!("{name}.stale-{unique}"));
        std::fs::rename(dir, &stale).map_err(|e| {
            format!(
                "failed to move the stale checkout {} aside: {e}",
                dir.display()
            )
        })?;
        // Best effort: an orphaned writer may still be filling it.
        let _ = std::fs::remove_dir_all(&stale);
    }
    std::fs::rename(&fresh, dir)
        .map_err(|e| format!("failed to move the checkout into {}: {e}", dir.display()))?;
    Ok(())
}
