//! The reach of a change at the item level: which units (`items.rs`) of the older version a
//! test must have executed for the change to be able to alter what it does. Per-test coverage
//! then leaves out every test that executed none of them (`per_test.rs`).
//!
//! A changed line belongs to the innermost unit spanning it, on its side of the diff. Then:
//! - a function changed on both sides reaches the tests that executed it: coverage sees every
//!   call, however it is made;
//! - everything else also reaches through its names, which coverage does not see: a type, a
//!   field, a variant, a constant, an import, a macro or a `const fn` (evaluated at compile
//!   time), a function added or removed (a new method may now be the one a call resolves to),
//!   a container's header (the `impl`'s methods may now apply elsewhere). Every unit of the
//!   repository that mentions one of those names is reached too, and a reached unit that
//!   defines names (a type holding a changed type, a constant computed from a changed one)
//!   adds its own, until nothing new is reached;
//! - a changed container reaches everything inside it.
//!
//! Names are compared as identifiers, whatever they resolve to: two items named alike in
//! different modules are one name here, which only ever reaches more. Tests that read the
//! sources themselves (trybuild, version-sync, `include_str!`) are reached by every change.
//!
//! A release's version and documents reach what reads them (`reach_package.rs`).
//!
//! `None` where the reach cannot be told: any other change outside Rust sources (a manifest's
//! dependencies, a data file), a binary or unparsable file, a changed line outside every item (an inner
//! attribute), a build script or a procedural-macro crate (they run inside the compiler).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::items::{Field, Kind, PLACED, Unit, accessed, called, innermost, is_name, units_of};
use super::reach_package::{
    READS_FILES, READS_PACKAGE, Release, dependencies_read_package, has_build_script,
    release_change,
};
use crate::exec::git;

/// What a change reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// File → keys of the units a test must have executed to be reached (older side).
    pub units: BTreeMap<String, BTreeSet<String>>,
    /// The names it reached through, anywhere in the repository.
    pub names: BTreeSet<String>,
    /// Private field names it reached through → the files whose modules can name them.
    pub local: BTreeMap<String, BTreeSet<String>>,
}

/// Identifiers naming code that reads source files at run time: a unit mentioning one is
/// reached by every change.
const READS_SOURCES: &[&str] = &[
    "trybuild",
    "compiletest_rs",
    "ui_test",
    "version_sync",
    "include_str",
    "include_bytes",
    "include",
    "CARGO_MANIFEST_DIR",
];

/// One version of a Rust file, parsed once: its units and the lines its tokens cover.
#[derive(Default)]
pub struct Source {
    pub units: Vec<Unit>,
    lines: TokenLines,
}

impl Source {
    fn parse(text: &str) -> Option<Source> {
        let file = syn::parse_file(text).ok()?;
        let mut lines = TokenLines::default();
        lines.walk(quote::ToTokens::to_token_stream(&file));
        Some(Source {
            units: units_of(&file),
            lines,
        })
    }
}

/// Parsed files by blob id, shared by every question about one repository.
#[derive(Default)]
pub struct Parsed {
    blobs: BTreeMap<(String, String), Option<String>>,
    /// Dependency folders → whether their sources name `CARGO_PKG`.
    scanned: BTreeMap<PathBuf, bool>,
    by_blob: BTreeMap<String, Option<Rc<Source>>>,
}

impl Parsed {
    /// `path` at `commit`; `None` when the file is missing or does not parse.
    pub fn at(&mut self, dir: &Path, commit: &str, path: &str) -> Option<Rc<Source>> {
        let blob = self
            .blobs
            .entry((commit.to_string(), path.to_string()))
            .or_insert_with(|| {
                git(
                    dir,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{commit}:{path}"),
                    ],
                )
                .ok()
                .map(|b| b.trim().to_string())
            })
            .clone()?;
        self.blob(dir, &blob)
    }

    fn blob(&mut self, dir: &Path, blob: &str) -> Option<Rc<Source>> {
        self.by_blob
            .entry(blob.to_string())
            .or_insert_with(|| {
                let text = git(dir, &["cat-file", "blob", blob]).ok()?;
                Source::parse(&text).map(Rc::new)
            })
            .clone()
    }
}

/// One file of a `-U0` diff: the changed lines of each side with their text.
#[derive(Default)]
struct FileDiff {
    /// From `diff --git a/X b/Y`: the path when no `---`/`+++` lines follow (a mode change,
    /// an empty file).
    header: String,
    old_path: Option<String>,
    new_path: Option<String>,
    /// A path git quoted (unusual characters): not read, so the reach is not told.
    quoted: bool,
    binary: bool,
    removed: Vec<(usize, String)>,
    added: Vec<(usize, String)>,
}

fn parse_diff(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let (mut old_line, mut new_line) = (0usize, 0usize);
    for line in diff.lines() {
        if let Some(paths) = line.strip_prefix("diff --git ") {
            files.push(FileDiff {
                header: paths
                    .strip_prefix("a/")
                    .and_then(|rest| rest.split(" b/").next())
                    .unwrap_or("")
                    .to_string(),
                quoted: paths.starts_with('"'),
                ..FileDiff::default()
            });
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if let Some(path) = line.strip_prefix("--- ") {
            file.old_path = path.strip_prefix("a/").map(str::to_string);
            file.quoted |= path.starts_with('"');
        } else if let Some(path) = line.strip_prefix("+++ ") {
            file.new_path = path.strip_prefix("b/").map(str::to_string);
            file.quoted |= path.starts_with('"');
        } else if line.starts_with("Binary files ") {
            file.binary = true;
        } else if let Some(rest) = line.strip_prefix("@@ ") {
            let start = |sign: char| -> usize {
                rest.split_whitespace()
                    .find_map(|p| p.strip_prefix(sign))
                    .and_then(|p| p.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            (old_line, new_line) = (start('-'), start('+'));
        } else if let Some(text) = line.strip_prefix('-') {
            file.removed.push((old_line, text.to_string()));
            old_line += 1;
        } else if let Some(text) = line.strip_prefix('+') {
            file.added.push((new_line, text.to_string()));
            new_line += 1;
        }
    }
    files
}

/// What a changed line is to the reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Blank, a plain comment, or inner documentation (`//!`, only doc tests read it).
    Nothing,
    /// Outer documentation of the item below it.
    Documentation,
    Code,
}

/// The lines of a file that tokens cover, and those inside a literal spanning several lines
/// (a `//` or `///` there is text of a string, not a comment).
#[derive(Default)]
struct TokenLines {
    covered: BTreeSet<usize>,
    in_long_literal: BTreeSet<usize>,
}

impl TokenLines {
    fn walk(&mut self, tokens: proc_macro2::TokenStream) {
        for tree in tokens {
            let (start, end) = (tree.span().start().line, tree.span().end().line);
            match tree {
                proc_macro2::TokenTree::Group(group) => {
                    self.covered.insert(group.span_open().start().line);
                    self.covered.insert(group.span_close().end().line);
                    self.walk(group.stream());
                }
                proc_macro2::TokenTree::Literal(_) if end > start => {
                    self.covered.extend(start..=end);
                    self.in_long_literal.extend(start..=end);
                }
                _ => {
                    self.covered.extend(start..=end);
                }
            }
        }
    }

    fn classify(&self, line: usize, text: &str) -> Line {
        let text = text.trim();
        if !self.covered.contains(&line) {
            Line::Nothing
        } else if self.in_long_literal.contains(&line) {
            Line::Code
        } else if text.starts_with("//!") || text.starts_with("#![doc") {
            Line::Nothing
        } else if text.starts_with("///") || text.starts_with("#[doc") {
            Line::Documentation
        } else {
            Line::Code
        }
    }
}

/// Whether `path` is a build script or lies in a procedural-macro package at `commit`.
fn runs_in_the_compiler(dir: &Path, commit: &str, path: &str) -> bool {
    let mut folder = Path::new(path).parent();
    while let Some(current) = folder {
        let manifest = if current.as_os_str().is_empty() {
            "Cargo.toml".to_string()
        } else {
            format!("{}/Cargo.toml", current.display())
        };
        if let Ok(text) = git(dir, &["show", &format!("{commit}:{manifest}")]) {
            let relative = Path::new(path)
                .strip_prefix(current)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            return relative == "build.rs"
                || compact.contains(&format!("build=\"{relative}\""))
                || compact.contains("proc-macro=true")
                || compact.contains("proc_macro=true");
        }
        folder = current.parent();
    }
    false
}

/// What the change from `from` to `to` can reach, or `None` where it cannot be told. A
/// version change asks `cargo metadata` in `dir`'s working tree for the dependencies, so that
/// tree should be at `to` (or share its lockfile).
pub fn reach(dir: &Path, from: &str, to: &str, parsed: &mut Parsed) -> Option<Reach> {
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
    let mut reach = Reach::default();
    let (mut version, mut document) = (false, false);
    for file in parse_diff(&diff) {
        if file.binary || file.quoted {
            return None;
        }
        if file.old_path.is_none() && file.new_path.is_none() {
            // No lines changed: a mode change or an empty file, harmless only in Rust sources.
            if file.header.ends_with(".rs") {
                continue;
            }
            return None;
        }
        let path = file
            .new_path
            .as_deref()
            .or(file.old_path.as_deref())
            .unwrap_or("");
        if !path.ends_with(".rs") {
            match release_change(dir, from, to, path)? {
                Release::Version => version = true,
                Release::Document => document = true,
            }
            continue;
        }
        for (path, commit) in [(&file.old_path, from), (&file.new_path, to)] {
            if path
                .as_deref()
                .is_some_and(|p| runs_in_the_compiler(dir, commit, p))
            {
                return None;
            }
        }
        // A side the file is missing from is empty.
        let side = |parsed: &mut Parsed, commit: &str, path: &Option<String>| match path {
            Some(path) => parsed.at(dir, commit, path),
            None => Some(Rc::new(Source::default())),
        };
        let old = side(parsed, from, &file.old_path)?;
        let new = side(parsed, to, &file.new_path)?;
        let old_path = file.old_path.as_deref().unwrap_or("");
        let old_units = old.units.as_slice();
        // Changed units by key, and whether every changed line of theirs is documentation.
        let mut changed: BTreeMap<&str, bool> = BTreeMap::new();
        for (units, tokens, lines) in [
            (old_units, &old.lines, &file.removed),
            (new.units.as_slice(), &new.lines, &file.added),
        ] {
            for (line, text) in lines {
                let kind = tokens.classify(*line, text);
                if kind == Line::Nothing {
                    continue;
                }
                let key = innermost(units, *line)?.key.as_str();
                let docs = changed.entry(key).or_insert(true);
                *docs &= kind == Line::Documentation;
            }
        }
        let scope = file.new_path.as_deref().unwrap_or(old_path);
        for (key, docs) in changed {
            let before = old_units.iter().find(|u| u.key == key);
            let after = new.units.iter().find(|u| u.key == key);
            // A function changed on both sides, or documentation alone (no type, no name
            // resolution changes), is reached through coverage alone.
            let through_coverage = docs
                || matches!(
                    (before.map(|u| u.kind), after.map(|u| u.kind)),
                    (Some(Kind::Function), Some(Kind::Function))
                );
            if !through_coverage {
                if matches!(
                    (before.map(|u| u.kind), after.map(|u| u.kind)),
                    (Some(Kind::ModuleFile), Some(_)) | (Some(_), Some(Kind::ModuleFile))
                ) {
                    return None;
                }
                for (unit, units) in [(before, old_units), (after, new.units.as_slice())] {
                    let Some(unit) = unit else { continue };
                    if unit.private {
                        for name in &unit.defines {
                            let scopes = reach.local.entry(name.clone()).or_default();
                            scopes.insert(scope.to_string());
                        }
                    } else {
                        reach.names.extend(unit.defines.iter().cloned());
                    }
                    match unit.kind {
                        // What every name it mentions resolves to may have changed.
                        Kind::Import => reach.names.extend(unit.mentions.iter().cloned()),
                        // What it holds may have appeared, gone or moved.
                        Kind::Container => reach.names.extend(
                            units
                                .iter()
                                .filter(|u| unit.start <= u.start && u.end <= unit.end)
                                .flat_map(|u| u.defines.iter().cloned()),
                        ),
                        _ => {}
                    }
                }
                for field in changed_fields(before, after) {
                    if field.variant {
                        reach.names.insert(field.name.clone());
                        reach.names.insert(called(&field.name));
                    } else if field.private {
                        reach
                            .local
                            .entry(accessed(&field.name))
                            .or_default()
                            .insert(scope.to_string());
                    } else {
                        reach.names.insert(accessed(&field.name));
                    }
                }
            }
            if let Some(unit) = before {
                let keys = reach.units.entry(old_path.to_string()).or_default();
                keys.insert(unit.key.clone());
                if unit.kind == Kind::Container {
                    keys.extend(
                        old_units
                            .iter()
                            .filter(|u| unit.start <= u.start && u.end <= unit.end)
                            .map(|u| u.key.clone()),
                    );
                }
            }
        }
    }
    if (version || document) && (has_build_script(dir, from)? || has_build_script(dir, to)?) {
        return None;
    }
    if version {
        if dependencies_read_package(dir, &mut parsed.scanned)? {
            return None;
        }
        reach.names.insert(READS_PACKAGE.to_string());
    }
    if document {
        reach
            .names
            .extend(READS_FILES.iter().map(|s| s.to_string()));
    }
    close_over_names(dir, from, parsed, &mut reach)?;
    Some(reach)
}

/// The fields that differ between two versions of a struct: added, removed or changed.
fn changed_fields<'u>(before: Option<&'u Unit>, after: Option<&'u Unit>) -> Vec<&'u Field> {
    let old = before.map_or(&[][..], |u| u.fields.as_slice());
    let new = after.map_or(&[][..], |u| u.fields.as_slice());
    let differs = |field: &Field, other: &[Field]| !other.contains(field);
    old.iter()
        .filter(|f| differs(f, new))
        .chain(new.iter().filter(|f| differs(f, old)))
        .collect()
}

/// Whether `path` lies in the module of `file` or a module inside it (where a private field
/// of `file` can be named).
fn in_module_of(file: &str, path: &str) -> bool {
    if path == file {
        return true;
    }
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    let inside = if matches!(name, "lib.rs" | "main.rs" | "mod.rs") {
        dir.to_string()
    } else {
        file.trim_end_matches(".rs").to_string()
    };
    inside.is_empty() || path.starts_with(&format!("{inside}/"))
}

/// Reaches every unit at `commit` that mentions one of the reached names, adding the names
/// that reached non-functions define, until nothing changes.
fn close_over_names(
    dir: &Path,
    commit: &str,
    parsed: &mut Parsed,
    reach: &mut Reach,
) -> Option<()> {
    let listing = git(dir, &["ls-tree", "-r", "--full-tree", commit]).ok()?;
    let mut sources: Vec<(String, Rc<Source>)> = Vec::new();
    for entry in listing.lines() {
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        let Some(blob) = meta.split_whitespace().nth(2) else {
            continue;
        };
        if !path.ends_with(".rs") {
            continue;
        }
        let source = match parsed.blob(dir, blob) {
            Some(source) => source,
            // A file that does not parse (a compile-fail fixture, newer syntax): every
            // identifier in it is a mention and a definition of one unit spanning it all.
            None => Rc::new(Source {
                units: vec![opaque(dir, blob)?],
                ..Source::default()
            }),
        };
        sources.push((path.to_string(), source));
    }
    let files: Vec<(&str, &[Unit])> = sources
        .iter()
        .map(|(path, source)| (path.as_str(), source.units.as_slice()))
        .collect();
    let mut names = std::mem::take(&mut reach.names);
    names.extend(READS_SOURCES.iter().map(|s| s.to_string()));
    // A module file given another place (`#[path]`) or code pasted in (`include!`) puts
    // private names where their module's files are not: then every name is everyone's.
    let displaced = files
        .iter()
        .flat_map(|(_, units)| units.iter())
        .any(|u| u.mentions.contains("include") || u.mentions.contains(PLACED));
    let mut local = std::mem::take(&mut reach.local);
    if displaced {
        names.extend(local.keys().cloned());
        local.clear();
    }
    let manifests: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, p)| p))
        .filter_map(|p| p.strip_suffix("Cargo.toml"))
        .filter(|folder| folder.is_empty() || folder.ends_with('/'))
        .collect();
    let in_scope = |scope: &str, path: &str| match scope.strip_prefix("dir:") {
        Some(prefix) => path.starts_with(prefix),
        None => in_module_of(scope, path),
    };
    loop {
        let mut grown = false;
        for (path, units) in &files {
            // Names defined in a test, bench or example target: only that target can name them.
            let target = target_folder(path, &manifests);
            for unit in *units {
                let local_hit = local.iter().any(|(name, scopes)| {
                    unit.mentions.contains(name) && scopes.iter().any(|s| in_scope(s, path))
                });
                if unit.mentions.is_disjoint(&names) && !local_hit {
                    continue;
                }
                reach
                    .units
                    .entry(path.to_string())
                    .or_default()
                    .insert(unit.key.clone());
                if matches!(unit.kind, Kind::Item | Kind::Import | Kind::ConstFunction) {
                    for name in &unit.defines {
                        let added = match (&target, unit.private) {
                            (_, true) => local
                                .entry(name.clone())
                                .or_default()
                                .insert(path.to_string()),
                            (Some(folder), false) => local
                                .entry(name.clone())
                                .or_default()
                                .insert(format!("dir:{folder}")),
                            (None, false) => names.insert(name.clone()),
                        };
                        grown |= added;
                    }
                }
            }
        }
        if !grown {
            for always in READS_SOURCES {
                names.remove(*always);
            }
            reach.names = names;
            reach.local = local;
            return Some(());
        }
    }
}

/// The folder of the test, bench or example target `path` is in (`tests/`, `benches/`,
/// `examples/` beside a package's manifest), if it is in one.
fn target_folder(path: &str, manifests: &BTreeSet<&str>) -> Option<String> {
    let mut end = 0;
    for part in path.split('/') {
        let folder = &path[..end];
        if matches!(part, "tests" | "benches" | "examples") && manifests.contains(folder) {
            return Some(format!("{folder}{part}/"));
        }
        end += part.len() + 1;
        if end > path.len() {
            break;
        }
    }
    None
}

/// One unit for a whole file that does not parse.
fn opaque(dir: &Path, blob: &str) -> Option<Unit> {
    let text = git(dir, &["cat-file", "blob", blob]).ok()?;
    let words: BTreeSet<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        })
        .filter(|w| is_name(w))
        .flat_map(|w| [w.to_string(), called(w), accessed(w)])
        .collect();
    Some(Unit {
        key: "<unparsable file>".into(),
        start: 1,
        end: text.lines().count().max(1),
        kind: Kind::Item,
        test: false,
        private: false,
        defines: words.clone(),
        fields: Vec::new(),
        mentions: words,
    })
}
