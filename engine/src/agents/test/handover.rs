//! Handing what the gate accepted (generated tests, a fix) to a human: a patch file under the
//! run directory's `test-proposals/` (kept after the run) and/or a branch `cairn/<kind>/<sha12>`
//! in the repository under test. Never a commit on the branch that was tested: the branch is
//! made from a scratch worktree's detached commit.

use std::path::{Path, PathBuf};

use super::scratch::Scratch;
use crate::exec::git;

/// `with: proposals:` — where accepted tests and fixes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub patch: bool,
    pub branch: bool,
}

impl Delivery {
    /// `with: proposals:`; a patch only when absent.
    pub fn from_with(with: &serde_json::Value) -> Result<Delivery, String> {
        match with.get("proposals") {
            None | Some(serde_json::Value::Null) => Ok(Delivery {
                patch: true,
                branch: false,
            }),
            Some(serde_json::Value::String(text)) => Delivery::parse(text),
            Some(other) => Err(format!(
                "with.proposals: expected patch, branch or both, got {other}"
            )),
        }
    }

    pub fn parse(text: &str) -> Result<Delivery, String> {
        match text {
            "patch" => Ok(Delivery {
                patch: true,
                branch: false,
            }),
            "branch" => Ok(Delivery {
                patch: false,
                branch: true,
            }),
            "both" | "patch,branch" | "branch,patch" => Ok(Delivery {
                patch: true,
                branch: true,
            }),
            other => Err(format!(
                "with.proposals: expected patch, branch or both, got `{other}`"
            )),
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Delivered {
    pub patch: Option<PathBuf>,
    pub branch: Option<String>,
    /// Where the branch went: the repository under test, or only the run's checkout.
    pub branch_in: Option<String>,
    pub problems: Vec<String>,
}

/// What is handed over, and under which names.
pub struct Handover<'a> {
    /// The branch is `cairn/<kind>/<sha12>` (`tests`, `fix`).
    pub kind: &'a str,
    /// The patch is `test-proposals/<patch_prefix><sha12>.patch`.
    pub patch_prefix: &'a str,
    /// The branch's commit message.
    pub message: String,
}

/// Hands over what the caller wrote into the scratch tree at the new commit: its diff as a
/// patch and/or a commit on the branch. `repo` is the repository under test (pushed to),
/// `run_dir` the run directory.
pub fn hand_over(
    scratch: &Scratch,
    what: &Handover<'_>,
    delivery: Delivery,
    repo: &str,
    run_dir: &Path,
) -> Result<Delivered, String> {
    let dir = &scratch.new;
    git(dir, &["add", "--all"])?;
    let sha12 = &scratch.commit[..scratch.commit.len().min(12)];
    let mut delivered = Delivered::default();
    if delivery.patch {
        let patch = git(
            dir,
            &[
                "diff",
                "--cached",
                "--binary",
                "--no-color",
                "--no-ext-diff",
            ],
        )?;
        let folder = run_dir.join("test-proposals");
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("failed to create {}: {e}", folder.display()))?;
        let path = folder.join(format!("{}{sha12}.patch", what.patch_prefix));
        std::fs::write(&path, patch)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        delivered.patch = Some(path);
    }
    if delivery.branch {
        git(
            dir,
            &[
                "-c",
                "user.name=Cairn",
                "-c",
                "user.email=cairn@localhost",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                &what.message,
            ],
        )?;
        let branch = format!("cairn/{}/{sha12}", what.kind);
        let refspec = format!("HEAD:refs/heads/{branch}");
        match push(dir, repo, &refspec) {
            Ok(_) => delivered.branch_in = Some(repo.to_string()),
            Err(error) => {
                // Still kept in the run's checkout, so nothing accepted is lost.
                git(dir, &["branch", "--force", &branch, "HEAD"])?;
                delivered.problems.push(format!(
                    "could not push {branch} to {repo}: {error}; it is in the run's checkout"
                ));
                delivered.branch_in = Some("the run's checkout".into());
            }
        }
        delivered.branch = Some(branch);
    }
    Ok(delivered)
}

/// `git push --force repo refspec`, never waiting on a credential prompt (nobody is there)
/// nor longer than [`PUSH_TIMEOUT`] on a remote that does not answer.
fn push(dir: &Path, repo: &str, refspec: &str) -> Result<(), String> {
    crate::exec::git_within(
        dir,
        &["push", "--quiet", "--force", repo, refspec],
        PUSH_TIMEOUT,
    )
    .map(|_| ())
}

/// A push of one small branch; a remote that takes longer is not answering.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
