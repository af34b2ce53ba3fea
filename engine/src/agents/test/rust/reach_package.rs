//! The reach of a release commit's files: a package's version in `Cargo.toml` and
//! `Cargo.lock`, and Markdown documents.
//!
//! A new version changes what `env!("CARGO_PKG_VERSION")` and its kin give, nothing else: the
//! units whose string literals name `CARGO_PKG` (or the manifest itself) are reached, and the
//! tests that read sources at run time. It cannot be told (`None`) where the version can be
//! read unseen: a build script anywhere in the repository, or a dependency whose sources name
//! `CARGO_PKG` (a macro such as clap's `crate_version!` expands into our code; a derive may
//! write the read for us). A Markdown document reaches only what reads files or sources at run
//! time; with a build script (skeptic writes tests from a README) it cannot be told either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::exec::git;

/// The marker `items.rs` puts among a unit's mentions when one of its string literals names
/// the package's description (`CARGO_PKG_…`, `Cargo.toml`, `Cargo.lock`); never an identifier.
pub const READS_PACKAGE: &str = "\"CARGO_PKG\"";

/// Identifiers of code reading files at run time: a unit mentioning one is reached by a
/// changed document.
pub const READS_FILES: &[&str] = &[
    "fs",
    "File",
    "read_to_string",
    "read_dir",
    "OpenOptions",
    "Command",
];

/// What a non-Rust file's change is, where it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Only the version of a workspace package.
    Version,
    /// A Markdown document.
    Document,
}

/// Whether the change of `path` from `from` to `to` is one a release makes.
pub fn release_change(dir: &Path, from: &str, to: &str, path: &str) -> Option<Release> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with(".md") {
        return Some(Release::Document);
    }
    let old = git(dir, &["show", &format!("{from}:{path}")]).ok()?;
    let new = git(dir, &["show", &format!("{to}:{path}")]).ok()?;
    let (mut old, mut new) = (
        old.parse::<toml::Table>().ok()?,
        new.parse::<toml::Table>().ok()?,
    );
    match name {
        "Cargo.toml" => {
            for table in [&mut old, &mut new] {
                if let Some(package) = table.get_mut("package").and_then(toml::Value::as_table_mut)
                {
                    package.remove("version");
                }
                // A version the members inherit (`version.workspace = true`).
                if let Some(shared) = table
                    .get_mut("workspace")
                    .and_then(|w| w.get_mut("package"))
                    .and_then(toml::Value::as_table_mut)
                {
                    shared.remove("version");
                }
            }
        }
        "Cargo.lock" => {
            // Workspace members are the entries without a source.
            for table in [&mut old, &mut new] {
                let packages = table
                    .get_mut("package")
                    .and_then(toml::Value::as_array_mut)?;
                for package in packages.iter_mut().filter_map(toml::Value::as_table_mut) {
                    if !package.contains_key("source") {
                        package.remove("version");
                    }
                }
            }
        }
        _ => return None,
    }
    (old == new).then_some(Release::Version)
}

/// Whether a build script exists anywhere in the repository at `commit`.
pub fn has_build_script(dir: &Path, commit: &str) -> Option<bool> {
    let listing = git(
        dir,
        &["ls-tree", "-r", "--name-only", "--full-tree", commit],
    )
    .ok()?;
    let mut found = false;
    for path in listing.lines() {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name == "build.rs" {
            found = true;
        } else if name == "Cargo.toml" {
            let text = git(dir, &["show", &format!("{commit}:{path}")]).ok()?;
            let table = text.parse::<toml::Table>().ok()?;
            found |= table
                .get("package")
                .and_then(|p| p.get("build"))
                .is_some_and(|b| b.as_bool() != Some(false));
        }
    }
    Some(found)
}

/// Whether any dependency the checkout at `dir` builds with on this machine names `CARGO_PKG`
/// in its sources (build scripts aside: they read their own package). `cargo metadata` (this
/// host's platform; it resolves and writes `Cargo.lock` as a build would where none is
/// committed) says which packages those are and where their sources lie; `None` when it
/// cannot (sources not at hand offline).
pub fn dependencies_read_package(
    dir: &Path,
    scanned: &mut BTreeMap<PathBuf, bool>,
) -> Option<bool> {
    let host = host_triple()?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(dir)
        .other_options(vec!["--filter-platform".to_string(), host])
        .exec()
        .ok()?;
    let members: BTreeSet<_> = metadata.workspace_members.iter().collect();
    for package in metadata
        .packages
        .iter()
        .filter(|p| !members.contains(&p.id))
    {
        let folder = package.manifest_path.parent()?.as_std_path().to_path_buf();
        let proc_macro = package
            .targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k.to_string() == "proc-macro"));
        let reads = match scanned.get(&folder) {
            Some(reads) => *reads,
            None => {
                let reads = names_package(&folder, proc_macro)?;
                scanned.insert(folder, reads);
                reads
            }
        };
        if reads {
            return Some(true);
        }
    }
    Some(false)
}

/// This machine's target triple, as `rustc -vV` names it.
fn host_triple() -> Option<String> {
    let output = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
}

/// Whether code expanded in a dependant could name `CARGO_PKG`: any mention in a procedural
/// macro's sources, or one inside a `macro_rules!` definition (or an item syn cannot read) of
/// another package. A package naming its own version elsewhere (in its documentation, its
/// messages) reads only its own.
fn names_package(folder: &Path, proc_macro: bool) -> Option<bool> {
    let mut pending = vec![folder.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).ok()? {
            let path = entry.ok()?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.file_name().is_some_and(|n| n == "build.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.contains("CARGO_PKG") {
                continue;
            }
            let in_macro = || -> bool {
                let Ok(file) = syn::parse_file(&text) else {
                    return true;
                };
                let mut finder = MacroReads::default();
                syn::visit::Visit::visit_file(&mut finder, &file);
                finder.found
            };
            if proc_macro || in_macro() {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// Finds `CARGO_PKG` in a `macro_rules!` definition or an item syn keeps as raw tokens.
#[derive(Default)]
struct MacroReads {
    found: bool,
}

impl<'ast> syn::visit::Visit<'ast> for MacroReads {
    fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
        if item.ident.is_some() {
            self.found |= item.mac.tokens.to_string().contains("CARGO_PKG");
        }
    }

    fn visit_item(&mut self, item: &'ast syn::Item) {
        if let syn::Item::Verbatim(tokens) = item {
            self.found |= tokens.to_string().contains("CARGO_PKG");
        }
        syn::visit::visit_item(self, item);
    }
}
