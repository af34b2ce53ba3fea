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

use super::{Found, dir_of};

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
