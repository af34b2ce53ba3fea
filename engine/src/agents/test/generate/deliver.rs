//! Handing accepted tests to a human: written into the scratch tree at the new commit, then a
//! patch file `test-proposals/<sha12>.patch` and/or a branch `cairn/tests/<sha12>` in the
//! repository under test (`../handover.rs`) — never a commit on the branch that was tested.

use std::path::Path;

use super::gate::Scratch;
use super::propose::{Proposal, Target, placed_text};
use crate::agents::test::handover::{Delivered, Delivery, Handover, hand_over};

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
    let sha12 = &scratch.commit[..scratch.commit.len().min(12)];
    let names: Vec<String> = accepted
        .iter()
        .map(|(t, _)| format!("{} ({})", t.name, t.path))
        .collect();
    let what = Handover {
        kind: "tests",
        patch_prefix: "",
        message: format!(
            "tests: generated tests for {sha12}\n\nProposed and validated by Cairn's test agent; review before merging.\nFunctions: {}\n",
            names.join(", ")
        ),
    };
    hand_over(scratch, &what, delivery, repo, run_dir)
}
