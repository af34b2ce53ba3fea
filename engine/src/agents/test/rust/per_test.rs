//! Per-test coverage in Rust selection, as `per_test.rs` does it for pytest: where a run of
//! each test alone under `-C instrument-coverage` recorded the lines it executed, a commit
//! leaves out the tests that executed none of the units its change reaches (`reach.rs`: the
//! changed functions, and through their names the types, constants, imports and macros a
//! change touches and everything that mentions them).
//!
//! Safe first, so a record narrows only where it must still describe the test:
//! - where the reach cannot be told (a manifest, a data file, a build script, a procedural
//!   macro, a line outside every item), the module-graph selection stands unchanged;
//! - a record made at an older commit counts only when nothing changed since reaches what the
//!   test executed (so what it executes is unchanged);
//! - a test with no record (new since, or never recorded) runs.
//!
//! Assumption, stated as testmon states it: a test's path through the code depends on the code
//! it executes, not on the order of a `HashMap` or the time of day.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::items::innermost;
pub use super::reach::{Parsed, Reach, reach};
use crate::agents::test::select::{Selection, Unit};
use crate::store::TestCoverage;

/// File → keys of the units a test executed there.
type Executed = BTreeMap<String, BTreeSet<String>>;

/// (package, unit key) → the names of its tests, as the test binary lists them.
pub type Listing = BTreeMap<(String, String), Vec<String>>;

/// The record key of one Rust test: `cargo PACKAGE TARGET NAME`.
pub fn record_key(package: &str, target: &str, name: &str) -> String {
    format!("cargo {package} {target} {name}")
}

/// Which recorded tests the commit's body changes cannot reach, with why; reads files at the
/// records' commits through git (one parse per file and commit).
pub struct Narrowing<'a> {
    dir: &'a Path,
    base: &'a str,
    changed: &'a Reach,
    records: BTreeMap<&'a str, &'a TestCoverage>,
    /// Record commit → the reach of what changed between it and `base` (`None`: not told).
    since: BTreeMap<String, Option<Reach>>,
    parsed: &'a mut Parsed,
}

impl<'a> Narrowing<'a> {
    pub fn new(
        dir: &'a Path,
        base: &'a str,
        changed: &'a Reach,
        records: &'a [TestCoverage],
        parsed: &'a mut Parsed,
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
            parsed,
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
            .units
            .iter()
            .any(|(path, keys)| executed.get(path).is_some_and(|ran| !ran.is_disjoint(keys)));
        (!touched).then(|| {
            format!(
                "never executed what the change reaches (per-test coverage at {})",
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
        let parsed = &mut *self.parsed;
        let since = self
            .since
            .entry(record.commit_id.clone())
            .or_insert_with(|| reach(dir, &record.commit_id, base, parsed));
        since.as_ref().is_some_and(|since| {
            since
                .units
                .iter()
                .all(|(path, keys)| executed.get(path).is_none_or(|ran| ran.is_disjoint(keys)))
        })
    }

    /// File → keys of the units holding the lines the test executed, at its commit; `None`
    /// when a file it executed cannot be read there.
    fn executed(&mut self, record: &TestCoverage) -> Option<Executed> {
        let mut executed = BTreeMap::new();
        for (path, lines) in &record.lines {
            let source = self.parsed.at(self.dir, &record.commit_id, path)?;
            let units = source.units.as_slice();
            let keys: BTreeSet<String> = lines
                .iter()
                .filter_map(|&line| innermost(units, line as usize))
                .map(|u| u.key.clone())
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
    narrowed.units = by_target(&selection.units, listing);
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
            "{}; per-test coverage: {kept} of its tests executed what the change reaches or are unknown, {by_coverage} never did",
            unit.reason
        );
        unit.filters.clear();
        unit.skip = skip;
    }
    if left_out_total > 0 {
        narrowed.reasons.push(format!(
            "per-test coverage left out {left_out_total} tests that never executed what the change reaches"
        ));
    }
    // A package whose crate level was split by target and kept every test goes back to one
    // unit (its examples and benches keep being built).
    for original in selection.units.iter().filter(|u| u.target == "*") {
        // A crate-level package has no other unit: all of its units are the split ones.
        let split = |u: &Unit| u.package == original.package;
        if narrowed
            .units
            .iter()
            .filter(|u| split(u))
            .all(|u| u.skip.is_empty())
        {
            narrowed.units.retain(|u| !split(u));
            narrowed.units.push(original.clone());
        }
    }
    // A unit whose every listed test is left out stays: it runs the tests the commit adds.
    narrowed
}

/// The units with each crate-level unit (`*`) split into the package's listed test targets and
/// its doc tests, so each target's tests can be left out one by one.
fn by_target(units: &[Unit], listing: &Listing) -> Vec<Unit> {
    let mut split = Vec::new();
    for unit in units {
        let targets: Vec<&String> = listing
            .keys()
            .filter(|(package, _)| *package == unit.package)
            .map(|(_, target)| target)
            .collect();
        if unit.target != "*" || targets.is_empty() {
            split.push(unit.clone());
            continue;
        }
        let mut add = |target: &str| {
            split.push(Unit {
                target: target.to_string(),
                filters: Vec::new(),
                skip: Vec::new(),
                ..unit.clone()
            })
        };
        for target in targets {
            add(target);
        }
        if listing.contains_key(&(unit.package.clone(), "lib".to_string())) {
            add("doc");
        }
    }
    split
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn a_crate_level_unit_splits_into_its_listed_targets_and_doc_tests() {
        let unit = |package: &str, target: &str| Unit {
            package: package.into(),
            target: target.into(),
            filters: Vec::new(),
            skip: Vec::new(),
            reason: "why".into(),
        };
        let listing: Listing = [
            (("a".to_string(), "lib".to_string()), vec!["t".to_string()]),
            (
                ("a".to_string(), "test:it".to_string()),
                vec!["u".to_string()],
            ),
            (
                ("b".to_string(), "bin:tool".to_string()),
                vec!["v".to_string()],
            ),
        ]
        .into();
        let split = by_target(&[unit("a", "*"), unit("b", "*"), unit("c", "*")], &listing);
        let targets: Vec<(&str, &str)> = split
            .iter()
            .map(|u| (u.package.as_str(), u.target.as_str()))
            .collect();
        // A package without a listing stays whole; one without a library has no doc tests.
        assert_eq!(
            targets,
            [
                ("a", "lib"),
                ("a", "test:it"),
                ("a", "doc"),
                ("b", "bin:tool"),
                ("c", "*")
            ]
        );
    }
}
