//! Asking the router for a fix (`propose_fix`, answered as plain text: a unified diff): what
//! failed and how (bounded), the tests' source, the source around the commit's changed lines
//! (the likely cause), and the commit's diff of its non-test files.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::agents::test::files::{Hunk, is_test_file, is_test_support};
use crate::agents::test::scratch::bounded_to;
use crate::exec::git;
use crate::llm::{CallScope, Request, Router, Task};

/// A test that failed on the commit and again on every re-run (not flaky).
#[derive(Debug, Clone)]
pub struct Failure {
    pub id: String,
    /// Its test files (relative to the repository root), when they could be told.
    pub files: Vec<String>,
    /// What the runner printed about it (a re-run's output, else the run's), bounded.
    pub output: String,
}

/// The failing tests shown in detail; the rest are named only.
const FAILURES_SHOWN: usize = 3;
/// Bytes of one test's output, of one test file, of the source around the changes, of the diff.
const OUTPUT_BYTES: usize = 1200;
const TEST_FILE_BYTES: usize = 1500;
const SOURCE_BYTES: usize = 3000;
const DIFF_BYTES: usize = 4000;
/// Lines of context around each changed line range.
const AROUND: u32 = 8;

const INSTRUCTION: &str = "You fix bugs. A commit made the tests below fail; the tests are right and \
the commit's change to the code is the likely cause. Answer with only a unified diff in git's format \
(`--- a/PATH`, `+++ b/PATH`, then `@@ -start,count +start,count @@` hunks with the unchanged lines \
around each change) that changes the source files so the failing tests pass without breaking others. \
Never change a test file. No explanation.";

/// The question: the prompt's input and the diff the router adds to it.
pub fn question(
    workspace: &Path,
    commit: &str,
    failures: &[Failure],
    hunks: &BTreeMap<String, Vec<Hunk>>,
) -> Request {
    let mut input = String::new();
    let ids: Vec<&str> = failures.iter().map(|f| f.id.as_str()).collect();
    input.push_str(&format!(
        "Failing tests ({}): {}\n",
        failures.len(),
        ids.join(", ")
    ));
    for failure in failures.iter().take(FAILURES_SHOWN) {
        input.push_str(&format!(
            "\n## {} ({})\n{}\n",
            failure.id,
            failure.files.join(", "),
            bounded_to(failure.output.trim(), OUTPUT_BYTES)
        ));
    }
    let mut test_files: Vec<&String> = failures
        .iter()
        .take(FAILURES_SHOWN)
        .flat_map(|f| &f.files)
        .collect();
    test_files.dedup();
    for file in test_files.into_iter().take(2) {
        if let Ok(text) = std::fs::read_to_string(workspace.join(file)) {
            input.push_str(&format!(
                "\nTest file {file}:\n{}\n",
                bounded_to(&text, TEST_FILE_BYTES)
            ));
        }
    }
    input.push_str("\nSource around the commit's changes:\n");
    input.push_str(&source_around(workspace, hunks));
    let sources: Vec<&str> = hunks
        .keys()
        .map(String::as_str)
        .filter(|p| !is_test_file(p) && !is_test_support(p))
        .collect();
    let mut args = vec![
        "show",
        "--format=",
        "--no-color",
        "--no-ext-diff",
        commit,
        "--",
    ];
    args.extend(&sources);
    let diff = if sources.is_empty() {
        String::new()
    } else {
        git(workspace, &args).unwrap_or_default()
    };
    Request {
        task: Task::ProposeFix,
        instruction: INSTRUCTION.into(),
        input,
        diff: (!diff.is_empty()).then(|| bounded_to(&diff, DIFF_BYTES)),
    }
}

/// The changed non-test files' lines around each hunk, with a header naming the range.
fn source_around(workspace: &Path, hunks: &BTreeMap<String, Vec<Hunk>>) -> String {
    let mut out = String::new();
    for (path, file_hunks) in hunks {
        if is_test_file(path) || is_test_support(path) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(workspace.join(path)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        // Merged windows, 1-based inclusive.
        let mut windows: Vec<(u32, u32)> = Vec::new();
        for hunk in file_hunks {
            let start = hunk.start.saturating_sub(AROUND).max(1);
            let end = (hunk.start + hunk.count + AROUND).min(lines.len() as u32);
            match windows.last_mut() {
                Some(last) if start <= last.1 + 1 => last.1 = last.1.max(end),
                _ => windows.push((start, end)),
            }
        }
        for (start, end) in windows {
            if start > end {
                continue;
            }
            out.push_str(&format!("File {path}, lines {start}-{end}:\n"));
            for line in &lines[(start - 1) as usize..end as usize] {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.len() > SOURCE_BYTES {
            break;
        }
    }
    bounded_to(&out, SOURCE_BYTES)
}

/// What the model answered and who answered, or why there is no answer.
pub async fn propose(
    router: &Router,
    scope: &CallScope,
    request: Request,
) -> Result<(String, String), String> {
    // Rules cannot write a fix: without a model there is no proposal.
    let answer = router.ask(Some(scope), request, || Value::Null).await;
    let tier = answer.tier.as_str().to_string();
    if answer.tier == crate::llm::Tier::Rules {
        let why = if answer.fallbacks.is_empty() {
            "no model answered".to_string()
        } else {
            answer.fallbacks.join("; ")
        };
        return Err(why);
    }
    Ok((answer.text, tier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_around_changes_is_windowed_and_merged() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let text: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        std::fs::write(dir.path().join("a.py"), &text).unwrap_or_else(|e| panic!("{e}"));
        let mut hunks = BTreeMap::new();
        hunks.insert(
            "a.py".to_string(),
            vec![
                Hunk { start: 3, count: 1 },
                Hunk {
                    start: 12,
                    count: 2,
                },
                Hunk {
                    start: 38,
                    count: 1,
                },
            ],
        );
        hunks.insert(
            "tests/test_a.py".to_string(),
            vec![Hunk { start: 1, count: 1 }],
        );
        let out = source_around(dir.path(), &hunks);
        assert!(out.starts_with("File a.py, lines 1-22:\nline 1\n"), "{out}");
        assert!(out.contains("File a.py, lines 30-40:\nline 30\n"), "{out}");
        assert!(!out.contains("test_a"), "{out}");
    }
}
