//! What a commit changed, file by file, with the changed line ranges of the new version, read
//! from `git diff-tree -p -U0` against the first parent (the root commit against nothing).
//! Selection maps the lines to the innermost module holding them; the measure maps them to
//! functions to mutate.

use std::path::Path;

use serde::Serialize;

use crate::exec::git;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Path relative to the repository root, as it is after the commit.
    pub path: String,
    /// Changed line ranges (1-based, inclusive) in the new file; for a pure deletion, the two
    /// lines around it. Empty when unknown (binary) or the file is gone.
    pub lines: Vec<(usize, usize)>,
    /// The file no longer exists after the commit (deleted, or the old side of a rename).
    pub deleted: bool,
    /// The text before the commit, kept for the files whose meaning is a comparison
    /// (`Cargo.lock`, `Cargo.toml`: which dependencies and keys changed); `None` otherwise
    /// or when the file is new.
    #[serde(skip)]
    pub before: Option<String>,
}

impl Change {
    /// A change of unknown extent: every module of the file counts as changed.
    pub fn whole(path: &str) -> Change {
        Change {
            path: path.to_string(),
            lines: Vec::new(),
            deleted: false,
            before: None,
        }
    }
}

/// The changes of `commit` in the repository at `dir`.
pub fn changes(dir: &Path, commit: &str) -> Result<Vec<Change>, String> {
    let patch = git(
        dir,
        &[
            "diff-tree",
            "-p",
            "-U0",
            "-M",
            "--root",
            "-m",
            "--first-parent",
            "--no-commit-id",
            "--no-color",
            "--no-ext-diff",
            commit,
        ],
    )?;
    let mut changes = parse_patch(&patch);
    // A Rust file whose tokens are the same before and after (comments, blank lines,
    // formatting) changes nothing that compiles: it is not a change to select for.
    changes.retain(|change| !same_tokens(dir, commit, change));
    for change in &mut changes {
        let name = change.path.rsplit('/').next().unwrap_or(&change.path);
        if matches!(name, "Cargo.lock" | "Cargo.toml") && !change.deleted {
            // Absent in the parent (a new file): stays `None`.
            change.before = git(dir, &["show", &format!("{commit}^1:{}", change.path)]).ok();
        }
    }
    Ok(changes)
}

/// Whether a changed `.rs` file has the same token stream in the commit and its parent.
/// Doc comments are tokens (`#[doc = "…"]`), so a doc-test edit still counts.
fn same_tokens(dir: &Path, commit: &str, change: &Change) -> bool {
    if change.deleted || change.lines.is_empty() || !change.path.ends_with(".rs") {
        return false;
    }
    let tokens = |revision: String| -> Option<String> {
        let text = git(dir, &["show", &revision]).ok()?;
        text.parse::<proc_macro2::TokenStream>()
            .ok()
            .map(|t| t.to_string())
    };
    match (
        tokens(format!("{commit}^1:{}", change.path)),
        tokens(format!("{commit}:{}", change.path)),
    ) {
        (Some(old), Some(new)) => old == new,
        _ => false,
    }
}

pub fn parse_patch(patch: &str) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    let mut old_path: Option<String> = None;
    for line in patch.lines() {
        if line.starts_with("diff --git ") {
            old_path = None;
            continue;
        }
        if let Some(path) = line.strip_prefix("--- ") {
            old_path = path.strip_prefix("a/").map(str::to_string);
            continue;
        }
        if let Some(path) = line.strip_prefix("+++ ") {
            match path.strip_prefix("b/") {
                Some(new) => {
                    if let Some(old) = old_path.take().filter(|old| old != new) {
                        changes.push(Change {
                            path: old,
                            lines: Vec::new(),
                            deleted: true,
                            before: None,
                        });
                    }
                    changes.push(Change {
                        path: new.to_string(),
                        lines: Vec::new(),
                        deleted: false,
                        before: None,
                    });
                }
                None => {
                    if let Some(old) = old_path.take() {
                        changes.push(Change {
                            path: old,
                            lines: Vec::new(),
                            deleted: true,
                            before: None,
                        });
                    }
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("rename from ") {
            changes.push(Change {
                path: rest.to_string(),
                lines: Vec::new(),
                deleted: true,
                before: None,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("rename to ") {
            // A pure rename has no hunks; a rename with edits repeats it in `+++`.
            if !changes.iter().any(|c| c.path == rest) {
                changes.push(Change {
                    path: rest.to_string(),
                    lines: Vec::new(),
                    deleted: false,
                    before: None,
                });
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("Binary files ") {
            // `Binary files a/x and b/y differ`
            if let Some(new) = rest
                .split(" and ")
                .nth(1)
                .and_then(|s| s.strip_suffix(" differ"))
                .and_then(|s| s.strip_prefix("b/"))
            {
                changes.push(Change::whole(new));
            }
            continue;
        }
        let Some(hunk) = line.strip_prefix("@@ ") else {
            continue;
        };
        let Some(new_range) = hunk.split(' ').find(|part| part.starts_with('+')) else {
            continue;
        };
        let mut numbers = new_range.trim_start_matches('+').split(',');
        let start: usize = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let count: usize = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let range = if count == 0 {
            (start.max(1), start + 1)
        } else {
            (start, start + count - 1)
        };
        if let Some(change) = changes.last_mut().filter(|c| !c.deleted) {
            change.lines.push(range);
        }
    }
    changes.dedup_by(|a, b| a.path == b.path && a.deleted == b.deleted && a.lines.is_empty());
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_renames_and_deletions_are_read() {
        let patch = "diff --git a/src/a.rs b/src/a.rs\nindex 1..2 100644\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -3,2 +3,3 @@ fn x\n-a\n+b\n@@ -10 +11,0 @@\n-c\n\
                     diff --git a/old.rs b/new.rs\nsimilarity index 100%\nrename from old.rs\nrename to new.rs\n\
                     diff --git a/gone.rs b/gone.rs\ndeleted file mode 100644\n--- a/gone.rs\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        let changes = parse_patch(patch);
        assert_eq!(
            changes[0],
            Change {
                path: "src/a.rs".into(),
                lines: vec![(3, 5), (11, 12)],
                deleted: false,
                before: None,
            }
        );
        assert_eq!(
            changes[1],
            Change {
                path: "old.rs".into(),
                lines: vec![],
                deleted: true,
                before: None,
            }
        );
        assert_eq!(
            changes[2],
            Change {
                path: "new.rs".into(),
                lines: vec![],
                deleted: false,
                before: None,
            }
        );
        assert_eq!(
            changes[3],
            Change {
                path: "gone.rs".into(),
                lines: vec![],
                deleted: true,
                before: None,
            }
        );
    }
}
