//! From changed lines to the tests to run, below the crate: the changed modules are found from
//! the lines (innermost inline module holding them), every module that can reach one of them
//! in the reference graph is affected, and the tests that run are the affected test targets,
//! the affected modules' unit tests (by libtest name filter) and affected doc tests.
//!
//! Safe before small: what the module graph cannot place falls back. A lockfile, manifest or
//! build script selects the members it can touch at the crate level, or everything
//! (`manifest.rs`); a data file or a Rust file in no module tree selects its
//! package and every package depending on it (the crate level), as does any change reaching a
//! package whose sources cannot be fully read (`graph.rs`). A file outside every package's
//! build (a script, a workflow, CI configuration — also beside a root package's sources when
//! it has no build script) cannot change what compiles, only what a test reads or runs at run
//! time: it selects every module whose string literals name the file or one of its
//! directories, as if that module had changed, and, unless it is CI or tooling
//! configuration, every integration-test target (they run programs and read the tree). The
//! assumption, stated: a test reaches a file outside its package only through a literal
//! naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::diff::Change;
use super::graph::{Graph, NodeId};
use super::manifest::{self, Effect};
use super::workspace::{Kind, Workspace};
use crate::agents::orchestrator::{Category, categorize};
use crate::agents::test::select::{Selection, Unit};

/// Per (package, unit key): the whole target, module filters, reasons.
type Picked = (bool, BTreeSet<String>, Vec<String>);

pub fn plan(workspace: &Workspace, graph: &Graph, changes: &[Change]) -> Selection {
    let mut changed: BTreeSet<NodeId> = BTreeSet::new();
    let mut changed_files: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut crate_level: BTreeMap<String, String> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut outside: Vec<String> = Vec::new();
    for change in changes {
        let path = change.path.as_str();
        match manifest::effect(workspace, change) {
            Some(Effect::Everything(reason)) => {
                return Selection::everything(format!(
                    "{reason} (selection must be safe before it is small)"
                ));
            }
            Some(Effect::Packages(reached)) => {
                for (package, reason) in reached {
                    crate_level.entry(package).or_insert(reason);
                }
                continue;
            }
            None => {}
        }
        let category = categorize(path);
        let placed = graph.files.get(path);
        let owner = workspace.owner(path);
        let in_sources = owner.is_some_and(|owner| {
            let relative = path
                .strip_prefix(&format!("{}/", owner.dir))
                .unwrap_or(path);
            ["src/", "tests/", "benches/", "examples/"]
                .iter()
                .any(|d| relative.starts_with(d))
        });
        // Documentation beside the sources may still be read by a test at run time.
        if category == Category::Docs && placed.is_none() && !in_sources {
            continue;
        }
        let Some(owner) = owner else {
            outside.push(path.to_string());
            continue;
        };
        // A root package owns the whole repository, but a file beside its sources (a CI
        // workflow, a script) compiles into nothing unless a build script reads it or a
        // module includes it (then it is placed): it is outside the package's build.
        if placed.is_none()
            && !in_sources
            && !path.ends_with(".rs")
            && !has_build_script(&workspace.root, &owner.dir)
        {
            outside.push(path.to_string());
            continue;
        }
        match placed {
            Some(nodes) if !change.deleted => {
                if let Some(reason) = graph.opaque.get(&owner.name) {
                    crate_level.insert(
                        owner.name.clone(),
                        format!(
                            "{path} changed; the module graph of {} is not trusted: {reason}",
                            owner.name
                        ),
                    );
                    continue;
                }
                for id in innermost(graph, nodes, path, &change.lines) {
                    changed.insert(id);
                    changed_files.insert(id, path.to_string());
                }
            }
            // Its `mod` line and every user changed too, and those are placed.
            _ if change.deleted && path.ends_with(".rs") => notes.push(format!("{path}: deleted")),
            _ => {
                if !in_sources && !path.ends_with(".rs") {
                    return Selection::everything(format!(
                        "{path}: a file ({}) the module graph cannot place (selection must be safe before it is small)",
                        category.as_str()
                    ));
                }
                let what = if path.ends_with(".rs") {
                    "a Rust file in no module tree"
                } else {
                    "a data file no module includes"
                };
                crate_level.insert(
                    owner.name.clone(),
                    format!(
                        "{path}: {what}, so {} and its dependents at the crate level",
                        owner.name
                    ),
                );
            }
        }
    }

    for (file, nodes) in &graph.files {
        let Some(needle) = outside
            .iter()
            .find(|path| names_file(&workspace.root.join(file), path))
        else {
            continue;
        };
        for &id in nodes {
            if changed.insert(id) {
                changed_files.insert(id, format!("{file} (names {needle})"));
            }
        }
    }

    // Opaque packages: whole whenever anything they build on changed.
    let touched: BTreeSet<String> = changed
        .iter()
        .map(|&id| workspace.packages[graph.nodes[id].target.0].name.clone())
        .chain(crate_level.keys().cloned())
        .collect();
    for (package, reason) in &graph.opaque {
        if !crate_level.contains_key(package)
            && workspace
                .with_dependencies(package)
                .iter()
                .any(|p| touched.contains(p))
        {
            crate_level.insert(
                package.clone(),
                format!(
                    "{package}: its module graph is not trusted ({reason}), so the crate level"
                ),
            );
        }
    }
    let whole_names = workspace.with_dependents(&crate_level.keys().cloned().collect());
    let mut picked: BTreeMap<(String, String), Picked> = BTreeMap::new();
    for name in &whole_names {
        let reason = crate_level
            .get(name)
            .cloned()
            .unwrap_or_else(|| "depends on a package selected at the crate level".to_string());
        picked.insert(
            (name.clone(), "*".into()),
            (true, BTreeSet::new(), vec![reason]),
        );
    }
    for path in &outside {
        // CI and tooling configuration changes what the CI service does, not what a test
        // here reads or runs, unless it names it (the literals above).
        if matches!(
            categorize(path),
            Category::Infrastructure | Category::Tooling
        ) {
            continue;
        }
        for package in &workspace.packages {
            if whole_names.contains(&package.name) {
                continue;
            }
            for target in package
                .targets
                .iter()
                .filter(|t| t.kind == Kind::Test && t.tested)
            {
                let entry = picked
                    .entry((package.name.clone(), unit_key(target.kind, &target.name)))
                    .or_default();
                entry.0 = true;
                if entry.2.len() < 8 {
                    entry.2.push(format!(
                        "{path}: outside every package; integration tests may read or run it"
                    ));
                }
            }
        }
    }
    let reach = graph.reaching(&changed);
    for &id in reach.keys() {
        let node = &graph.nodes[id];
        let (p, t) = node.target;
        let package = &workspace.packages[p];
        if whole_names.contains(&package.name) {
            continue;
        }
        let target = &package.targets[t];
        let has_tests = node.facts.tests > 0 || node.facts.maybe_tests;
        let mut wanted: Vec<(String, Option<String>)> = Vec::new();
        if target.doctest && node.facts.doc_tests {
            wanted.push(("doc".into(), None));
        }
        match target.kind {
            _ if !target.tested => {}
            Kind::Test => wanted.push((unit_key(target.kind, &target.name), None)),
            Kind::Lib | Kind::Bin if has_tests && node.path.is_empty() => {
                wanted.push((unit_key(target.kind, &target.name), None))
            }
            Kind::Lib | Kind::Bin if has_tests => wanted.push((
                unit_key(target.kind, &target.name),
                Some(format!("{}::", node.path.join("::"))),
            )),
            _ => {}
        }
        for (key, filter) in wanted {
            let entry = picked.entry((package.name.clone(), key)).or_default();
            match filter {
                Some(filter) => {
                    entry.1.insert(filter);
                }
                None => entry.0 = true,
            }
            if entry.2.len() < 8 {
                entry
                    .2
                    .push(chain(workspace, graph, &reach, &changed_files, id));
            } else if entry.2.len() == 8 {
                entry.2.push("…".into());
            }
        }
    }
    let units: BTreeMap<(String, String), Unit> = picked
        .into_iter()
        .map(|((package, target), (whole, filters, reasons))| {
            let filters = if whole {
                Vec::new()
            } else {
                filters.into_iter().collect()
            };
            let unit = Unit {
                package: package.clone(),
                target: target.clone(),
                filters,
                skip: Vec::new(),
                reason: reasons.join("; "),
            };
            ((package, target), unit)
        })
        .collect();
    let (selected, total) = count(workspace, graph, &units);
    let units: Vec<Unit> = units.into_values().collect();
    let packages: BTreeSet<String> = units.iter().map(|u| u.package.clone()).collect();
    let mut reasons: Vec<String> = units
        .iter()
        .map(|u| {
            let scope = if u.filters.is_empty() {
                String::new()
            } else {
                format!(" [{}]", u.filters.join(" "))
            };
            format!("{} {}{scope}: {}", u.package, u.target, u.reason)
        })
        .collect();
    reasons.extend(notes);
    Selection {
        all: false,
        packages: packages.into_iter().collect(),
        units,
        selected_units: selected,
        total_units: total,
        reasons,
    }
}

/// Whether the package in `dir` has a build script (`build.rs`, or a `build =` key), which
/// may read any file of the package.
fn has_build_script(root: &Path, dir: &str) -> bool {
    let package = root.join(dir);
    if package.join("build.rs").exists() {
        return true;
    }
    std::fs::read_to_string(package.join("Cargo.toml")).map_or(true, |manifest| {
        manifest.lines().any(|line| {
            line.trim_start().starts_with("build ") || line.trim_start().starts_with("build=")
        })
    })
}

/// The unit key of a target: `lib`, `bin:NAME`, `test:NAME`.
/// Whether the source at `source` has a string literal naming `path` (relative to the
/// workspace root) or one of its directories.
fn names_file(source: &Path, path: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(source) else {
        return true;
    };
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let literals = text.split('"').skip(1).step_by(2);
    let mut needles: Vec<String> = vec![path.to_string()];
    needles.extend(components.iter().map(|c| c.to_string()));
    literals.into_iter().any(|literal| {
        needles
            .iter()
            .any(|needle| literal.contains(needle.as_str()))
    })
}

pub fn unit_key(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Lib => "lib".into(),
        Kind::Bin => format!("bin:{name}"),
        Kind::Test => format!("test:{name}"),
        Kind::Bench => format!("bench:{name}"),
        Kind::Example => format!("example:{name}"),
    }
}

/// The nodes of `file` holding the changed lines: per target, the innermost module around
/// each line; every module of the file when the lines are unknown.
fn innermost(
    graph: &Graph,
    nodes: &[NodeId],
    file: &str,
    lines: &[(usize, usize)],
) -> BTreeSet<NodeId> {
    let of_file: Vec<NodeId> = nodes
        .iter()
        .copied()
        .filter(|&id| graph.nodes[id].file == file)
        .collect();
    // Data files included by a module, or a file without line information.
    if of_file.is_empty() || lines.is_empty() {
        return nodes.iter().copied().collect();
    }
    let mut found = BTreeSet::new();
    for &(start, end) in lines {
        for line in start..=end.min(start + 5_000) {
            let mut best: BTreeMap<(usize, usize), NodeId> = BTreeMap::new();
            for &id in &of_file {
                let node = &graph.nodes[id];
                if node.lines.0 <= line && line <= node.lines.1 {
                    let span = node.lines.1 - node.lines.0;
                    let slot = best.entry(node.target).or_insert(id);
                    if span < graph.nodes[*slot].lines.1 - graph.nodes[*slot].lines.0 {
                        *slot = id;
                    }
                }
            }
            found.extend(best.into_values());
        }
    }
    found
}

/// "m → n → changed (file)" for the report.
fn chain(
    workspace: &Workspace,
    graph: &Graph,
    reach: &BTreeMap<NodeId, Option<NodeId>>,
    files: &BTreeMap<NodeId, String>,
    from: NodeId,
) -> String {
    let mut hops = vec![from];
    let mut current = from;
    while let Some(Some(next)) = reach.get(&current) {
        if hops.len() > 64 {
            break;
        }
        hops.push(*next);
        current = *next;
    }
    let last = *hops.last().unwrap_or(&from);
    let file = files.get(&last).cloned().unwrap_or_default();
    let name = |id: NodeId| graph.node_name(workspace, id);
    match hops.len() {
        1 => format!("{} changed ({file})", name(from)),
        2 => format!("{} uses {}, changed ({file})", name(from), name(last)),
        n => format!(
            "{} reaches {} in {} steps via {}, changed ({file})",
            name(from),
            name(last),
            n - 1,
            name(hops[1])
        ),
    }
}

/// (selected, total) test units: modules with tests of library and binary targets, test
/// targets, doc tests.
fn count(
    workspace: &Workspace,
    graph: &Graph,
    units: &BTreeMap<(String, String), Unit>,
) -> (usize, usize) {
    let mut selected = 0;
    let mut total = 0;
    let mut doc_libs = BTreeSet::new();
    for node in &graph.nodes {
        let (p, t) = node.target;
        let package = &workspace.packages[p];
        let target = &package.targets[t];
        if target.doctest && node.facts.doc_tests && doc_libs.insert(p) {
            total += 1;
            selected += usize::from(
                units.contains_key(&(package.name.clone(), "*".into()))
                    || units.contains_key(&(package.name.clone(), "doc".into())),
            );
        }
        let unit_here = match target.kind {
            _ if !target.tested => false,
            Kind::Test => node.path.is_empty(),
            Kind::Lib | Kind::Bin => node.facts.tests > 0 || node.facts.maybe_tests,
            _ => false,
        };
        if !unit_here {
            continue;
        }
        total += 1;
        let key = unit_key(target.kind, &target.name);
        let covered = units.get(&(package.name.clone(), "*".into())).is_some()
            || units.get(&(package.name.clone(), key)).is_some_and(|u| {
                let name = format!("{}::", node.path.join("::"));
                u.filters.is_empty() || u.filters.iter().any(|f| name.contains(f.as_str()))
            });
        selected += usize::from(covered);
    }
    (selected, total)
}

/// Selection for the workspace at `dir` and a commit's changes.
pub fn select(dir: &Path, changes: &[Change]) -> Result<Selection, String> {
    let workspace = Workspace::load(dir)?;
    let graph = Graph::build(&workspace);
    Ok(plan(&workspace, &graph, changes))
}
