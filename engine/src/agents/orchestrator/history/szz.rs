//! SZZ labelling: which past commits introduced a defect.
//!
//! A fix commit is recognised by its message (fix/bug/defect/regression/revert/crash, or
//! "fixes #12"). The code lines it deleted or changed — whitespace-only changes ignored, blank
//! and comment-only lines skipped — are traced with `git blame -w` on the fix's parent to the
//! commits that last wrote them: those are labelled defect-inducing (Śliwerski, Zimmermann and
//! Zeller, 2005). Only code files are traced: a fix's edits to docs or tests say nothing about
//! which change broke the program. Fixes that touch very many files (mass reformatting, large
//! merges of work) are left out as noise, as the SZZ literature does.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use regex::Regex;

use super::log::Commit;
use crate::agents::orchestrator::{Category, categorize};

/// Fixes that change more code files than this are not traced.
const MAX_FILES_PER_FIX: usize = 30;

fn fix_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        // Word boundaries keep "prefix", "debug" and "fixture" out.
        Regex::new(
            r"(?i)\b(fix|fixes|fixed|fixing|bugfix|hotfix|bug|bugs|defect|defects|regression|revert|reverts|reverted|crash|crashes|broken)\b|\b(close[sd]?|resolve[sd]?)\s+#\d+",
        )
        .expect("the fix pattern is a valid regex")
    })
}

/// True when a commit message says the commit fixes something.
pub fn is_fix(message: &str) -> bool {
    fix_pattern().is_match(message)
}

/// Whether a file's lines can carry a defect a fix repairs.
fn traced(path: &str) -> bool {
    matches!(
        categorize(path),
        Category::Code | Category::Security | Category::Migration
    )
}

/// The commits found to have introduced what some later fix repaired, with the number of fix
/// commits traced. `progress(done, total)` is called as fixes are traced; blames run on
/// `workers` threads (git does the work; each thread waits on its own git process).
pub fn label(
    repo: &Path,
    commits: &[Commit],
    workers: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> (BTreeSet<String>, usize) {
    let fixes: Vec<&Commit> = commits
        .iter()
        .filter(|c| is_fix(&c.message))
        .filter(|c| {
            let code = c.files.iter().filter(|f| traced(&f.path)).count();
            code > 0 && code <= MAX_FILES_PER_FIX
        })
        .collect();
    let inducing = Mutex::new(BTreeSet::new());
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(fix) = fixes.get(index) else { break };
                    let found = introducers(repo, &fix.id);
                    if let Ok(mut set) = inducing.lock() {
                        set.extend(found);
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(finished, fixes.len());
                }
            });
        }
    });
    let mut inducing = inducing.into_inner().unwrap_or_default();
    // A fix never induces itself (its own lines are not in its parent), but a fix whose parent
    // is a root commit could blame boundary lines on the root; keep only known commits.
    let known: BTreeSet<&str> = commits.iter().map(|c| c.id.as_str()).collect();
    inducing.retain(|id| known.contains(id.as_str()));
    (inducing, fixes.len())
}

/// The commits that last wrote the code lines `fix` deleted or changed. A fix that cannot be
/// read (a root commit, a git error) yields nothing rather than stopping the labelling.
pub fn introducers(repo: &Path, fix: &str) -> BTreeSet<String> {
    let parent = format!("{fix}^");
    let Ok(diff) = crate::exec::git(
        repo,
        &[
            "-c",
            "core.quotePath=false",
            "diff-tree",
            "-p",
            "-U0",
            "-w",
            "-M",
            "--no-commit-id",
            &parent,
            fix,
        ],
    ) else {
        return BTreeSet::new();
    };
    let mut found = BTreeSet::new();
    for (path, lines) in deleted_lines(&diff) {
        if !traced(&path) || lines.is_empty() {
            continue;
        }
        let mut args: Vec<String> = vec!["blame".into(), "-w".into(), "--porcelain".into()];
        for (start, end) in ranges(&lines) {
            args.push("-L".into());
            args.push(format!("{start},{end}"));
        }
        args.extend([parent.clone(), "--".into(), path]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Ok(blame) = crate::exec::git(repo, &args) {
            found.extend(blamed_commits(&blame));
        }
    }
    found
}

/// Old-side line numbers of deleted lines per old path, from a `-U0` patch; blank lines and
/// lines that are only a comment are skipped (changing them fixes nothing).
pub fn deleted_lines(patch: &str) -> Vec<(String, Vec<u64>)> {
    let mut files: Vec<(String, Vec<u64>)> = Vec::new();
    let mut old_line = 0u64;
    // Between `diff --git` and the first hunk: a deleted line "-- x" reads as "--- x" too.
    let mut in_header = false;
    for line in patch.lines() {
        if line.starts_with("diff --git ") {
            in_header = true;
        } else if in_header && let Some(path) = line.strip_prefix("--- ") {
            let path = path.strip_prefix("a/").unwrap_or(path);
            files.push((path.to_string(), Vec::new()));
        } else if in_header && !line.starts_with("@@ ") {
            continue;
        } else if let Some(header) = line.strip_prefix("@@ -") {
            in_header = false;
            // "@@ -12,3 +12,0 @@": the old side starts at 12.
            let old = header.split_whitespace().next().unwrap_or("0");
            old_line = old
                .split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(text) = line.strip_prefix('-') {
            if let Some((path, lines)) = files.last_mut()
                && path != "/dev/null"
                && !is_blank_or_comment(text)
            {
                lines.push(old_line);
            }
            old_line += 1;
        }
    }
    files.retain(|(path, lines)| path != "/dev/null" && !lines.is_empty());
    files
}

fn is_blank_or_comment(text: &str) -> bool {
    let text = text.trim();
    text.is_empty()
        || ["//", "#", "/*", "*", "--", "\"\"\"", "'''"]
            .iter()
            .any(|marker| text.starts_with(marker))
}

/// Sorted line numbers folded into inclusive ranges for `git blame -L`.
fn ranges(lines: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &line in lines {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == line => *end = line,
            _ => out.push((line, line)),
        }
    }
    out
}

/// Commit ids named by the line headers of `git blame --porcelain`.
fn blamed_commits(blame: &str) -> BTreeSet<String> {
    blame
        .lines()
        .filter_map(|line| {
            let id = line.split(' ').next()?;
            (id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()) && line.contains(' '))
                .then(|| id.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_messages_are_recognised_and_lookalikes_are_not() {
        for message in [
            "Fix crash on empty input",
            "bugfix: off by one",
            "Revert \"add cache\"",
            "handle None (closes #123)",
            "regression in parser",
        ] {
            assert!(is_fix(message), "{message}");
        }
        for message in [
            "add prefix option",
            "debug logging",
            "new fixture",
            "Add feature (#123)",
        ] {
            assert!(!is_fix(message), "{message}");
        }
    }

    #[test]
    fn deleted_code_lines_are_numbered_on_the_old_side() {
        let patch = "diff --git a/src/a.py b/src/a.py\n--- a/src/a.py\n+++ b/src/a.py\n@@ -3,2 +3 @@\n-    x = 1\n-    # note\n+    x = 2\n@@ -10,2 +9,0 @@\n--- x\n-    return y\ndiff --git a/new.py b/new.py\n--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+print()\n";
        assert_eq!(
            deleted_lines(patch),
            vec![("src/a.py".to_string(), vec![3, 11])]
        );
        assert_eq!(ranges(&[3, 4, 5, 9]), vec![(3, 5), (9, 9)]);
    }
}
