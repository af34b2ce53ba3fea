//! Talking to watched repositories with the `git` command: a cheap look at branch heads
//! (`git ls-remote`), a local mirror fetched only when something moved, and the list of new
//! commits since a cursor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;

/// No git operation against a remote may hang the poller forever.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs git (in `dir` when given) and returns stdout, or an error naming the command.
pub async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    // Never stop to ask for credentials: a poller has nobody to answer.
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("`git {}` timed out after {GIT_TIMEOUT:?}", args.join(" ")))?
        .map_err(|e| format!("failed to run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // git explains itself over several lines; the `fatal:` one says what went wrong.
        let reason = stderr
            .lines()
            .find(|line| line.starts_with("fatal:") || line.starts_with("error:"))
            .or_else(|| stderr.lines().find(|line| !line.trim().is_empty()))
            .unwrap_or("no message");
        Err(format!(
            "`git {}` failed: {}",
            args.join(" "),
            reason.trim()
        ))
    }
}

/// Branch name → head commit, as the remote reports them.
pub async fn branch_heads(url: &str) -> Result<BTreeMap<String, String>, String> {
    let listing = git(None, &["ls-remote", "--heads", "--", url]).await?;
    Ok(listing
        .lines()
        .filter_map(|line| {
            let (sha, reference) = line.split_once('\t')?;
            Some((
                reference.strip_prefix("refs/heads/")?.to_string(),
                sha.to_string(),
            ))
        })
        .collect())
}

/// The remote's default branch (what `HEAD` points at), when it says.
pub async fn default_branch(url: &str) -> Option<String> {
    let listing = git(None, &["ls-remote", "--symref", "--", url, "HEAD"])
        .await
        .ok()?;
    listing.lines().find_map(|line| {
        line.strip_prefix("ref: refs/heads/")
            .and_then(|rest| rest.split('\t').next())
            .map(str::to_string)
    })
}

/// A bare mirror of a watched repository under `$CAIRN_HOME/mirrors`, fetched on demand.
pub struct Mirror {
    pub path: PathBuf,
}

impl Mirror {
    pub fn for_url(mirrors: &Path, url: &str) -> Mirror {
        let digest = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
        Mirror {
            path: mirrors.join(format!("{digest}.git")),
        }
    }

    /// Clones the mirror the first time, fetches (pruning deleted branches) afterwards. Holds
    /// an exclusive lock on `<mirror>.lock` meanwhile, so pollers in several processes of one
    /// home never fetch into the same mirror at once (git's ref locks would fail one of them).
    pub async fn sync(&self, url: &str) -> Result<(), String> {
        let _lock = self.lock().await?;
        self.sync_locked(url).await
    }

    async fn lock(&self) -> Result<std::fs::File, String> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        let path = self.path.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("failed to open {}: {e}", path.display()))?;
        // Waiting for another process's fetch blocks, so it waits off the runtime; the lock is
        // released when the returned file is dropped (or the process dies).
        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| format!("failed to wait for {}: {e}", path.display()))?
            .map_err(|e| format!("failed to lock {}: {e}", path.display()))
    }

    async fn sync_locked(&self, url: &str) -> Result<(), String> {
        if self.path.join("HEAD").exists() {
            git(
                Some(&self.path),
                &[
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--",
                    url,
                    "+refs/heads/*:refs/heads/*",
                ],
            )
            .await?;
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        let target = self.path.to_string_lossy().into_owned();
        git(None, &["clone", "--quiet", "--mirror", "--", url, &target]).await?;
        Ok(())
    }

    /// Commits to start runs for when a branch moved from `cursor` to `head`, oldest first,
    /// following first parents (a merged pull request is one commit, its merge).
    /// Returns the commits and whether history was rewritten (a force-push).
    pub async fn new_commits(
        &self,
        cursor: Option<&str>,
        head: &str,
    ) -> Result<(Vec<String>, bool), String> {
        let Some(cursor) = cursor else {
            // A branch seen for the first time: its head is the one commit to run.
            return Ok((vec![head.to_string()], false));
        };
        if cursor == head {
            return Ok((Vec::new(), false));
        }
        let known = git(
            Some(&self.path),
            &["cat-file", "-e", &format!("{cursor}^{{commit}}")],
        )
        .await
        .is_ok();
        if !known {
            // The old head is gone from the mirror (rewritten and garbage-collected): all we
            // can say is that the branch now points at `head`.
            return Ok((vec![head.to_string()], true));
        }
        let fast_forward = git(
            Some(&self.path),
            &["merge-base", "--is-ancestor", cursor, head],
        )
        .await
        .is_ok();
        let listing = git(
            Some(&self.path),
            &[
                "rev-list",
                "--reverse",
                "--first-parent",
                head,
                &format!("^{cursor}"),
            ],
        )
        .await?;
        Ok((listing.lines().map(str::to_string).collect(), !fast_forward))
    }
}
