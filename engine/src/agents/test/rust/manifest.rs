//! What a change to the files that say how things build reaches: a lockfile, a package's
//! manifest, a build script. Safe before small, but no larger than what the change can touch:
//!
//! - `Cargo.lock`: the packages whose entries changed (added, removed, another version,
//!   checksum or dependency list) reach only the workspace members depending on them,
//!   directly or not (the lock's own dependency lists, before and after, dev-dependencies
//!   included); those members and their dependents are selected at the crate level.
//! - A member's `Cargo.toml` where only its descriptive `[package]` keys changed (its
//!   version, description, authors, keywords…): these reach the code only through the
//!   `CARGO_PKG_*` variables of that package's own compilation, so the modules of that package
//!   naming `CARGO_PKG_` are changed (a package with a build script, which may read them: the
//!   crate level). A workspace member's own entry in `Cargo.lock` follows its manifest and is
//!   compared without its version.
//! - A member's `Cargo.toml` where only what describes that package changed (other `[package]`
//!   keys, its target tables, `[lints]`, `[badges]`): that package and its dependents, at the
//!   crate level. Dependencies, features, `[workspace]`, `[patch]`,
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
    /// Only this member's `CARGO_PKG_*` values changed: the modules naming them, and why.
    PackageVariables(String, String),
}

/// `[package]` keys whose only way into the code is a `CARGO_PKG_*` variable of the package's
/// own compilation (or nowhere: what is published).
const DESCRIPTIVE: &[&str] = &[
    "version",
    "description",
    "documentation",
    "readme",
    "homepage",
    "repository",
    "license",
    "license-file",
    "keywords",
    "categories",
    "authors",
    "exclude",
    "include",
    "publish",
    "metadata",
];

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
            if descriptive_only(before, &after) && !has_build_script(workspace, &member.dir) {
                return Some(Effect::PackageVariables(
                    member.name.clone(),
                    format!(
                        "{path}: only descriptive keys of {} changed (its CARGO_PKG_* values)",
                        member.name
                    ),
                ));
            }
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

/// Whether the manifests differ, and only in descriptive `[package]` keys.
fn descriptive_only(before: &str, after: &str) -> bool {
    let strip = |text: &str| -> Option<toml::Table> {
        let mut table = text.parse::<toml::Table>().ok()?;
        if let Some(package) = table.get_mut("package").and_then(toml::Value::as_table_mut) {
            for key in DESCRIPTIVE {
                package.remove(*key);
            }
        }
        Some(table)
    };
    before != after && strip(before).is_some_and(|b| strip(after).is_some_and(|a| a == b))
}

/// Whether the member builds a build script (`build.rs`, or `package.build` names one).
fn has_build_script(workspace: &Workspace, dir: &str) -> bool {
    let root = workspace.root.join(dir);
    if root.join("build.rs").exists() {
        return true;
    }
    std::fs::read_to_string(root.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("package").and_then(|p| p.get("build")).cloned())
        .is_some_and(|build| build.as_bool() != Some(false))
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
    // A member's own entry follows its manifest (whose change is judged on its own): compared
    // without its version, and named without it in other entries' dependency lists.
    let members: BTreeSet<&str> = workspace.packages.iter().map(|p| p.name.as_str()).collect();
    let plain_key = |(name, version, source): &LockKey| -> LockKey {
        let member = source.is_empty() && members.contains(name.as_str());
        let version = if member {
            String::new()
        } else {
            version.clone()
        };
        (name.clone(), version, source.clone())
    };
    let normalized = |lock: &Lock| -> BTreeMap<LockKey, toml::Table> {
        lock.entries
            .iter()
            .map(|(key, table)| {
                let plain = plain_key(key);
                let mut table = table.clone();
                if plain.1.is_empty() {
                    table.remove("version");
                }
                if let Some(toml::Value::Array(list)) = table.get_mut("dependencies") {
                    for dependency in list.iter_mut() {
                        let Some(text) = dependency.as_str() else {
                            continue;
                        };
                        let name = text.split_whitespace().next().unwrap_or_default();
                        if members.contains(name) && !text.contains('(') {
                            *dependency = toml::Value::String(name.to_string());
                        }
                    }
                }
                (plain, table)
            })
            .collect()
    };
    let (plain_before, plain_after) = (normalized(&before), normalized(&after));
    let keys: BTreeSet<&LockKey> = before.entries.keys().chain(after.entries.keys()).collect();
    let changed: BTreeSet<LockKey> = keys
        .into_iter()
        .filter(|key| {
            let plain = plain_key(key);
            plain_before.get(&plain) != plain_after.get(&plain)
        })
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
        assert!(descriptive_only(base, &bumped));
        let described = base.replace("name = \"a\"\n", "name = \"a\"\ndescription = \"x\"\n");
        assert!(descriptive_only(base, &described));
        assert!(!descriptive_only(base, base));
        let edition = base.replace("[package]\n", "[package]\nedition = \"2021\"\n");
        assert!(!descriptive_only(base, &edition));
        assert!(!descriptive_only(base, &targets));
    }
}
