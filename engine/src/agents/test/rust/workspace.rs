//! The Cargo workspace as selection sees it: members, their directories, their path
//! dependencies on each other (normal, dev and build) and their targets, from
//! `cargo metadata --no-deps --offline` (no network, no dependency resolution).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cargo_metadata::TargetKind;
use serde::Serialize;

/// What kind of target a test binary is built from, as cargo's target flags name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lib,
    Bin,
    Test,
    Bench,
    Example,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
    /// Absolute path of the crate root file.
    pub root: PathBuf,
    /// `cargo test` builds and runs it by default.
    pub tested: bool,
    pub doctest: bool,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    /// Directory relative to the workspace root ("" for a root package).
    pub dir: String,
    /// Workspace members it depends on by path, any dependency kind.
    pub depends_on: Vec<String>,
    /// `alias = { package = "name", … }` renames of workspace dependencies: (alias, package).
    pub renames: Vec<(String, String)>,
    /// The identifier its library is named by in code (`cairn_engine`), if it has one.
    pub lib_ident: Option<String>,
    pub targets: Vec<Target>,
    pub proc_macro: bool,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub packages: Vec<Package>,
}

impl Workspace {
    /// Reads the workspace at `dir` through `cargo metadata`.
    pub fn load(dir: &Path) -> Result<Workspace, String> {
        let metadata = cargo_metadata::MetadataCommand::new()
            .current_dir(dir)
            .no_deps()
            .other_options(vec!["--offline".to_string()])
            .exec()
            .map_err(|e| format!("cargo metadata failed in {}: {e}", dir.display()))?;
        let root = metadata.workspace_root.as_std_path().to_path_buf();
        let member_ids: BTreeSet<_> = metadata.workspace_members.iter().collect();
        let members: Vec<_> = metadata
            .packages
            .iter()
            .filter(|p| member_ids.contains(&p.id))
            .collect();
        let names: BTreeSet<&str> = members.iter().map(|p| p.name.as_str()).collect();
        let packages = members
            .iter()
            .map(|package| {
                let dir = package
                    .manifest_path
                    .parent()
                    .and_then(|d| d.as_std_path().strip_prefix(&root).ok())
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut depends_on: Vec<String> = package
                    .dependencies
                    .iter()
                    .filter(|d| d.path.is_some() && names.contains(d.name.as_str()))
                    .map(|d| d.name.clone())
                    .collect();
                let renames = package
                    .dependencies
                    .iter()
                    .filter(|d| d.path.is_some() && names.contains(d.name.as_str()))
                    .filter_map(|d| {
                        d.rename
                            .as_ref()
                            .map(|alias| (alias.replace('-', "_"), d.name.clone()))
                    })
                    .collect();
                depends_on.sort();
                depends_on.dedup();
                let mut lib_ident = None;
                let mut proc_macro = false;
                let mut targets = Vec::new();
                for target in &package.targets {
                    let kind = if target.kind.iter().any(|k| {
                        matches!(
                            k,
                            TargetKind::Lib
                                | TargetKind::RLib
                                | TargetKind::DyLib
                                | TargetKind::CDyLib
                                | TargetKind::StaticLib
                                | TargetKind::ProcMacro
                        )
                    }) {
                        proc_macro |= target.kind.contains(&TargetKind::ProcMacro);
                        lib_ident = Some(target.name.replace('-', "_"));
                        Kind::Lib
                    } else if target.kind.contains(&TargetKind::Bin) {
                        Kind::Bin
                    } else if target.kind.contains(&TargetKind::Test) {
                        Kind::Test
                    } else if target.kind.contains(&TargetKind::Bench) {
                        Kind::Bench
                    } else if target.kind.contains(&TargetKind::Example) {
                        Kind::Example
                    } else {
                        continue; // build scripts: a change to one selects everything anyway
                    };
                    let tested = target.test && matches!(kind, Kind::Lib | Kind::Bin | Kind::Test);
                    targets.push(Target {
                        kind,
                        name: target.name.clone(),
                        root: target.src_path.as_std_path().to_path_buf(),
                        tested,
                        doctest: target.doctest && kind == Kind::Lib,
                    });
                }
                Package {
                    name: package.name.to_string(),
                    dir,
                    depends_on,
                    renames,
                    lib_ident,
                    targets,
                    proc_macro,
                }
            })
            .collect();
        Ok(Workspace { root, packages })
    }

    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// The member whose directory holds `path` (relative to the root), the deepest one.
    pub fn owner(&self, path: &str) -> Option<&Package> {
        self.packages
            .iter()
            .filter(|p| p.dir.is_empty() || path.starts_with(&format!("{}/", p.dir)))
            .max_by_key(|p| p.dir.len())
    }

    /// `names` and every member depending on one of them, directly or not.
    pub fn with_dependents(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut all = names.clone();
        let mut frontier: Vec<String> = names.iter().cloned().collect();
        while let Some(name) = frontier.pop() {
            for package in self
                .packages
                .iter()
                .filter(|p| p.depends_on.contains(&name))
            {
                if all.insert(package.name.clone()) {
                    frontier.push(package.name.clone());
                }
            }
        }
        all
    }

    /// `name` and every member it depends on, directly or not.
    pub fn with_dependencies(&self, name: &str) -> BTreeSet<String> {
        let mut all = BTreeSet::from([name.to_string()]);
        let mut frontier = vec![name.to_string()];
        while let Some(name) = frontier.pop() {
            for dependency in self
                .package(&name)
                .map(|p| p.depends_on.clone())
                .unwrap_or_default()
            {
                if all.insert(dependency.clone()) {
                    frontier.push(dependency);
                }
            }
        }
        all
    }
}
