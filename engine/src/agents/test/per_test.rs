//! Per-test coverage in selection, as pytest-testmon does it: where a previous coverage run
//! recorded which lines each test file's tests executed (coverage.py dynamic contexts, one per
//! test, `cairn_test_contexts.py`), a changed Python file leaves out a test file the import
//! graph selected when that test file's tests never executed the changed function bodies.
//!
//! Safe first, so a record is used only where it still describes the test:
//! - the change must lie inside function bodies (a `def` line, a decorator, a signature,
//!   module- or class-level code runs at import, in no test's context: no narrowing), in
//!   functions the file had before (`python_blocks.py`, CPython's parser, both versions);
//! - the record is of a test file whose inputs did not change between the commit it was
//!   recorded at and the commit's parent: no file it executed, no file its import graph
//!   reaches, nor the test file itself (a test whose code is unchanged runs the same lines);
//! - what ran outside any test — imports and module-level code while collecting, session- and
//!   package-scoped fixtures — counts as run by every test file of that run (a module is
//!   imported once, for whichever test file came first), so a function a module calls at
//!   import is never narrowed away; `conftest.py` and other test support are never narrowed.
//!
//! A test file with no record, or a stale one, is unknown and stays selected. Assumption,
//! stated as testmon states it: a test's path through the code depends on the code it ran and
//! imports, not on state another test file left behind (a cache filled by another file's test)
//! or on data files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::files::is_test_support;
use super::imports::Graph;
use crate::exec::git;
use crate::store::TestCoverage;

/// The pytest plugin naming a coverage context after each test.
pub const CONTEXT_PLUGIN: &str = include_str!("cairn_test_contexts.py");
/// Its module name (`-p` takes it).
pub const CONTEXT_PLUGIN_MODULE: &str = "cairn_test_contexts";
const PYTHON_BLOCKS: &str = include_str!("python_blocks.py");

/// Changed file → test files per-test coverage shows cannot reach the change, with why.
pub type Excluded = BTreeMap<String, BTreeMap<String, String>>;

/// Reads `coverage json --show-contexts` output into one record per test file (a context is a
/// pytest node id, `tests/test_a.py::test_x[1]`; the empty context — collection — is nobody's).
pub fn parse_contexts(json: &str, commit: &str) -> Result<Vec<TestCoverage>, String> {
    #[derive(Deserialize)]
    struct Report {
        files: BTreeMap<String, File>,
    }
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        contexts: BTreeMap<String, Vec<String>>,
    }
    let report: Report =
        serde_json::from_str(json).map_err(|e| format!("unexpected coverage JSON report: {e}"))?;
    let mut by_test: BTreeMap<String, BTreeMap<String, BTreeSet<u32>>> = BTreeMap::new();
    // Lines run outside any test (imports while collecting, shared fixtures): every test
    // file of the run may depend on them (a module is imported once, for whichever test file
    // came first), so every record holds them.
    let mut shared: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (path, file) in report.files {
        let path = path.trim_start_matches("./").to_string();
        for (line, contexts) in file.contexts {
            let Ok(line) = line.parse::<u32>() else {
                continue;
            };
            for context in contexts {
                match context.split_once("::") {
                    Some((test_file, _)) => by_test
                        .entry(test_file.to_string())
                        .or_default()
                        .entry(path.clone())
                        .or_default()
                        .insert(line),
                    None => shared.entry(path.clone()).or_default().insert(line),
                };
            }
        }
    }
    for files in by_test.values_mut() {
        for (path, lines) in &shared {
            files.entry(path.clone()).or_default().extend(lines);
        }
    }
    Ok(by_test
        .into_iter()
        .map(|(test_file, files)| TestCoverage {
            test_file,
            commit_id: commit.to_string(),
            lines: files
                .into_iter()
                .map(|(path, lines)| (path, lines.into_iter().collect()))
                .collect(),
        })
        .collect())
}

/// Per changed Python file, the test files among `test_files` that records show never
/// executed the changed function bodies. Anything that cannot be shown leaves the file out of
/// the map (no narrowing).
pub fn excluded(
    workspace: &Path,
    commit: &str,
    changed: &[String],
    records: &[TestCoverage],
    graph: &Graph,
    test_files: &[String],
) -> Excluded {
    let mut found = Excluded::new();
    if records.is_empty() {
        return found;
    }
    let Ok(base) = git(
        workspace,
        &["rev-parse", "--verify", "--quiet", &format!("{commit}^1")],
    ) else {
        return found;
    };
    let base = base.trim().to_string();
    let Ok(diff) = git(
        workspace,
        &[
            "diff",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            &base,
            commit,
        ],
    ) else {
        return found;
    };
    let hunks = both_sides(&diff);
    let tests: BTreeSet<String> = test_files.iter().cloned().collect();
    let valid = still_valid(workspace, &base, records, graph, &tests);
    for path in changed {
        if !path.ends_with(".py") || is_test_support(path) || tests.contains(path) {
            continue;
        }
        let Some(sides) = hunks.get(path) else {
            continue;
        };
        let Some(bodies) = changed_bodies(workspace, &base, path, sides) else {
            continue;
        };
        let mut left_out = BTreeMap::new();
        for record in records.iter().filter(|r| valid.contains(&r.test_file)) {
            if !tests.contains(&record.test_file) {
                continue;
            }
            let ran = record.lines.get(path).is_some_and(|lines| {
                lines
                    .iter()
                    .any(|&l| bodies.iter().any(|(a, b, _)| *a <= l && l <= *b))
            });
            if !ran {
                let names: Vec<&str> = bodies.iter().map(|(_, _, n)| n.as_str()).collect();
                left_out.insert(
                    record.test_file.clone(),
                    format!(
                        "its tests never ran the changed {} of {path} (per-test coverage at {})",
                        names.join(", "),
                        record.commit_id.chars().take(12).collect::<String>()
                    ),
                );
            }
        }
        found.insert(path.clone(), left_out);
    }
    found
}

/// Per file: (old first line, old count, new first line, new count) of each hunk.
pub(crate) type Sides = Vec<(u32, u32, u32, u32)>;

pub(crate) fn both_sides(diff: &str) -> BTreeMap<String, Sides> {
    let mut files: BTreeMap<String, Sides> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            current = path.strip_prefix("b/").map(str::to_string);
            continue;
        }
        let (Some(path), Some(rest)) = (&current, line.strip_prefix("@@ ")) else {
            continue;
        };
        let side = |sign: char| -> Option<(u32, u32)> {
            let part = rest.split_whitespace().find(|p| p.starts_with(sign))?;
            let mut numbers = part[1..].splitn(2, ',');
            let start = numbers.next()?.parse().ok()?;
            let count = numbers.next().map_or(Some(1), |n| n.parse().ok())?;
            Some((start, count))
        };
        if let (Some((a, b)), Some((c, d))) = (side('-'), side('+')) {
            files.entry(path.clone()).or_default().push((a, b, c, d));
        }
    }
    files
}

#[derive(Deserialize)]
struct Blocks {
    functions: BTreeMap<String, Option<(u32, u32)>>,
    ranges: Vec<Option<String>>,
}

fn blocks(dir: &Path, text: &str, ranges: &[(u32, u32)]) -> Option<Blocks> {
    use std::io::Write;
    let ranges = serde_json::to_string(ranges).ok()?;
    let mut child = Command::new("python3")
        .args(["-I", "-c", PYTHON_BLOCKS, &ranges])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let text = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child.wait_with_output().ok()?;
    let _ = writer.join();
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// The old version's body ranges `(first, last, name)` of the functions holding every changed
/// line, or `None` when a change lies outside every function body or in a function the old
/// version did not have exactly once.
fn changed_bodies(
    workspace: &Path,
    base: &str,
    path: &str,
    sides: &Sides,
) -> Option<Vec<(u32, u32, String)>> {
    let old = git(workspace, &["show", &format!("{base}:{path}")]).ok()?;
    let new = std::fs::read_to_string(workspace.join(path)).ok()?;
    let old_ranges: Vec<(u32, u32)> = sides
        .iter()
        .filter(|(_, count, _, _)| *count > 0)
        .map(|(start, count, _, _)| (*start, start + count - 1))
        .collect();
    let new_ranges: Vec<(u32, u32)> = sides
        .iter()
        .filter(|(_, _, _, count)| *count > 0)
        .map(|(_, _, start, count)| (*start, start + count - 1))
        .collect();
    let old_blocks = blocks(workspace, &old, &old_ranges)?;
    let new_blocks = blocks(workspace, &new, &new_ranges)?;
    let mut names = BTreeSet::new();
    for name in old_blocks.ranges.iter().chain(&new_blocks.ranges) {
        names.insert(name.clone()?);
    }
    if names.is_empty() {
        return None;
    }
    names
        .into_iter()
        .map(|name| {
            let (first, last) = (*old_blocks.functions.get(&name)?)?;
            Some((first, last, name))
        })
        .collect()
}

/// Test files whose record still describes them at `base`: nothing they executed, imported
/// (by the import graph) or are changed between the record's commit and `base`.
fn still_valid(
    workspace: &Path,
    base: &str,
    records: &[TestCoverage],
    graph: &Graph,
    tests: &BTreeSet<String>,
) -> BTreeSet<String> {
    // Per recorded commit: the files changed since, and the test files importing one of them.
    type Since = Option<(BTreeSet<String>, BTreeSet<String>)>;
    let mut since: BTreeMap<&str, Since> = BTreeMap::new();
    let mut valid = BTreeSet::new();
    for record in records {
        let changed = since.entry(record.commit_id.as_str()).or_insert_with(|| {
            let text = git(
                workspace,
                &[
                    "diff",
                    "--name-only",
                    "--no-renames",
                    &record.commit_id,
                    base,
                ],
            )
            .ok()?;
            let files: BTreeSet<String> = text.lines().map(str::to_string).collect();
            let importing = files
                .iter()
                .flat_map(|file| graph.reaching(file, tests).into_keys())
                .collect();
            Some((files, importing))
        });
        let Some((files, importing)) = changed else {
            continue; // the recorded commit is gone: unknown
        };
        let stale = files.contains(&record.test_file)
            || importing.contains(&record.test_file)
            || record.lines.keys().any(|file| files.contains(file));
        if !stale && tests.contains(&record.test_file) {
            valid.insert(record.test_file.clone());
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_become_one_record_per_test_file() {
        let json = r#"{"meta": {}, "files": {
            "src/calc.py": {"executed_lines": [1, 2, 5], "contexts": {
                "1": [""], "2": ["tests/test_add.py::test_add", "tests/test_add.py::test_more[1]"],
                "5": ["tests/test_mul.py::test_mul"]}},
            "tests/test_add.py": {"contexts": {"3": ["tests/test_add.py::test_add"]}}}}"#;
        let records = parse_contexts(json, "c1").expect("parses");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].test_file, "tests/test_add.py");
        // Line 1 ran while collecting: every test file may depend on it.
        assert_eq!(
            records[0].lines,
            BTreeMap::from([
                ("src/calc.py".to_string(), vec![1, 2]),
                ("tests/test_add.py".to_string(), vec![3]),
            ])
        );
        assert_eq!(records[1].lines["src/calc.py"], [1, 5]);
        assert!(parse_contexts("{", "c").is_err());
    }

    #[test]
    fn hunks_give_both_sides() {
        let diff = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -3,2 +3 @@\n-x\n-y\n+z\n@@ -9,0 +9,2 @@\n+p\n+q\n";
        assert_eq!(both_sides(diff)["a.py"], [(3, 2, 3, 1), (9, 0, 9, 2)]);
    }
}
