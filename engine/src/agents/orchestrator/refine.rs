//! Categories that only the changed lines can tell: a release (a manifest or version file
//! whose only change is the package's own version) and a comment-only change in code.
//!
//! Both only ever replace a path category with a lower one when every changed line agrees,
//! so an edit that slips one real line in beside a comment or a version keeps its path
//! category and its score.

use std::sync::LazyLock;

use regex::Regex;

use super::classify::Category;
use super::diff::ChangedFile;
use super::lines::{FileLines, Kind};

/// `version = "1.2.3"`, `"version": "1.2.3",`, `__version__ = '1.2.3'`, `VERSION = "1.2.3"`,
/// `s.version = "1.2.3"`, `const Version = "v1.2.3"`, `version="1.2.3",` (setup.py), and
/// requests' `__build__ = 0x023402`.
static VERSION_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)^\s*(?:(?:pub\s+)?(?:const|static|var|let|final)\s+)?(?:[a-z_]\w*\.)?["']?(?:_*version_*|__build__)["']?\s*(?::\s*[\w&'\s]+?\s*)?(?:=|:|=>)\s*(?:["']v?\d[\w.\-+]*["']|0x[0-9a-f]+)\s*[,;]?\s*$"#,
    )
    .expect("the version-line pattern is valid")
});

/// The category of a changed file once its lines are known.
pub fn refine(file: &ChangedFile, by_path: Category, lines: Option<&FileLines>) -> Category {
    let Some(lines) = lines else {
        return by_path;
    };
    if file.status != "modified" {
        return by_path;
    }
    if matches!(
        by_path,
        Category::Dependencies | Category::Code | Category::Config | Category::Security
    ) && only_version_field(lines)
    {
        return Category::Release;
    }
    if by_path == Category::Dependencies && only_tool_settings(lines) {
        return Category::Config;
    }
    if matches!(
        by_path,
        Category::Code | Category::Security | Category::Config
    ) && lines.only_comments()
    {
        return Category::Comments;
    }
    by_path
}

/// A TOML manifest whose changed lines all sit in tool or lint settings (`[tool.pyright]`,
/// `[tool.ruff]`, `[lints]`, `[profile.release]`, `[package.metadata.docs.rs]`) or are trove
/// classifiers: configuration, not a dependency change. Poetry's and any `dependencies` table
/// stay dependencies, and so does a line whose table the hunk does not show.
fn only_tool_settings(lines: &FileLines) -> bool {
    if !lines.path.ends_with(".toml") || lines.truncated {
        return false;
    }
    let mut changed = lines
        .added
        .iter()
        .chain(&lines.removed)
        .filter(|l| l.kind == Kind::Code)
        .peekable();
    changed.peek().is_some()
        && changed.all(|l| {
            let Some(table) = l.table.as_deref() else {
                return false;
            };
            let tool = (table.starts_with("tool.") && !table.starts_with("tool.poetry"))
                || [
                    "lints",
                    "workspace.lints",
                    "profile",
                    "package.metadata",
                    "badges",
                ]
                .iter()
                .any(|t| table == *t || table.starts_with(&format!("{t}.")));
            let classifier = table == "project" && TROVE_CLASSIFIER.is_match(&l.code);
            (tool || classifier) && !table.contains("dependencies")
        })
}

/// `"Programming Language :: Python :: 3.15",`
static TROVE_CLASSIFIER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*"[^"]+ :: [^"]+",?\s*$"#).expect("the classifier pattern is valid")
});

/// Every changed line is a version field, at least one was added, and in TOML the field sits
/// in the package's own table (`[package]`, `[project]`, `[tool.poetry]`, a lockfile's
/// `[[package]]`), never under a dependency's (`[dependencies.serde]`); in a lockfile, no
/// changed entry shows a registry source (a registry crate's version is a dependency's).
fn only_version_field(lines: &FileLines) -> bool {
    let changed = || {
        lines
            .added
            .iter()
            .chain(&lines.removed)
            .filter(|l| l.kind != Kind::Blank)
    };
    let toml = lines.path.ends_with(".toml") || lines.path.ends_with("Cargo.lock");
    !lines.truncated
        && !lines.shows_dependency_source
        && lines.added.iter().any(|l| l.kind != Kind::Blank)
        && changed().all(|l| {
            VERSION_LINE.is_match(&l.text)
                && (!toml
                    || l.table.as_deref().is_some_and(|t| {
                        !t.contains("dependencies")
                            && matches!(
                                t,
                                "package" | "project" | "tool.poetry" | "workspace.package"
                            )
                    }))
        })
}

#[cfg(test)]
#[path = "refine_tests.rs"]
mod tests;
