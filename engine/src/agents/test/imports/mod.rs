//! The static import graph of a repository's Python, JavaScript and Go files, for test selection:
//! which files each file depends on (what it imports, the packages' `__init__.py` it runs, the
//! `conftest.py` files pytest loads for it), so a changed file selects exactly the test files
//! that can reach it. What cannot be read statically is treated as reaching everything: a file
//! with a computed import depends on every file of its language, and a language whose files
//! could not be read at all (no `python3`) is not in the graph, so its changes run everything.

mod go;
mod javascript;
mod python;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// The languages the graph knows, by file extension.
pub const PYTHON: &[&str] = &["py"];
pub const JAVASCRIPT: &[&str] = &["js", "mjs", "cjs", "jsx", "ts", "tsx", "mts", "cts"];
pub const GO: &[&str] = &["go"];

/// Which language a path is in, if the graph can read that language.
pub fn language(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = name.rsplit_once('.')?;
    if PYTHON.contains(&extension) {
        Some("python")
    } else if JAVASCRIPT.contains(&extension) {
        Some("javascript")
    } else if GO.contains(&extension) {
        Some("go")
    } else {
        None
    }
}

/// Dependencies between the repository's files.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    /// File → the files it depends on directly, each with why.
    deps: BTreeMap<String, BTreeMap<String, String>>,
    /// Files that may import anything, with why (a computed import, an unparsable file).
    dynamic: BTreeMap<String, String>,
    /// Languages read, and why a language could not be (then it is not in the graph).
    read: BTreeSet<&'static str>,
    pub unavailable: BTreeMap<&'static str, String>,
    /// Every file tracked at the commit (a changed path not among them was deleted).
    tracked: BTreeSet<String>,
    /// The checkout, for reading which files name a data file.
    root: std::path::PathBuf,
}

impl Graph {
    /// Reads every tracked file (`files`, relative to `workspace`) of the languages it knows.
    pub fn build(workspace: &Path, files: &[String]) -> Graph {
        let mut graph = Graph {
            tracked: files.iter().cloned().collect(),
            root: workspace.to_path_buf(),
            ..Graph::default()
        };
        let python: Vec<&String> = files
            .iter()
            .filter(|f| language(f) == Some("python"))
            .collect();
        if !python.is_empty() {
            match python::read(workspace, &python) {
                Ok(found) => {
                    graph.read.insert("python");
                    graph.absorb(found);
                }
                Err(why) => {
                    graph.unavailable.insert("python", why);
                }
            }
        }
        let scripts: Vec<&String> = files
            .iter()
            .filter(|f| language(f) == Some("javascript"))
            .collect();
        if !scripts.is_empty() {
            graph.read.insert("javascript");
            graph.absorb(javascript::read(workspace, &scripts, files));
        }
        let go: Vec<&String> = files.iter().filter(|f| language(f) == Some("go")).collect();
        if !go.is_empty() {
            graph.read.insert("go");
            graph.absorb(go::read(workspace, &go, files));
        }
        graph
    }

    fn absorb(&mut self, found: Found) {
        for (file, deps) in found.deps {
            self.deps.entry(file).or_default().extend(deps);
        }
        self.dynamic.extend(found.dynamic);
    }

    /// A graph from its parts, for tests of what uses it.
    #[cfg(test)]
    pub fn from_edges(read: &[&'static str], tracked: &[&str], edges: &[(&str, &str)]) -> Graph {
        let mut found = Found::default();
        for (file, on) in edges {
            found.depend(file, on, "imports");
        }
        let mut graph = Graph {
            read: read.iter().copied().collect(),
            tracked: tracked.iter().map(|s| s.to_string()).collect(),
            ..Graph::default()
        };
        graph.absorb(found);
        graph
    }

    /// The directory of the nested Go module whose `go.mod`/`go.sum` `path` is, when only that
    /// module builds with it (`go.rs`).
    pub fn nested_go_module(&self, path: &str) -> Option<String> {
        go::nested_module_dir(self, path)
    }

    /// Whether `path` is in the commit's tree.
    pub fn tracked(&self, path: &str) -> bool {
        self.tracked.contains(path)
    }

    /// Whether the graph read `path`'s language (a file it did not read reaches nothing it
    /// can tell, so the caller must run everything).
    pub fn knows(&self, path: &str) -> Result<(), String> {
        match language(path) {
            Some(lang) if self.read.contains(lang) => Ok(()),
            Some(lang) => Err(self
                .unavailable
                .get(lang)
                .cloned()
                .unwrap_or_else(|| format!("no {lang} file was read"))),
            None => Err("no import graph for this file type".into()),
        }
    }

    /// The files of the graph's languages whose text names `path` (a data file, a script, a
    /// CI file): its file name anywhere, or one of its directories as a quoted path part.
    /// Code reads a file through a name it writes down; that is the assumption this rests on.
    pub fn naming(&self, path: &str) -> BTreeMap<String, String> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let directories: Vec<&str> = path.split('/').rev().skip(1).collect();
        let mut found = BTreeMap::new();
        for file in self
            .tracked
            .iter()
            .filter(|f| language(f).is_some() && f.as_str() != path)
        {
            let Ok(text) = std::fs::read_to_string(self.root.join(file)) else {
                continue;
            };
            if text.contains(name) {
                found.insert(file.clone(), format!("names {name}"));
                continue;
            }
            let named = directories.iter().find(|dir| {
                ["\"", "'", "/"].iter().any(|before| {
                    ["\"", "'", "/"]
                        .iter()
                        .any(|after| text.contains(&format!("{before}{dir}{after}")))
                })
            });
            if let Some(dir) = named {
                found.insert(file.clone(), format!("names the directory {dir}"));
            }
        }
        found
    }

    /// The files among `targets` that depend on `changed` (directly or through other files),
    /// each with the chain that links them.
    pub fn reaching(&self, changed: &str, targets: &BTreeSet<String>) -> BTreeMap<String, String> {
        let mut dependants: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (file, deps) in &self.deps {
            for dep in deps.keys() {
                dependants.entry(dep.as_str()).or_default().push(file);
            }
        }
        // Breadth first from the changed file; `via` remembers the step toward it.
        let mut via: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut queue = VecDeque::new();
        via.insert(changed, None);
        queue.push_back(changed);
        // A file that may import anything of the changed file's language reaches it.
        let lang = language(changed);
        for file in self.dynamic.keys() {
            if file != changed && language(file) == lang {
                via.insert(file, Some(changed));
                queue.push_back(file);
            }
        }
        while let Some(file) = queue.pop_front() {
            for next in dependants.get(file).into_iter().flatten() {
                if !via.contains_key(next) {
                    via.insert(next, Some(file));
                    queue.push_back(next);
                }
            }
        }
        let mut found = BTreeMap::new();
        for target in targets {
            if target == changed || !via.contains_key(target.as_str()) {
                continue;
            }
            found.insert(target.clone(), self.chain(target, &via));
        }
        found
    }

    /// `imports a.py → b.py` from `target` back to the changed file.
    fn chain(&self, target: &str, via: &BTreeMap<&str, Option<&str>>) -> String {
        let mut steps = Vec::new();
        let mut at = target;
        while let Some(Some(next)) = via.get(at) {
            let why = self
                .deps
                .get(at)
                .and_then(|deps| deps.get(*next))
                .cloned()
                .or_else(|| {
                    self.dynamic
                        .get(at)
                        .map(|d| format!("{d}: may import anything"))
                })
                .unwrap_or_else(|| "depends on".into());
            steps.push(format!("{why} {next}"));
            at = next;
            if steps.len() > 8 {
                steps.push("…".into());
                break;
            }
        }
        steps.join(" → ")
    }
}

/// What one language's reader found.
#[derive(Debug, Default)]
pub struct Found {
    pub deps: BTreeMap<String, BTreeMap<String, String>>,
    pub dynamic: BTreeMap<String, String>,
}

impl Found {
    fn depend(&mut self, file: &str, on: &str, why: &str) {
        if file != on {
            self.deps
                .entry(file.to_string())
                .or_default()
                .entry(on.to_string())
                .or_insert_with(|| why.to_string());
        }
    }
}

/// The directory part of a path (`""` at the root).
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `dir` joined with a relative `path`, `..` and `.` resolved; `None` above the root.
fn join(dir: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reach_follows_dependants_and_explains_the_chain() {
        let mut found = Found::default();
        found.depend("tests/test_a.py", "src/a.py", "imports");
        found.depend("src/a.py", "src/b.py", "imports");
        found.depend("tests/test_c.py", "src/c.py", "imports");
        let mut graph = Graph::default();
        graph.read.insert("python");
        graph.absorb(found);
        let tests = set(&["tests/test_a.py", "tests/test_c.py"]);
        let reached = graph.reaching("src/b.py", &tests);
        assert_eq!(reached.keys().collect::<Vec<_>>(), ["tests/test_a.py"]);
        assert_eq!(
            reached["tests/test_a.py"],
            "imports src/a.py → imports src/b.py"
        );
        assert!(graph.reaching("src/unknown.py", &tests).is_empty());
        assert!(graph.knows("src/x.py").is_ok());
        assert!(graph.knows("src/x.js").is_err());
        assert!(graph.knows("data.csv").is_err());
    }

    #[test]
    fn a_dynamic_importer_reaches_every_file_of_its_language() {
        let mut found = Found::default();
        found.depend("tests/test_plugins.py", "src/loader.py", "imports");
        found
            .dynamic
            .insert("src/loader.py".into(), "import_module() on line 3".into());
        let mut graph = Graph::default();
        graph.read.insert("python");
        graph.absorb(found);
        let reached = graph.reaching("src/anything.py", &set(&["tests/test_plugins.py"]));
        assert!(
            reached["tests/test_plugins.py"].contains("may import anything"),
            "{reached:?}"
        );
        assert!(
            graph
                .reaching("web/a.js", &set(&["tests/test_plugins.py"]))
                .is_empty()
        );
    }

    #[test]
    fn paths_join_within_the_repository() {
        assert_eq!(join("a/b", "../c/d.js").as_deref(), Some("a/c/d.js"));
        assert_eq!(join("", "./x").as_deref(), Some("x"));
        assert_eq!(join("a", "../../x"), None);
        assert_eq!(dir_of("a/b/c.py"), "a/b");
        assert_eq!(dir_of("c.py"), "");
    }
}
