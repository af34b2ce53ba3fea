//! What a change to the files that say how things build reaches: a lockfile, a package's
//! manifest, a build script. Safe before small, but no larger than what the change can touch:
//!
//! - `Cargo.lock`: the packages whose entries changed (added, removed, another version,
//!   checksum or dependency list) reach only the workspace members depending on them,
//!   directly or not (the lock's own dependency lists, before and after, dev-dependencies
//!   included); those members and their dependents are selected at the crate level.
//! - A member's `Cargo.toml` where only what describes that package changed (`[package]`
//!   keys such as its version, its target tables, `[lints]`, `[badges]`): that package and its
//!   dependents, at the crate level. Dependencies, features, `[workspace]`, `[patch]`,
//!   profiles — anything that can move dependency resolution or feature unification for
//!   other members — select everything.
//! - A member's `build.rs` runs only when that package builds: that package and its
//!   dependents, at the crate level.
//! - A toolchain file, `.cargo/` configuration, a manifest that is no member's, an unreadable
//!   one: everything.

use std::collections::{BTreeMap, BTreeSet};

use super::diff::Change;
use super::workspace::Workspace;

/// What a build-defining change selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Everything, and why.
    Everything(String),
    /// These members (and, by the caller, their dependents) at the crate level: name → why.
    Packages(BTreeMap<String, String>),
}

/// Whether `path` defines how things build; `None` for any other file.
pub fn effect(workspace: &Workspace, change: &Change) -> Option<Effect> {
    let path = change.path.as_str();
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let everything = |why: &str| Some(Effect::Everything(format!("{path}: {why}")));
    if path.starts_with(".cargo/") || matches!(name, "rust-toolchain" | "rust-toolchain.toml") {
        return everything("changes how everything builds");
    }
    if !matches!(name, "Cargo.toml" | "Cargo.lock" | "build.rs") {
        return None;
    }
    let member = workspace.packages.iter().find(|p| p.dir == dir);
    match name {
        "Cargo.lock" if dir.is_empty() => {
            let Some(before) = change.before.as_deref().filter(|_| !change.deleted) else {
                return everything("a lockfile added or removed changes how everything builds");
            };
            let after = match std::fs::read_to_string(workspace.root.join(path)) {
                Ok(text) => text,
                Err(e) => return everything(&format!("unreadable ({e}), so everything")),
            };
            match lock_reach(workspace, before, &after) {
                Ok(reached) => Some(Effect::Packages(reached)),
                Err(e) => everything(&format!("{e}, so everything")),
            }
        }
        "Cargo.toml" => {
            let Some(member) = member else {
                return everything(
                    "a manifest of no member (the workspace's) changes how everything builds",
                );
            };
            let Some(before) = change.before.as_deref().filter(|_| !change.deleted) else {
                return everything("a manifest added or removed changes how everything builds");
            };
            let after = match std::fs::read_to_string(workspace.root.join(path)) {
                Ok(text) => text,
                Err(e) => return everything(&format!("unreadable ({e}), so everything")),
            };
            match package_local(before, &after) {
                Ok(true) => Some(Effect::Packages(BTreeMap::from([(
                    member.name.clone(),
                    format!(
                        "{path}: only what describes {} changed, so it and its dependents at the crate level",
                        member.name
                    ),
                )]))),
                Ok(false) => everything(
                    "its dependencies, features or workspace settings changed (resolution and feature unification may move for every member)",
                ),
                Err(e) => everything(&format!("{e}, so everything")),
            }
        }
        "build.rs" => match member {
            Some(member) => Some(Effect::Packages(BTreeMap::from([(
                member.name.clone(),
                format!(
                    "{path}: the build script of {}, so it and its dependents at the crate level",
                    member.name
                ),
            )]))),
            None => everything("a build script of no member"),
        },
        _ => everything("changes how everything builds"),
    }
}

/// Tables of a manifest that concern its own package only: a change there rebuilds that
/// package (and what depends on it), nothing else.
const PACKAGE_LOCAL: &[&str] = &[
    "package", "lib", "bin", "test", "bench", "example", "badges", "lints",
];

/// `[package]` keys that reach beyond the package.
const PACKAGE_GLOBAL: &[&str] = &["resolver", "workspace"];

/// Whether only package-local parts of a manifest differ between `before` and `after`.
fn package_local(before: &str, after: &str) -> Result<bool, String> {
    let parse = |text: &str, which: &str| {
        text.parse::<toml::Table>().map_err(|e| {
            format!(
                "the manifest {which} the commit does not parse ({})",
                e.message()
            )
        })
    };
    let mut before = parse(before, "before")?;
    let mut after = parse(after, "after")?;
    let global = |table: &toml::Table| -> Vec<Option<toml::Value>> {
        let package = table.get("package").and_then(toml::Value::as_table);
        PACKAGE_GLOBAL
            .iter()
            .map(|key| package.and_then(|p| p.get(*key)).cloned())
            .collect()
    };
    if global(&before) != global(&after) {
        return Ok(false);
    }
    for key in PACKAGE_LOCAL {
        before.remove(*key);
        after.remove(*key);
    }
    Ok(before == after)
}

/// One `[[package]]` of a lockfile: (name, version, source).
type LockKey = (String, String, String);

struct Lock {
    entries: BTreeMap<LockKey, toml::Table>,
    /// Entry → the entries it depends on.
    dependencies: BTreeMap<LockKey, Vec<LockKey>>,
}

fn read_lock(text: &str, which: &str) -> Result<Lock, String> {
    let table = text.parse::<toml::Table>().map_err(|e| {
        format!(
            "Cargo.lock {which} the commit does not parse ({})",
            e.message()
        )
    })?;
    let mut entries = BTreeMap::new();
    let empty = Vec::new();
    let packages = match table.get("package") {
        Some(toml::Value::Array(packages)) => packages,
        None => &empty,
        Some(_) => {
            return Err(format!(
                "Cargo.lock {which} the commit: `package` is not an array"
            ));
        }
    };
    for package in packages {
        let Some(package) = package.as_table() else {
            return Err(format!(
                "Cargo.lock {which} the commit: a package that is not a table"
            ));
        };
        let field = |key: &str| {
            package
                .get(key)
                .and_then(toml::Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let name = field("name");
        if name.is_empty() {
            return Err(format!(
                "Cargo.lock {which} the commit: a package without a name"
            ));
        }
        entries.insert((name, field("version"), field("source")), package.clone());
    }
    let mut dependencies = BTreeMap::new();
    for (key, package) in &entries {
        let listed = package
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut resolved = Vec::new();
        for dependency in listed.iter().filter_map(toml::Value::as_str) {
            // `name`, `name version` or `name version (source)`.
            let mut words = dependency.split_whitespace();
            let name = words.next().unwrap_or_default();
            let version = words.next();
            resolved.extend(
                entries
                    .keys()
                    .filter(|(n, v, _)| n == name && version.is_none_or(|version| v == version))
                    .cloned(),
            );
        }
        dependencies.insert(key.clone(), resolved);
    }
    Ok(Lock {
        entries,
        dependencies,
    })
}

/// Members whose dependency closure holds a lock entry the commit changed, with why.
fn lock_reach(
    workspace: &Workspace,
    before: &str,
    after: &str,
) -> Result<BTreeMap<String, String>, String> {
    let before = read_lock(before, "before")?;
    let after = read_lock(after, "after")?;
    let keys: BTreeSet<&LockKey> = before.entries.keys().chain(after.entries.keys()).collect();
    let changed: BTreeSet<LockKey> = keys
        .into_iter()
        .filter(|key| before.entries.get(*key) != after.entries.get(*key))
        .cloned()
        .collect();
    let mut reached = BTreeMap::new();
    for lock in [&before, &after] {
        for member in &workspace.packages {
            if reached.contains_key(&member.name) {
                continue;
            }
            let Some(start) = lock
                .entries
                .keys()
                .find(|(name, _, source)| *name == member.name && source.is_empty())
            else {
                continue;
            };
            // Depth-first through the member's dependencies to a changed entry.
            let mut seen = BTreeSet::from([start.clone()]);
            let mut frontier = vec![start.clone()];
            while let Some(key) = frontier.pop() {
                if changed.contains(&key) {
                    reached.insert(
                        member.name.clone(),
                        format!(
                            "Cargo.lock: {} {} changed, which {} builds on, so it and its dependents at the crate level",
                            key.0, key.1, member.name
                        ),
                    );
                    break;
                }
                for next in lock.dependencies.get(&key).into_iter().flatten() {
                    if seen.insert(next.clone()) {
                        frontier.push(next.clone());
                    }
                }
            }
        }
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_metadata_is_local_and_dependencies_are_not() {
        let base =
            "[package]\nname = \"a\"\nversion = \"0.1.0\"\n\n[dependencies]\nlibc = \"0.2\"\n";
        let bumped = base.replace("0.1.0", "0.1.1");
        assert_eq!(package_local(base, &bumped), Ok(true));
        let targets = format!("{base}\n[[test]]\nname = \"x\"\nharness = false\n");
        assert_eq!(package_local(base, &targets), Ok(true));
        let dependency = base.replace("0.2", "0.3");
        assert_eq!(package_local(base, &dependency), Ok(false));
        let features = format!("{base}\n[features]\nx = []\n");
        assert_eq!(package_local(base, &features), Ok(false));
        let resolver = base.replace("[package]\n", "[package]\nresolver = \"2\"\n");
        assert_eq!(package_local(base, &resolver), Ok(false));
        assert!(package_local(base, "[package\n").is_err());
    }
}
