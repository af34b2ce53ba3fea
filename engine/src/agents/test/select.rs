//! Change-based test selection: which tests a change can affect. Safe before small: anything
//! the agent cannot reason about (a lockfile, a build file, an unknown file type) selects
//! everything.
//!
//! For Rust workspaces the crate graph comes from `cargo metadata --no-deps` (offline): a
//! change in a crate selects the tests of that crate and of every workspace crate that depends
//! on it, directly or not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::agents::orchestrator::{Category, categorize};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// Run the whole suite.
    pub all: bool,
    /// Workspace packages whose tests run (when not `all`).
    pub packages: Vec<String>,
    /// Why each package (or everything) was selected.
    pub reasons: Vec<String>,
}

impl Selection {
    fn everything(reason: String) -> Selection {
        Selection { all: true, packages: Vec::new(), reasons: vec![reason] }
    }
}

struct Member {
    name: String,
    /// Directory relative to the workspace root ("" for a root package).
    dir: String,
    /// Names of workspace members it depends on by path.
    depends_on: Vec<String>,
}

fn members(workspace: &Path) -> Result<Vec<Member>, String> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(workspace)
        .no_deps()
        .other_options(vec!["--offline".to_string()])
        .exec()
        .map_err(|e| format!("cargo metadata failed in {}: {e}", workspace.display()))?;
    let root = metadata.workspace_root.as_std_path().to_path_buf();
    let member_ids: BTreeSet<_> = metadata.workspace_members.iter().collect();
    let packages: Vec<_> = metadata.packages.iter().filter(|p| member_ids.contains(&p.id)).collect();
    let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    Ok(packages
        .iter()
        .map(|package| {
            let dir = package
                .manifest_path
                .parent()
                .and_then(|d| d.as_std_path().strip_prefix(&root).ok())
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            let depends_on = package
                .dependencies
                .iter()
                .filter(|d| d.path.is_some() && names.contains(d.name.as_str()))
                .map(|d| d.name.clone())
                .collect();
            Member { name: package.name.to_string(), dir, depends_on }
        })
        .collect())
}

/// Selection for a Cargo workspace at `workspace`, given paths changed (relative to it).
pub fn select_rust(workspace: &Path, changed: &[String]) -> Result<Selection, String> {
    let members = members(workspace)?;
    select_from(&members, changed)
}

fn select_from(members: &[Member], changed: &[String]) -> Result<Selection, String> {
    let mut direct: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in changed {
        let owner = members
            .iter()
            .filter(|m| m.dir.is_empty() || path.starts_with(&format!("{}/", m.dir)))
            .max_by_key(|m| m.dir.len());
        let relative = owner.map_or(path.as_str(), |m| path.strip_prefix(&format!("{}/", m.dir)).unwrap_or(path));
        let category = categorize(path);
        match (owner, category) {
            (_, Category::Docs) => continue,
            (Some(member), Category::Code | Category::Tests | Category::Security | Category::Config)
                if ["src/", "tests/", "benches/", "examples/"].iter().any(|d| relative.starts_with(d)) =>
            {
                direct.entry(member.name.clone()).or_default().push(path.clone());
            }
            _ => {
                return Ok(Selection::everything(format!(
                    "{path}: a {} file the crate graph cannot place (selection must be safe before it is small)",
                    category.as_str()
                )));
            }
        }
    }
    // Every workspace crate that depends on a changed one, transitively.
    let mut selected: BTreeMap<String, String> = direct
        .iter()
        .map(|(name, paths)| (name.clone(), format!("{name}: changed ({})", paths.join(", "))))
        .collect();
    let mut frontier: Vec<String> = direct.keys().cloned().collect();
    while let Some(changed_crate) = frontier.pop() {
        for member in members.iter().filter(|m| m.depends_on.contains(&changed_crate)) {
            if !selected.contains_key(&member.name) {
                selected.insert(member.name.clone(), format!("{}: depends on {changed_crate}", member.name));
                frontier.push(member.name.clone());
            }
        }
    }
    Ok(Selection {
        all: false,
        packages: selected.keys().cloned().collect(),
        reasons: selected.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> Vec<Member> {
        let member = |name: &str, dir: &str, deps: &[&str]| Member {
            name: name.into(),
            dir: dir.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        };
        vec![
            member("core", "core", &[]),
            member("engine", "engine", &["core"]),
            member("cli", "cli", &["engine"]),
            member("models", "models", &[]),
        ]
    }

    fn select(paths: &[&str]) -> Selection {
        select_from(&workspace(), &paths.iter().map(|p| p.to_string()).collect::<Vec<_>>()).expect("selects")
    }

    #[test]
    fn a_change_selects_its_crate_and_everything_depending_on_it() {
        let selection = select(&["core/src/lib.rs"]);
        assert!(!selection.all);
        assert_eq!(selection.packages, ["cli", "core", "engine"]);
        assert_eq!(select(&["models/tests/gguf.rs"]).packages, ["models"]);
    }

    #[test]
    fn docs_select_nothing_and_unknowns_select_everything() {
        assert!(select(&["README.md"]).packages.is_empty());
        assert!(select(&["Cargo.lock"]).all);
        assert!(select(&["engine/Cargo.toml"]).all);
        assert!(select(&["engine/build.rs"]).all);
        assert!(select(&["scripts/deploy.sh", "core/src/lib.rs"]).all);
    }
}
