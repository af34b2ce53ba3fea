//! Scratch worktrees where the test agent tries what a model proposed (a generated test in
//! `generate/`, a fix in `fix/`): detached worktrees of the run's checkout at the tested commit
//! (and, for generation, its parent), so the checkout and its branch are never touched, and
//! [`run_shell`], which runs a command there in the sandbox with a time bound.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::exec::{git, sandbox};
use crate::pipeline::{SandboxRequirement, StepSandbox};

/// One compile or test run; a proposal that hangs is rejected, not waited for.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Scratch worktrees at the new commit and its parent, removed on [`Scratch::remove`].
pub struct Scratch {
    checkout: PathBuf,
    /// Holds the worktrees and their build directory; the only place proposed code may write.
    pub root: PathBuf,
    pub new: PathBuf,
    pub commit: String,
    pub parent: Option<(PathBuf, String)>,
    /// Whether pytest can be imported (the generation gate's Python runner).
    pub pytest: bool,
    /// Whether each Rust package builds its tests at the commit without any proposal.
    pub baselines: tokio::sync::Mutex<std::collections::HashMap<PathBuf, Result<(), String>>>,
}

impl Scratch {
    pub async fn create(
        checkout: &Path,
        root: &Path,
        commit: &str,
        parent: Option<&str>,
    ) -> Result<Scratch, String> {
        if root.exists() {
            // What an interrupted attempt left behind.
            let _ = std::fs::remove_dir_all(root);
            let _ = git(checkout, &["worktree", "prune"]);
        }
        std::fs::create_dir_all(root)
            .map_err(|e| format!("failed to create {}: {e}", root.display()))?;
        let add = |dir: &Path, at: &str| -> Result<(), String> {
            git(
                checkout,
                &[
                    "worktree",
                    "add",
                    "--detach",
                    "--force",
                    "--quiet",
                    &dir.to_string_lossy(),
                    at,
                ],
            )
            .map(|_| ())
        };
        let new = root.join("new");
        add(&new, commit)?;
        let parent = match parent {
            Some(parent) => {
                let dir = root.join("parent");
                add(&dir, parent)?;
                Some((dir, parent.to_string()))
            }
            None => None,
        };
        let pytest = run_shell(
            "python3 -c 'import pytest'",
            root,
            &[root.to_path_buf()],
            &[],
        )
        .await
        .is_ok_and(|(ok, _)| ok);
        Ok(Scratch {
            checkout: checkout.to_path_buf(),
            root: root.to_path_buf(),
            new,
            commit: commit.to_string(),
            parent,
            pytest,
            baselines: Default::default(),
        })
    }

    /// Back to the pristine commit, leaving build output (kept outside the tree) alone.
    pub fn reset(dir: &Path) -> Result<(), String> {
        git(dir, &["reset", "--hard", "--quiet"])?;
        git(dir, &["clean", "-fdxq"])?;
        Ok(())
    }

    pub fn remove(self) {
        for dir in std::iter::once(&self.new).chain(self.parent.as_ref().map(|(d, _)| d)) {
            if let Err(error) = git(
                &self.checkout,
                &["worktree", "remove", "--force", &dir.to_string_lossy()],
            ) {
                tracing::warn!(%error, "failed to remove a scratch worktree");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// What every command in the scratch trees runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            // One build directory for both trees, outside them so a reset keeps it.
            (
                "CARGO_TARGET_DIR".into(),
                self.root.join("target").to_string_lossy().into_owned(),
            ),
            ("CARGO_TERM_COLOR".into(), "never".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ]
    }
}

/// `sh -c command` with its output (stdout and stderr together); `Err` only if it could not
/// be run at all. A run past [`COMMAND_TIMEOUT`] counts as failed. Proposed code is the
/// model's, so it runs in the sandbox with no declared exceptions: it may write only below
/// `writable` (the scratch trees and their build directory, a runner's report folder).
pub async fn run_shell(
    command: &str,
    dir: &Path,
    writable: &[PathBuf],
    env: &[(String, String)],
) -> Result<(bool, String), String> {
    let script = format!("{command} 2>&1");
    let plan = sandbox::Plan {
        script: &script,
        cwd: dir,
        writable: writable.to_vec(),
        env: env.to_vec(),
        step: &StepSandbox::default(),
        requirement: SandboxRequirement::Default,
    };
    let sandbox::Sandboxed {
        command: mut process,
        guard,
    } = sandbox::current()
        .command(&plan)
        .map_err(|e| e.to_string())?;
    process
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let child = process
        .spawn()
        .map_err(|e| format!("failed to start `{command}`: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            if let Some(why) = guard.explain(&output.status) {
                text.push_str(&format!("\n{why}"));
            }
            Ok((output.status.success(), text))
        }
        Ok(Err(error)) => Err(format!("failed to wait for `{command}`: {error}")),
        Err(_) => Ok((
            false,
            format!("`{command}` timed out after {COMMAND_TIMEOUT:?}"),
        )),
    }
}

/// The end of a run's output, where the failure is.
pub fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    bounded(&lines[lines.len().saturating_sub(15)..].join("\n"))
}

/// At most 1,500 bytes of `text` (cut at a character boundary, marked with `…`).
pub fn bounded(text: &str) -> String {
    bounded_to(text, 1500)
}

/// At most `max` bytes of `text`, cut at a character boundary and marked with `…`.
pub fn bounded_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_at_a_character_boundary() {
        assert!(bounded(&"é".repeat(2000)).chars().count() <= 1501);
        assert_eq!(bounded_to("abcdef", 3), "abc…");
        assert_eq!(tail("a\nb"), "a\nb");
    }
}
