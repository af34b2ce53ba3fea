//! A run's working directory: `<work>/run-<id>/`, with the commit checked out in `src/` when
//! the run has a repository and commit, and step outputs in `outputs/`.
//!
//! Preparing it is idempotent, because a resumed run prepares it again.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

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

fn checkout(repo: &str, commit: &str, dir: &Path) -> Result<(), String> {
    if dir.join(".git").exists() {
        if let Ok(head) = git(dir, &["rev-parse", "HEAD"]) {
            if head.trim() == commit || head.trim().starts_with(commit) {
                return Ok(());
            }
        }
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

/// Runs git and returns its stdout, or a message with its stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("failed to run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`git {}` failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
