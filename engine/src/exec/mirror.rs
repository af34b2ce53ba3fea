//! A worker's checkout of its task's commit. A `runs_on:` step runs where an engine's own
//! `run:` step would: in a checkout of the run's commit (the engine passes the repository and
//! commit as `CAIRN_REPO` and `CAIRN_COMMIT`). The worker keeps one bare mirror per repository
//! in its directory (`repos/<hash>.git`), fetched only when a task's commit is not in it yet,
//! and checks each task out from the mirror (`git clone --shared`, no copy of the objects):
//! the network is crossed once per new commit, not once per task.
//!
//! The repository's address must be one the worker's host reaches (a URL, or a path on a
//! filesystem both hosts see); when it is not, the task fails with git's own message.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::git::git;

/// Checks `commit` of `repo` out into `dest`, through the worker's mirror under `worker_dir`.
pub fn checkout(worker_dir: &Path, repo: &str, commit: &str, dest: &Path) -> Result<(), String> {
    // Both reach git's command line: neither may pass for an option.
    if commit.len() < 4 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("CAIRN_COMMIT {commit:?} is not a commit id"));
    }
    if repo.is_empty() || repo.starts_with('-') {
        return Err(format!("CAIRN_REPO {repo:?} is not a repository address"));
    }
    let mirror = mirror_of(worker_dir, repo)?;
    let object = format!("{commit}^{{commit}}");
    if git(&mirror, &["cat-file", "-e", &object]).is_err() {
        git(&mirror, &["fetch", "--quiet", "--prune", "origin"])
            .map_err(|error| format!("failed to fetch {repo}: {error}"))?;
        git(&mirror, &["cat-file", "-e", &object])
            .map_err(|_| format!("commit {commit} is not in {repo}"))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    }
    let mirror_text = mirror.to_string_lossy();
    super::workspace::checkout(&mirror_text, commit, dest)
}

/// The mirror of `repo`, made on first use (beside its place, then moved in, so that a worker
/// killed mid-clone leaves no half-made mirror behind).
fn mirror_of(worker_dir: &Path, repo: &str) -> Result<PathBuf, String> {
    let repos = worker_dir.join("repos");
    let name = hex::encode(&Sha256::digest(repo.as_bytes())[..12]);
    let mirror = repos.join(format!("{name}.git"));
    if mirror.join("HEAD").exists() {
        return Ok(mirror);
    }
    std::fs::create_dir_all(&repos)
        .map_err(|e| format!("failed to create {}: {e}", repos.display()))?;
    let fresh = repos.join(format!("{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    let fresh_text = fresh.to_string_lossy();
    git(
        &repos,
        &["clone", "--quiet", "--mirror", "--", repo, &fresh_text],
    )
    .map_err(|error| format!("failed to clone {repo}: {error}"))?;
    std::fs::rename(&fresh, &mirror)
        .map_err(|e| format!("failed to move the mirror into {}: {e}", mirror.display()))?;
    Ok(mirror)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Path, text: &str) -> String {
        std::fs::write(repo.join("VERSION"), text).expect("write");
        git(repo, &["add", "VERSION"]).expect("add");
        git(
            repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                text,
            ],
        )
        .expect("commit");
        git(repo, &["rev-parse", "HEAD"])
            .expect("rev-parse")
            .trim()
            .to_string()
    }

    #[test]
    fn checks_out_through_one_mirror_fetched_for_new_commits_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).expect("repo dir");
        git(&repo, &["init", "-q", "-b", "main"]).expect("init");
        let first = commit(&repo, "1");
        let worker = dir.path().join("worker");
        let url = repo.display().to_string();
        checkout(&worker, &url, &first, &dir.path().join("task-1/src")).expect("first");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("task-1/src/VERSION")).expect("read"),
            "1"
        );
        let second = commit(&repo, "2");
        checkout(&worker, &url, &second, &dir.path().join("task-2/src")).expect("fetched");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("task-2/src/VERSION")).expect("read"),
            "2"
        );
        let mirrors: Vec<_> = std::fs::read_dir(worker.join("repos"))
            .expect("repos")
            .flatten()
            .collect();
        assert_eq!(mirrors.len(), 1, "one mirror per repository");
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let error = checkout(&worker, &url, missing, &dir.path().join("task-3/src"))
            .expect_err("not in the repository");
        assert!(error.contains("is not in"), "{error}");
        for (repo, commit) in [("--upload-pack=touch", first.as_str()), (&url, "--all")] {
            let error = checkout(&worker, repo, commit, &dir.path().join("task-4/src"))
                .expect_err("refused");
            assert!(error.contains("CAIRN_"), "{error}");
        }
    }
}
