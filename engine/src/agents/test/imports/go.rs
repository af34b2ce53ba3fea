//! Go imports, at the package level: Go compiles a directory's files as one package, so a Go
//! file depends on the other non-test Go files of its directory (a `_test.go` file on all of
//! them, since tests share helpers), and an `import "m/p"` of a module in the repository (a `go.mod`
//! naming `m`) depends on the non-test files of `p`'s directory. Standard library paths (no
//! dot in the first element) and other modules' packages (declared in `go.mod`, whose change
//! selects everything) are outside. A path under a repository module naming no directory with
//! Go files, an import line that cannot be read, or a file that is not UTF-8 may import
//! anything: the file is dynamic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::{Found, Graph, dir_of};

/// `import "x"`, `import alias "x"`, and the lines of an `import ( … )` block.
static SINGLE_IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*import\s+(?:[\w.]+\s+)?"([^"]+)""#)
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
static IMPORT_BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?ms)^\s*import\s*\((.*?)\)")
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
static BLOCK_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^(?:[\w.]+\s+)?"([^"]+)"$"#)
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
static MODULE_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^\s*module\s+"?([^\s"]+)"?"#)
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});

/// Reads the Go files among `files` (every tracked file, relative to `workspace`).
pub fn read(workspace: &Path, sources: &[&String], files: &[String]) -> Found {
    // Module path → its directory, longest first so a nested module wins.
    let mut modules: Vec<(String, String)> = files
        .iter()
        .filter(|f| f.as_str() == "go.mod" || f.ends_with("/go.mod"))
        .filter_map(|f| {
            let text = std::fs::read_to_string(workspace.join(f)).ok()?;
            let module = MODULE_LINE.captures(&text)?.get(1)?.as_str().to_string();
            Some((module, dir_of(f).to_string()))
        })
        .collect();
    modules.sort_by_key(|(module, _)| std::cmp::Reverse(module.len()));
    let mut by_dir: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for file in sources {
        by_dir.entry(dir_of(file)).or_default().push(file);
    }
    let mut out = Found::default();
    for file in sources {
        // A package's code never sees its tests; its tests see all of it (helpers included).
        let test = file.ends_with("_test.go");
        for sibling in &by_dir[dir_of(file)] {
            if test || !sibling.ends_with("_test.go") {
                out.depend(file, sibling, "is in the package of");
            }
        }
        let Ok(text) = std::fs::read_to_string(workspace.join(file.as_str())) else {
            out.dynamic
                .insert(file.to_string(), "unreadable as UTF-8 text".into());
            continue;
        };
        let (paths, unreadable) = imports(&text);
        let mut dynamic = unreadable;
        for path in paths {
            let Some(dir) = in_repository(&path, &modules) else {
                continue;
            };
            let package: Vec<&&String> = by_dir
                .get(dir.as_str())
                .into_iter()
                .flatten()
                .filter(|f| !f.ends_with("_test.go"))
                .collect();
            if package.is_empty() {
                dynamic.push(format!(
                    "imports `{path}`, a package of the repository's module with no Go file"
                ));
            }
            for target in package {
                out.depend(file, target, "imports");
            }
        }
        if !dynamic.is_empty() {
            out.dynamic.insert(file.to_string(), dynamic.join(", "));
        }
    }
    out
}

/// For the `go.mod` or `go.sum` of a module below the repository's root (`D/go.mod`): `D`,
/// when no other module builds with that module's files, so what the file says reaches only
/// the packages under `D`. Another module reaches them through a `replace` to a local
/// directory or a workspace (`go.work`); otherwise it builds with a published version.
pub fn nested_module_dir(graph: &Graph, path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    if !matches!(name, "go.mod" | "go.sum") {
        return None;
    }
    let shared = graph.tracked.iter().any(|file| {
        let other = file.rsplit('/').next().unwrap_or(file);
        if other == "go.work" {
            return true;
        }
        if other != "go.mod" || file.as_str() == format!("{dir}/go.mod") {
            return false;
        }
        // Unreadable: it may say anything.
        std::fs::read_to_string(graph.root.join(file))
            .ok()
            .is_none_or(|text| text.contains("replace"))
    });
    (!shared).then(|| dir.to_string())
}

/// The import paths of a Go file, and what could not be read as one.
fn imports(text: &str) -> (Vec<String>, Vec<String>) {
    let mut paths: Vec<String> = SINGLE_IMPORT
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .collect();
    let mut unreadable = Vec::new();
    for block in IMPORT_BLOCK.captures_iter(text) {
        let Some(body) = block.get(1) else { continue };
        for line in body.as_str().lines() {
            let line = line.split("//").next().unwrap_or(line).trim();
            if line.is_empty() {
                continue;
            }
            match BLOCK_LINE.captures(line).and_then(|c| c.get(1)) {
                Some(path) => paths.push(path.as_str().to_string()),
                None => unreadable.push(format!("an import line `{line}` not read")),
            }
        }
    }
    (paths, unreadable)
}

/// The repository directory of `path` when a module of the repository holds it.
fn in_repository(path: &str, modules: &[(String, String)]) -> Option<String> {
    modules.iter().find_map(|(module, dir)| {
        let rest = if path == module {
            ""
        } else {
            path.strip_prefix(module.as_str())?.strip_prefix('/')?
        };
        Some(
            [dir.as_str(), rest]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_forms_are_read() {
        let text = "package a\n\nimport \"fmt\"\nimport x \"m/b\"\n\nimport (\n\t\"os\"\n\t_ \"m/c\" // side effects\n\n\ty \"m/d\"\n)\n\nfunc f() {}\n";
        let (paths, unreadable) = imports(text);
        assert_eq!(paths, ["fmt", "m/b", "os", "m/c", "m/d"]);
        assert!(unreadable.is_empty());
    }

    #[test]
    fn a_nested_modules_go_mod_reaches_its_own_packages_only() {
        use crate::agents::test::per_test::Excluded;
        use crate::agents::test::{SelectGlobs, select_files};
        // As in golang-lru: the root module, and `arc` a module of its own requiring a
        // published version of the root one.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = vec![
            ("go.mod", "module m/v2\n\ngo 1.19\n"),
            ("lru.go", "package lru\n"),
            ("lru_test.go", "package lru\n"),
            ("arc/go.mod", "module m/v2/arc\n\nrequire m/v2 v2.0.7\n"),
            ("arc/arc.go", "package arc\n\nimport \"m/v2\"\n"),
            ("arc/arc_test.go", "package arc\n"),
        ];
        let select = |files: &[(&str, &str)]| {
            for (path, text) in files {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, text).expect("write");
            }
            let tracked: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
            let tests: Vec<String> = tracked
                .iter()
                .filter(|p| p.ends_with("_test.go"))
                .cloned()
                .collect();
            let graph = Graph::build(dir.path(), &tracked);
            select_files(
                &["arc/go.mod".to_string()],
                &tests,
                &SelectGlobs::default(),
                &[],
                &graph,
                &Excluded::new(),
            )
        };
        let selection = select(&files);
        assert!(!selection.all, "{:?}", selection.reasons);
        assert_eq!(selection.tests, ["arc/arc_test.go"]);
        // A `replace` to the local directory: the root module builds with `arc`'s files.
        files[0].1 = "module m/v2\n\nrequire m/v2/arc v2.0.0\nreplace m/v2/arc => ./arc\n";
        assert!(select(&files).all);
        // The root module's own `go.mod` reaches everything.
        assert_eq!(
            Graph::build(dir.path(), &["go.mod".to_string()]).nested_go_module("go.mod"),
            None
        );
    }

    #[test]
    fn module_paths_map_to_directories() {
        let modules = vec![
            ("m/v2/arc".to_string(), "arc".to_string()),
            ("m/v2".to_string(), String::new()),
        ];
        assert_eq!(in_repository("m/v2", &modules).as_deref(), Some(""));
        assert_eq!(in_repository("m/v2/lru", &modules).as_deref(), Some("lru"));
        assert_eq!(in_repository("m/v2/arc", &modules).as_deref(), Some("arc"));
        assert_eq!(in_repository("m/v2x", &modules), None);
        assert_eq!(in_repository("fmt", &modules), None);
    }
}
