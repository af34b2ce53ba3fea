//! Change-based test selection: which tests a change can affect, and how to run only those.
//! Safe before small: anything the agent cannot reason about (a lockfile, a build file, an
//! unknown file type) selects everything.
//!
//! For Cargo workspaces the work is in `rust/`: a module reference graph below the crate graph
//! picks test targets and unit-test modules (see `rust/plan.rs`); this file holds the result
//! and turns it into cargo invocations (`-p`, `--lib`, `--bin`, `--test`, libtest filters).

use std::path::Path;

use serde::Serialize;

use super::rust::{Change, plan};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// Run the whole suite.
    pub all: bool,
    /// Workspace packages with something selected (when not `all`).
    pub packages: Vec<String>,
    /// What exactly runs (when not `all`).
    pub units: Vec<Unit>,
    /// Test units selected and known: modules with unit tests, test targets, doc tests.
    pub selected_units: usize,
    pub total_units: usize,
    /// Why each unit (or everything) was selected.
    pub reasons: Vec<String>,
}

/// Tests of one target of one package, or of the whole package.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unit {
    pub package: String,
    /// `*` (every target and doc test: the crate level), `lib`, `doc`, `bin:NAME`, `test:NAME`.
    pub target: String,
    /// libtest name filters (`module::path::`); empty for every test of the target.
    pub filters: Vec<String>,
    /// Exact names of tests left out (per-test coverage, `rust/per_test.rs`): with these the
    /// filters are empty and every other test of the target runs, new ones included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    pub reason: String,
}

impl Selection {
    pub fn everything(reason: String) -> Selection {
        Selection {
            all: true,
            packages: Vec::new(),
            units: Vec::new(),
            selected_units: 0,
            total_units: 0,
            reasons: vec![reason],
        }
    }

    pub fn nothing(&self) -> bool {
        !self.all && self.units.is_empty()
    }

    /// Whether the selection runs test `name` of `target` (a unit key: `lib`, `bin:x`, …) in
    /// `package`, with libtest's filter semantics (a filter matches a substring of the name).
    pub fn covers(&self, package: &str, target: &str, name: &str) -> bool {
        self.all
            || self.units.iter().any(|u| {
                u.package == package
                    && (u.target == "*" || u.target == target)
                    && (u.filters.is_empty() || u.filters.iter().any(|f| name.contains(f.as_str())))
                    && !u.skip.iter().any(|s| s == name)
            })
    }

    /// The cargo commands that run exactly the selected units, from the configured command
    /// (`cargo test --workspace --offline -- --test-threads 2` keeps `--offline` and the
    /// harness arguments). `None` when the command already picks targets itself, so only the
    /// package level can be narrowed.
    pub fn cargo_commands(&self, command: &str) -> Option<Vec<String>> {
        let rest = command.strip_prefix("cargo test")?;
        let (cargo_args, harness_args) = match rest.split_once(" -- ") {
            Some((cargo, harness)) => (cargo.to_string(), Some(harness.trim().to_string())),
            None => (rest.trim_end_matches(" --").to_string(), None),
        };
        let mut kept = Vec::new();
        let mut excluded = Vec::new();
        let mut words = cargo_args.split_whitespace();
        while let Some(word) = words.next() {
            match word {
                "--workspace" | "--all" => {}
                "--exclude" => excluded.extend(words.next().map(str::to_string)),
                "-p" | "--package" | "--lib" | "--bins" | "--bin" | "--tests" | "--test"
                | "--doc" | "--all-targets" | "--benches" | "--examples" => return None,
                w if w.starts_with("--package=")
                    || w.starts_with("--test=")
                    || w.starts_with("--bin=")
                    || w.starts_with("--exclude=") =>
                {
                    return None;
                }
                w => kept.push(w.to_string()),
            }
        }
        let harness = harness_args.unwrap_or_default();
        let exact = harness.split_whitespace().any(|w| w == "--exact");
        let flags = kept.join(" ");
        let mut commands = Vec::new();
        let join = |parts: &[&str]| {
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        };
        for package in self.packages.iter().filter(|p| !excluded.contains(p)) {
            let units: Vec<&Unit> = self
                .units
                .iter()
                .filter(|u| &u.package == package)
                .collect();
            let whole_package = units.iter().any(|u| u.target == "*");
            let mut whole_targets = Vec::new();
            for unit in &units {
                let flag = match unit.target.split_once(':') {
                    _ if unit.target == "*" => continue,
                    _ if unit.target == "lib" => "--lib".to_string(),
                    _ if unit.target == "doc" => {
                        if !whole_package {
                            commands.push(join(&[
                                "cargo test",
                                &flags,
                                "-p",
                                package,
                                "--doc",
                                harness_tail(&harness).as_str(),
                            ]));
                        }
                        continue;
                    }
                    Some((kind, name)) => format!("--{kind} {name}"),
                    None => continue,
                };
                if !unit.skip.is_empty() {
                    if !whole_package {
                        let skips: Vec<String> = unit
                            .skip
                            .iter()
                            .map(|name| format!("--skip {name}"))
                            .collect();
                        let exact_flag = if exact { "" } else { "--exact" };
                        commands.push(join(&[
                            "cargo test",
                            &flags,
                            "-p",
                            package,
                            &flag,
                            "--",
                            &harness,
                            exact_flag,
                            &skips.join(" "),
                        ]));
                    }
                } else if unit.filters.is_empty() || exact {
                    whole_targets.push(flag);
                } else if !whole_package {
                    let filters = unit.filters.join(" ");
                    commands.push(join(&[
                        "cargo test",
                        &flags,
                        "-p",
                        package,
                        &flag,
                        "--",
                        &harness,
                        &filters,
                    ]));
                }
            }
            if whole_package {
                commands.push(join(&[
                    "cargo test",
                    &flags,
                    "-p",
                    package,
                    harness_tail(&harness).as_str(),
                ]));
            } else if !whole_targets.is_empty() {
                commands.push(join(&[
                    "cargo test",
                    &flags,
                    "-p",
                    package,
                    &whole_targets.join(" "),
                    harness_tail(&harness).as_str(),
                ]));
            }
        }
        Some(commands)
    }
}

fn harness_tail(harness: &str) -> String {
    if harness.is_empty() {
        String::new()
    } else {
        format!("-- {harness}")
    }
}

/// Selection for a Cargo workspace at `workspace`, given paths changed (relative to it), each
/// taken as changed throughout.
pub fn select_rust(workspace: &Path, changed: &[String]) -> Result<Selection, String> {
    let changes: Vec<Change> = changed.iter().map(|p| Change::whole(p)).collect();
    select_rust_changes(workspace, &changes)
}

/// Selection for a Cargo workspace from a commit's changed lines (see `rust::changes`).
pub fn select_rust_changes(workspace: &Path, changes: &[Change]) -> Result<Selection, String> {
    let mut changes = changes.to_vec();
    for change in &mut changes {
        // A path the graph has never seen but that exists is no deletion.
        change.deleted = change.deleted && !workspace.join(&change.path).exists();
    }
    plan::select(workspace, &changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(package: &str, target: &str, filters: &[&str]) -> Unit {
        Unit {
            package: package.into(),
            target: target.into(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            skip: Vec::new(),
            reason: String::new(),
        }
    }

    fn selection(units: Vec<Unit>) -> Selection {
        let mut packages: Vec<String> = units.iter().map(|u| u.package.clone()).collect();
        packages.dedup();
        Selection {
            all: false,
            packages,
            units,
            selected_units: 0,
            total_units: 0,
            reasons: Vec::new(),
        }
    }

    #[test]
    fn units_become_cargo_commands() {
        let selection = selection(vec![
            unit("a", "lib", &["exec::machine::", "store::"]),
            unit("a", "test:e2e", &[]),
            unit("a", "bin:cli", &[]),
            unit("b", "*", &[]),
        ]);
        assert_eq!(
            selection
                .cargo_commands("cargo test --workspace --offline -- --test-threads 2")
                .expect("narrows"),
            [
                "cargo test --offline -p a --lib -- --test-threads 2 exec::machine:: store::",
                "cargo test --offline -p a --test e2e --bin cli -- --test-threads 2",
                "cargo test --offline -p b -- --test-threads 2",
            ]
        );
        assert_eq!(
            selection
                .cargo_commands("cargo test --workspace --exclude b")
                .expect("narrows")
                .len(),
            2
        );
        assert!(selection.cargo_commands("cargo test --lib").is_none());
        assert!(selection.covers("a", "lib", "exec::machine::tests::x"));
        assert!(!selection.covers("a", "lib", "exec::driver::tests::x"));
        assert!(selection.covers("b", "test:anything", "x"));
        assert!(!selection.covers("c", "lib", "x"));
    }
}
