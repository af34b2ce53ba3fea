//! Handing accepted tests to a human: a patch file under the run directory and/or a branch
//! `cairn/tests/<sha12>` in the repository under test. Never a commit on the branch that was
//! tested: the branch is made from a scratch worktree's detached commit.

use std::path::{Path, PathBuf};

use super::gate::Scratch;
use super::propose::{Proposal, Target, placed_text};
use crate::exec::git;

/// `with: proposals:` — where accepted tests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub patch: bool,
    pub branch: bool,
}

impl Delivery {
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

/// Writes every accepted test into the scratch tree at the new commit, then the patch and/or
/// the branch. `repo` is the repository under test (pushed to), `run_dir` the run directory.
pub fn deliver(
    scratch: &Scratch,
    accepted: &[(Target, Proposal)],
    delivery: Delivery,
    repo: &str,
    run_dir: &Path,
) -> Result<Delivered, String> {
    let dir = &scratch.new;
    Scratch::reset(dir)?;
    for (target, proposal) in accepted {
        let path = dir.join(&proposal.test_path);
        let current = std::fs::read_to_string(&path).ok();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
        }
        std::fs::write(
            &path,
            placed_text(proposal, target.language, current.as_deref()),
        )
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
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
        let path = folder.join(format!("{sha12}.patch"));
        std::fs::write(&path, patch)
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
        delivered.patch = Some(path);
    }
    if delivery.branch {
        let names: Vec<String> = accepted
            .iter()
            .map(|(t, _)| format!("{} ({})", t.name, t.path))
            .collect();
        let message = format!(
            "tests: generated tests for {sha12}\n\nProposed and validated by Cairn's test agent; review before merging.\nFunctions: {}\n",
            names.join(", ")
        );
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
                &message,
            ],
        )?;
        let branch = format!("cairn/tests/{sha12}");
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
