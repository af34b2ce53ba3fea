//! The repository's files as the test agent sees them: which are runnable test files, which
//! are test support (fixtures, `conftest.py`, helpers: a change there can affect any test),
//! and which lines of which files a commit changed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::exec::git;

/// A file a test runner runs by itself: `test_*.py`, `*_test.py`, `*_test.go`, `*.test.ts`,
/// `*.spec.js`, a file under `__tests__/`, or a Rust integration test (`tests/*.rs`).
pub fn is_test_file(path: &str) -> bool {
    let lower = path.to_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let dirs: Vec<&str> = lower.split('/').rev().skip(1).collect();
    let code = [
        ".py", ".go", ".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".rb", ".rs",
    ]
    .iter()
    .any(|ext| name.ends_with(ext));
    if !code {
        return false;
    }
    if name.ends_with(".py") {
        return (name.starts_with("test_") || name.ends_with("_test.py")) && name != "conftest.py";
    }
    if name.ends_with(".go") {
        return name.ends_with("_test.go");
    }
    if name.ends_with(".rs") {
        return dirs.first() == Some(&"tests");
    }
    if name.ends_with(".rb") {
        return name.ends_with("_spec.rb") || name.ends_with("_test.rb");
    }
    name.contains(".test.") || name.contains(".spec.") || dirs.contains(&"__tests__")
}

/// A file beside the tests that is not one (fixtures, helpers, `conftest.py`, `testdata/`):
/// what it affects cannot be told, so it selects everything.
pub fn is_test_support(path: &str) -> bool {
    let lower = path.to_lowercase();
    let dirs: Vec<&str> = lower.split('/').rev().skip(1).collect();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    !is_test_file(path)
        && (name == "conftest.py"
            || dirs.iter().any(|d| {
                ["tests", "test", "__tests__", "spec", "testdata", "fixtures"].contains(d)
            }))
}

/// Every runnable test file tracked at `commit` in the checkout.
pub fn test_files(workspace: &Path, commit: &str) -> Result<Vec<String>, String> {
    Ok(tracked(workspace, commit)?
        .into_iter()
        .filter(|l| is_test_file(l))
        .collect())
}

/// Every file tracked at `commit` (paths as git prints them with `core.quotePath` off).
pub fn tracked(workspace: &Path, commit: &str) -> Result<Vec<String>, String> {
    let listing = git(
        workspace,
        &[
            "-c",
            "core.quotePath=off",
            "ls-tree",
            "-r",
            "--name-only",
            commit,
        ],
    )?;
    Ok(listing.lines().map(str::to_string).collect())
}

/// The paths `commit` changes against its first parent (every path of a root commit), as
/// git prints them with `core.quotePath` off.
pub fn changed(workspace: &Path, commit: &str) -> Result<Vec<String>, String> {
    let listing = git(
        workspace,
        &[
            "-c",
            "core.quotePath=off",
            "diff-tree",
            "--name-only",
            "-r",
            "--root",
            "-M",
            "--no-commit-id",
            "-m",
            "--first-parent",
            commit,
        ],
    )?;
    Ok(listing
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The commit's first parent, if it has one.
pub fn parent(workspace: &Path, commit: &str) -> Option<String> {
    git(
        workspace,
        &["rev-parse", "--verify", "--quiet", &format!("{commit}^1")],
    )
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

/// One hunk on the new side of a diff: `count` lines from `start` (1-based). A pure deletion
/// has `count` 0 and `start` the line after which lines went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hunk {
    pub start: u32,
    pub count: u32,
}

/// The hunks of every file the commit changed (against its first parent), by new path.
pub fn changed_hunks(
    workspace: &Path,
    commit: &str,
) -> Result<BTreeMap<String, Vec<Hunk>>, String> {
    let diff = match parent(workspace, commit) {
        Some(parent) => git(
            workspace,
            &[
                "diff",
                "-U0",
                "--no-color",
                "--no-ext-diff",
                "-M",
                &parent,
                commit,
            ],
        )?,
        None => git(
            workspace,
            &[
                "diff-tree",
                "-p",
                "-U0",
                "--no-color",
                "--no-ext-diff",
                "--root",
                commit,
            ],
        )?,
    };
    Ok(parse_hunks(&diff))
}

/// `+++ b/path` names the file, `@@ -a,b +c,d @@` gives its hunks.
pub fn parse_hunks(diff: &str) -> BTreeMap<String, Vec<Hunk>> {
    let mut files: BTreeMap<String, Vec<Hunk>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            current = path.strip_prefix("b/").map(str::to_string);
            continue;
        }
        let (Some(path), Some(rest)) = (&current, line.strip_prefix("@@ ")) else {
            continue;
        };
        let Some(new_side) = rest.split_whitespace().find(|part| part.starts_with('+')) else {
            continue;
        };
        let mut numbers = new_side.trim_start_matches('+').splitn(2, ',');
        let start = numbers.next().and_then(|n| n.parse().ok());
        let count = numbers.next().map_or(Some(1), |n| n.parse().ok());
        if let (Some(start), Some(count)) = (start, count) {
            files
                .entry(path.clone())
                .or_default()
                .push(Hunk { start, count });
        }
    }
    files
}

/// Lines the commit added or changed (what coverage is asked about).
pub fn added_lines(hunks: &[Hunk]) -> Vec<u32> {
    hunks
        .iter()
        .flat_map(|h| h.start..h.start + h.count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_are_told_from_support_and_sources() {
        for path in [
            "tests/test_pay.py",
            "pay_test.py",
            "pkg/pay_test.go",
            "web/a.test.ts",
            "web/__tests__/a.js",
            "core/tests/api.rs",
            "spec/a_spec.rb",
        ] {
            assert!(is_test_file(path), "{path}");
        }
        for path in [
            "src/pay.py",
            "tests/conftest.py",
            "tests/helpers.py",
            "pkg/pay.go",
            "core/src/lib.rs",
            "tests/data.json",
        ] {
            assert!(!is_test_file(path), "{path}");
        }
        assert!(is_test_support("tests/conftest.py"));
        assert!(is_test_support("tests/helpers.py"));
        assert!(is_test_support("pkg/testdata/in.txt"));
        assert!(!is_test_support("src/pay.py"));
        assert!(!is_test_support("tests/test_pay.py"));
    }

    #[test]
    fn hunks_are_read_from_a_zero_context_diff() {
        let diff = "diff --git a/src/a.py b/src/a.py\n--- a/src/a.py\n+++ b/src/a.py\n@@ -3 +3 @@ def f():\n-    return 1\n+    return 2\n@@ -10,2 +11,0 @@\n-x\n-y\n@@ -20,0 +20,3 @@\n+a\n+b\n+c\ndiff --git a/gone.py b/gone.py\n--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n";
        let files = parse_hunks(diff);
        assert_eq!(files.len(), 1, "a deleted file has no new side");
        let hunks = &files["src/a.py"];
        assert_eq!(
            hunks,
            &[
                Hunk { start: 3, count: 1 },
                Hunk {
                    start: 11,
                    count: 0
                },
                Hunk {
                    start: 20,
                    count: 3
                }
            ]
        );
        assert_eq!(added_lines(hunks), [3, 20, 21, 22]);
    }
}
