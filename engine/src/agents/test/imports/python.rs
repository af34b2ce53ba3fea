//! Python's import graph: `python_imports.py` reads each file with CPython's own parser (`ast`;
//! nothing is executed), and the imports are resolved to the repository's files the way the
//! interpreter and pytest would find them: from every import root (the first directory above a
//! file that is not a package, and that directory's parents: the checkout, `src/`, a tests
//! directory pytest puts on `sys.path`), relative imports from the file's package, `from a
//! import b` also as the submodule `a.b`. Importing a module runs its packages' `__init__.py`,
//! and pytest loads every `conftest.py` above a test file: both are dependencies. A repository
//! that edits `sys.path` gets suffix matching too (`x.y` is any `…/x/y.py`).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{Found, dir_of};
use crate::agents::test::files::is_test_file;

const SCRIPT: &str = include_str!("python_imports.py");

#[derive(Debug, Deserialize)]
struct Scanned {
    path: String,
    imports: Vec<Import>,
    dynamic: Vec<String>,
    sys_path: bool,
}

#[derive(Debug, Deserialize)]
struct Import {
    module: String,
    level: usize,
    names: Vec<String>,
}

/// Reads `files` (Python, relative to `workspace`) into their dependencies.
pub fn read(workspace: &Path, files: &[&String]) -> Result<Found, String> {
    let scanned = scan(workspace, files)?;
    Ok(resolve(&scanned, files))
}

fn scan(workspace: &Path, files: &[&String]) -> Result<Vec<Scanned>, String> {
    let mut child = Command::new("python3")
        .args(["-I", "-c", SCRIPT])
        .current_dir(workspace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 is needed to read Python imports: {e}"))?;
    let list: String = files.iter().map(|f| format!("{f}\n")).collect();
    let mut stdin = child.stdin.take();
    // Written from a thread, so a full stdout pipe cannot block both sides.
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(list.as_bytes());
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|e| format!("failed to read Python imports: {e}"))?;
    let _ = writer.join();
    if !output.status.success() {
        return Err(format!(
            "python3 failed to read the imports: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|e| format!("unexpected import listing: {e}"))
        })
        .collect()
}

fn resolve(scanned: &[Scanned], files: &[&String]) -> Found {
    let known: HashSet<&str> = files.iter().map(|f| f.as_str()).collect();
    let is_package = |dir: &str| known.contains(init(dir).as_str());
    // Import roots: the first non-package directory above each file, and its parents.
    let mut roots: BTreeSet<String> = BTreeSet::new();
    for file in files {
        let mut dir = dir_of(file);
        while !dir.is_empty() && is_package(dir) {
            dir = dir_of(dir);
        }
        loop {
            roots.insert(dir.to_string());
            if dir.is_empty() {
                break;
            }
            dir = dir_of(dir);
        }
    }
    let suffixes = scanned.iter().any(|s| s.sys_path);
    let module_files = |dotted: &str| -> Vec<String> {
        let relative = dotted.replace('.', "/");
        let mut found: Vec<String> = roots
            .iter()
            .flat_map(|root| {
                let base = if root.is_empty() {
                    relative.clone()
                } else {
                    format!("{root}/{relative}")
                };
                [format!("{base}.py"), init(&base)]
            })
            .filter(|candidate| known.contains(candidate.as_str()))
            .collect();
        if suffixes {
            let tails = [
                format!("/{relative}.py"),
                format!("/{relative}/__init__.py"),
            ];
            found.extend(
                files
                    .iter()
                    .filter(|f| tails.iter().any(|t| f.ends_with(t.as_str())))
                    .map(|f| f.to_string()),
            );
        }
        found
    };
    let mut out = Found::default();
    for file in scanned {
        let path = file.path.as_str();
        if !file.dynamic.is_empty() {
            out.dynamic
                .insert(path.to_string(), file.dynamic.join(", "));
        }
        for import in &file.imports {
            let mut modules = Vec::new();
            let base = if import.level == 0 {
                import.module.clone()
            } else {
                // `from ..x import y` in a/b/c.py: a/x, relative to the package a/b.
                let mut dir = dir_of(path);
                for _ in 1..import.level {
                    dir = dir_of(dir);
                }
                let package = dir.replace('/', ".");
                [package.as_str(), import.module.as_str()]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(".")
            };
            if !base.is_empty() {
                modules.push(base.clone());
            }
            for name in import.names.iter().filter(|n| n.as_str() != "*") {
                modules.push(if base.is_empty() {
                    name.clone()
                } else {
                    format!("{base}.{name}")
                });
            }
            for module in modules {
                let targets = if import.level == 0 {
                    module_files(&module)
                } else {
                    // Relative imports name a path in the checkout exactly.
                    let relative = module.replace('.', "/");
                    [format!("{relative}.py"), init(&relative)]
                        .into_iter()
                        .filter(|c| known.contains(c.as_str()))
                        .collect()
                };
                for target in targets {
                    out.depend(path, &target, "imports");
                }
            }
        }
    }
    // Packages run their `__init__.py`; pytest loads the `conftest.py` files above a test.
    for file in files {
        let mut dir = dir_of(file);
        loop {
            let package = init(dir);
            if known.contains(package.as_str()) && package != file.as_str() {
                out.depend(file, &package, "runs its package");
            }
            let conftest = if dir.is_empty() {
                "conftest.py".to_string()
            } else {
                format!("{dir}/conftest.py")
            };
            if is_test_file(file) && known.contains(conftest.as_str()) {
                out.depend(file, &conftest, "is collected with");
            }
            if dir.is_empty() {
                break;
            }
            dir = dir_of(dir);
        }
    }
    out
}

fn init(dir: &str) -> String {
    if dir.is_empty() {
        "__init__.py".to_string()
    } else {
        format!("{dir}/__init__.py")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        (dir, files.iter().map(|(p, _)| p.to_string()).collect())
    }

    fn deps(found: &Found, file: &str) -> Vec<String> {
        found
            .deps
            .get(file)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn imports_resolve_like_the_interpreter_and_pytest() {
        let (dir, files) = repo(&[
            (
                "src/lib/__init__.py",
                "from .encoding import encode\nfrom . import models\n",
            ),
            ("src/lib/encoding.py", "import json\n"),
            ("src/lib/models.py", "from ..lib.encoding import encode\n"),
            ("src/lib/util/__init__.py", ""),
            (
                "src/lib/util/text.py",
                "import importlib\nimportlib.import_module(name)\n",
            ),
            ("tests/conftest.py", "pytest_plugins = ['tests.fixtures']\n"),
            ("tests/fixtures.py", "from lib.util import text\n"),
            ("tests/helpers.py", ""),
            (
                "tests/test_encoding.py",
                "import helpers\nfrom lib import encoding\n",
            ),
            ("tests/test_models.py", "import lib.models as m\n"),
        ]);
        let refs: Vec<&String> = files.iter().collect();
        let found = read(dir.path(), &refs).expect("python3 reads the files");
        assert_eq!(
            deps(&found, "src/lib/__init__.py"),
            ["src/lib/encoding.py", "src/lib/models.py"]
        );
        assert_eq!(
            deps(&found, "src/lib/models.py"),
            ["src/lib/__init__.py", "src/lib/encoding.py"]
        );
        assert_eq!(
            deps(&found, "tests/test_encoding.py"),
            [
                "src/lib/__init__.py",
                "src/lib/encoding.py",
                "tests/conftest.py",
                "tests/helpers.py"
            ],
            "`from lib import encoding` is the submodule; the tests directory is an import root"
        );
        assert_eq!(deps(&found, "tests/conftest.py"), ["tests/fixtures.py"]);
        assert_eq!(
            deps(&found, "src/lib/util/text.py"),
            ["src/lib/__init__.py", "src/lib/util/__init__.py"]
        );
        assert!(found.dynamic["src/lib/util/text.py"].contains("import_module() on line 2"));
    }

    #[test]
    fn exec_of_a_module_s_own_templates_is_no_dynamic_import() {
        let (dir, files) = repo(&[
            // namedtuple-style: a class built from a template naming no import.
            (
                "pkg/named.py",
                "\"\"\"Named tuples; see the docs to import them.\"\"\"\nTEMPLATE = 'class {name}(tuple):\\n    pass\\n'\n\ndef make(name):\n    ns = {}\n    exec(TEMPLATE.format(name=name), ns)\n    return ns[name]\n",
            ),
            // A template that imports: what it imports cannot be told.
            (
                "pkg/loader.py",
                "CODE = 'import {module}'\n\ndef load(module):\n    exec(CODE.format(module=module))\n",
            ),
        ]);
        let refs: Vec<&String> = files.iter().collect();
        let found = read(dir.path(), &refs).expect("python3 reads the files");
        assert!(!found.dynamic.contains_key("pkg/named.py"), "{found:?}");
        assert!(
            found.dynamic["pkg/loader.py"].contains("exec() on line 4"),
            "{found:?}"
        );
    }
}
