//! Per-test coverage in Rust selection, as `per_test.rs` does it for pytest: where a run of
//! each test alone under `-C instrument-coverage` recorded the lines it executed, a commit
//! whose changes all lie inside function bodies leaves out the tests that never executed one
//! of those functions.
//!
//! Safe first, so a record narrows only where it must still describe the test:
//! - every change of the commit is inside the body of a function both versions have (same
//!   key, `bodies.rs`), not a `const fn` (evaluated at compile time, unseen by coverage), or is
//!   a whole new `#[test]` function (unknown, so it runs). Anything else — a signature, a
//!   type, a `const`, a `use`, a macro, an attribute, documentation (which the measure's faults
//!   count as a change to the functions around it), a manifest, a new or deleted file — and
//!   the module-graph selection stands unchanged;
//! - a record made at an older commit counts only when everything changed since is likewise
//!   inside function bodies the test never executed (so what it executes is unchanged);
//! - a test with no record (new since, or never recorded) runs.
//!
//! Assumption, stated as testmon states it: a test's path through the code depends on the code
//! it executes, not on the order of a `HashMap` or the time of day.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::bodies::{Function, functions};
use crate::agents::test::per_test::{Sides, both_sides};
use crate::agents::test::select::Selection;
use crate::exec::git;
use crate::store::TestCoverage;

/// File → keys of the functions whose bodies changed.
pub type BodyChanges = BTreeMap<String, BTreeSet<String>>;

/// File → keys of the functions a test executed there.
type Executed = BTreeMap<String, BTreeSet<String>>;

/// (package, unit key) → the names of its tests, as the test binary lists them.
pub type Listing = BTreeMap<(String, String), Vec<String>>;

/// The record key of one Rust test: `cargo PACKAGE TARGET NAME`.
pub fn record_key(package: &str, target: &str, name: &str) -> String {
    format!("cargo {package} {target} {name}")
}

/// The functions whose bodies changed from `from` to `to`, or `None` when a change lies
/// anywhere else (see the module documentation).
pub fn body_changes(dir: &Path, from: &str, to: &str) -> Option<BodyChanges> {
    let diff = git(
        dir,
        &[
            "diff",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            from,
            to,
        ],
    )
    .ok()?;
    // Added, deleted and binary files have no body to be inside.
    if diff
        .lines()
        .any(|l| l == "--- /dev/null" || l == "+++ /dev/null" || l.starts_with("Binary files "))
    {
        return None;
    }
    let names = git(dir, &["diff", "--name-only", "--no-renames", from, to]).ok()?;
    let sides = both_sides(&diff);
    let mut changed = BodyChanges::new();
    for path in names.lines().filter(|p| !p.is_empty()) {
        // A mode change alone has no hunk, but may make a script of a source file: refuse.
        let hunks = sides.get(path)?;
        if !path.ends_with(".rs") {
            return None;
        }
        let old = git(dir, &["show", &format!("{from}:{path}")]).ok()?;
        let new = git(dir, &["show", &format!("{to}:{path}")]).ok()?;
        let keys = changed_in_bodies(&old, &new, hunks)?;
        changed.insert(path.to_string(), keys);
    }
    Some(changed)
}

/// The keys of the functions the hunks change, when every hunk is inside one body both
/// versions have, or adds whole new test functions.
fn changed_in_bodies(old: &str, new: &str, hunks: &Sides) -> Option<BTreeSet<String>> {
    let before = functions(old).ok()?;
    let after = functions(new).ok()?;
    let new_lines: Vec<&str> = new.lines().collect();
    let mut keys = BTreeSet::new();
    for &(old_start, old_count, new_start, new_count) in hunks {
        let (old_start, old_count) = (old_start as usize, old_count as usize);
        let (new_start, new_count) = (new_start as usize, new_count as usize);
        if old_count == 0
            && equivalent_starts(&new_lines, new_start, new_count)
                .any(|start| adds_only_tests(&before, &after, &new_lines, start, new_count))
        {
            continue;
        }
        let inside = |functions: &[Function], start: usize, count: usize| -> Option<String> {
            let found = if count == 0 {
                // An insertion after line `start`: inside when both neighbours are.
                functions
                    .iter()
                    .find(|f| f.open <= start && start < f.close)
            } else {
                let last = start + count - 1;
                functions
                    .iter()
                    .find(|f| f.inside_body(start) && f.inside_body(last))
            }?;
            (!found.constant).then(|| found.key.clone())
        };
        let old_key = inside(&before, old_start, old_count)?;
        let new_key = inside(&after, new_start, new_count)?;
        if old_key != new_key {
            return None;
        }
        keys.insert(old_key);
    }
    Some(keys)
}

/// The first lines an inserted block of `count` lines at `start` could equally have been
/// given (git places an insertion whose first line repeats the line after it, or whose last
/// line repeats the line before it, at either place: `#[test]` and `}` often do).
fn equivalent_starts(lines: &[&str], start: usize, count: usize) -> impl Iterator<Item = usize> {
    let line = |n: usize| lines.get(n.wrapping_sub(1)).copied();
    let mut first = start;
    while first > 1 && line(first - 1).is_some() && line(first - 1) == line(first - 1 + count) {
        first -= 1;
    }
    let mut last = start;
    while line(last + count).is_some() && line(last) == line(last + count) {
        last += 1;
    }
    first..=last
}

/// Whether the added lines are whole `#[test]` functions the old version did not have (and
/// blank lines between them).
fn adds_only_tests(
    before: &[Function],
    after: &[Function],
    lines: &[&str],
    start: usize,
    count: usize,
) -> bool {
    count > 0
        && (start..start + count).all(|line| {
            lines
                .get(line - 1)
                .is_some_and(|text| text.trim().is_empty())
                || after.iter().any(|f| {
                    f.test
                        && f.start <= line
                        && line <= f.close
                        && f.start >= start
                        && f.close < start + count
                        && !before.iter().any(|old| old.key == f.key)
                })
        })
}

/// Which recorded tests the commit's body changes cannot reach, with why; reads files at the
/// records' commits through git (one parse per file and commit).
pub struct Narrowing<'a> {
    dir: &'a Path,
    base: &'a str,
    changed: &'a BodyChanges,
    records: BTreeMap<&'a str, &'a TestCoverage>,
    /// Record commit → what changed between it and `base` (`None`: not only bodies).
    since: BTreeMap<String, Option<BodyChanges>>,
    /// (commit, path) → the file's functions there.
    parsed: BTreeMap<(String, String), Option<Vec<Function>>>,
}

impl<'a> Narrowing<'a> {
    pub fn new(
        dir: &'a Path,
        base: &'a str,
        changed: &'a BodyChanges,
        records: &'a [TestCoverage],
    ) -> Narrowing<'a> {
        Narrowing {
            dir,
            base,
            changed,
            records: records
                .iter()
                .filter(|r| r.test_file.starts_with("cargo "))
                .map(|r| (r.test_file.as_str(), r))
                .collect(),
            since: BTreeMap::new(),
            parsed: BTreeMap::new(),
        }
    }

    /// Whether a test's record exists and is still good at the base commit.
    pub fn is_current(&mut self, key: &str) -> bool {
        let Some(record) = self.records.get(key).copied() else {
            return false;
        };
        self.executed(record)
            .is_some_and(|executed| self.unaffected_since(record, &executed))
    }

    /// `Some(reason)` when the record shows the test cannot reach the commit's changes.
    pub fn left_out(&mut self, key: &str) -> Option<String> {
        let record = self.records.get(key).copied()?;
        let executed = self.executed(record)?;
        if !self.unaffected_since(record, &executed) {
            return None;
        }
        let touched = self
            .changed
            .iter()
            .any(|(path, keys)| executed.get(path).is_some_and(|ran| !ran.is_disjoint(keys)));
        (!touched).then(|| {
            format!(
                "never executed the changed functions (per-test coverage at {})",
                record.commit_id.chars().take(12).collect::<String>()
            )
        })
    }

    /// Nothing the record's test `executed` changed between its commit and the base.
    fn unaffected_since(&mut self, record: &TestCoverage, executed: &Executed) -> bool {
        if record.commit_id == self.base {
            return true;
        }
        let (dir, base) = (self.dir, self.base);
        let since = self
            .since
            .entry(record.commit_id.clone())
            .or_insert_with(|| body_changes(dir, &record.commit_id, base));
        since.as_ref().is_some_and(|since| {
            since
                .iter()
                .all(|(path, keys)| executed.get(path).is_none_or(|ran| ran.is_disjoint(keys)))
        })
    }

    /// File → keys of the functions holding the lines the test executed, at its commit;
    /// `None` when a file it executed cannot be read there.
    fn executed(&mut self, record: &TestCoverage) -> Option<Executed> {
        let mut executed = BTreeMap::new();
        for (path, lines) in &record.lines {
            let dir = self.dir;
            let parsed = self
                .parsed
                .entry((record.commit_id.clone(), path.clone()))
                .or_insert_with(|| {
                    let text = git(dir, &["show", &format!("{}:{path}", record.commit_id)]).ok()?;
                    functions(&text).ok()
                })
                .as_ref()?;
            let keys: BTreeSet<String> = lines
                .iter()
                .filter_map(|&line| parsed.iter().find(|f| f.holds(line as usize)))
                .map(|f| f.key.clone())
                .collect();
            executed.insert(path.clone(), keys);
        }
        Some(executed)
    }
}

/// The selection with each unit's tests that records show cannot reach the change left out
/// (run with `--exact --skip`); a unit without a listing, the crate level and doc tests stay.
pub fn narrow(
    selection: &Selection,
    listing: &Listing,
    narrowing: &mut Narrowing<'_>,
) -> Selection {
    let mut narrowed = selection.clone();
    if selection.all {
        return narrowed;
    }
    let mut left_out_total = 0;
    for unit in &mut narrowed.units {
        let Some(names) = listing.get(&(unit.package.clone(), unit.target.clone())) else {
            continue;
        };
        let mut skip = Vec::new();
        let (mut kept, mut by_coverage) = (0, 0);
        for name in names {
            let in_graph =
                unit.filters.is_empty() || unit.filters.iter().any(|f| name.contains(f.as_str()));
            if !in_graph {
                skip.push(name.clone());
            } else if narrowing
                .left_out(&record_key(&unit.package, &unit.target, name))
                .is_some()
            {
                skip.push(name.clone());
                by_coverage += 1;
            } else {
                kept += 1;
            }
        }
        if by_coverage == 0 {
            continue;
        }
        left_out_total += by_coverage;
        unit.reason = format!(
            "{}; per-test coverage: {kept} of its tests executed a changed function or are unknown, {by_coverage} never executed one",
            unit.reason
        );
        unit.filters.clear();
        unit.skip = skip;
    }
    if left_out_total > 0 {
        narrowed.reasons.push(format!(
            "per-test coverage left out {left_out_total} tests that never executed a changed function"
        ));
    }
    // A unit whose every listed test is left out stays: it runs the tests the commit adds.
    narrowed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    const OLD: &str = "const LIMIT: u8 = 3;\n\nfn add(a: u8, b: u8) -> u8 {\n    a + b\n}\n\nconst fn fixed() -> u8 {\n    1\n}\n\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(1, 2), 3);\n    }\n}\n";

    fn hunks(old: &str, new: &str) -> Sides {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rs"), old).unwrap();
        std::fs::write(dir.path().join("b.rs"), new).unwrap();
        let output = std::process::Command::new("git")
            .args(["diff", "--no-index", "-U0", "a.rs", "b.rs"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let diff = String::from_utf8_lossy(&output.stdout).replace("+++ b/b.rs", "+++ b/a.rs");
        both_sides(&diff).remove("a.rs").unwrap_or_default()
    }

    fn changed(new: &str) -> Option<BTreeSet<String>> {
        changed_in_bodies(OLD, new, &hunks(OLD, new))
    }

    #[test]
    fn only_changes_inside_bodies_name_functions() {
        let body = OLD.replace("    a + b\n", "    let sum = a + b;\n    sum\n");
        assert_eq!(changed(&body).unwrap(), BTreeSet::from(["add".to_string()]));
        // A signature, a const, a const fn's body: not inside a body coverage sees.
        assert_eq!(changed(&OLD.replace("b: u8) -> u8", "b: u8) -> u16")), None);
        assert_eq!(
            changed(&OLD.replace("LIMIT: u8 = 3", "LIMIT: u8 = 4")),
            None
        );
        assert_eq!(changed(&OLD.replace("    1\n", "    2\n")), None);
        // A new test is unknown, not a change to anything; a new helper is a change outside.
        let new_test = OLD.replace(
            "    }\n}\n",
            "    }\n\n    #[test]\n    fn adds_zero() {\n        assert_eq!(super::add(0, 0), 0);\n    }\n}\n",
        );
        assert_eq!(changed(&new_test).unwrap(), BTreeSet::new());
        let new_helper = OLD.replace("const fn fixed", "fn helper() {}\n\nconst fn fixed");
        assert_eq!(changed(&new_helper), None);
        // However git places a new test between two others, it is a new test.
        let two = OLD.replace(
            "    }\n}\n",
            "    }\n\n    #[test]\n    fn last() {\n        assert!(true);\n    }\n}\n",
        );
        let three = two.replace(
            "\n    #[test]\n    fn last()",
            "\n    #[test]\n    fn middle() {\n        assert!(true);\n    }\n\n    #[test]\n    fn last()",
        );
        assert_eq!(
            changed_in_bodies(&two, &three, &hunks(&two, &three)).unwrap(),
            BTreeSet::new()
        );
        let lines = [
            "fn a() {", "}", "", "#[test]", "fn b() {", "}", "", "#[test]", "fn c() {", "}",
        ];
        assert_eq!(
            equivalent_starts(&lines, 4, 4).collect::<Vec<_>>(),
            [2, 3, 4, 5]
        );
    }
}
