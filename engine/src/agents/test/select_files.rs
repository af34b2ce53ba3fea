//! Selection for runners other than cargo (pytest, node, npm test, any command): a changed
//! file selects the test files that import it (directly or not, `imports/`), its own test file
//! by name, and what configured globs (`with: select_globs:`) name; the file→test map learned
//! from history orders tests and never removes one: a failure after a change adds its test,
//! a co-change adds one only for a file no import graph reads (data, scripts). Safe before small: a build or runner configuration file, a lockfile, a deleted
//! module, or a source file in a language whose imports could not be read selects everything.
//! A data file, a script or a CI file selects what reaches the code naming it (`Graph::naming`).

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Serialize;
use serde_json::Value;

use super::files::{is_test_file, is_test_support};
use super::imports::Graph;
use super::per_test::Excluded;
use crate::agents::orchestrator::{Category, categorize};
use crate::store::TestLink;

/// `select_globs:` — a changed path matching a key selects the test files matching its value(s).
#[derive(Debug, Default)]
pub struct SelectGlobs {
    rules: Vec<GlobRule>,
}

#[derive(Debug)]
struct GlobRule {
    source: String,
    matcher: GlobMatcher,
    /// Test file patterns, with their text for the reasons.
    tests: Vec<(String, GlobMatcher)>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    // `*` stays within a directory and `**` crosses them, as in .gitignore and most runners.
    let built: Result<Glob, _> = GlobBuilder::new(pattern).literal_separator(true).build();
    built
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("select_globs: bad pattern `{pattern}`: {e}"))
}

impl SelectGlobs {
    pub fn from(value: Option<&Value>) -> Result<SelectGlobs, String> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(SelectGlobs::default());
        };
        let Value::Object(map) = value else {
            return Err(format!(
                "select_globs: expected a mapping of path glob → test glob(s), found {value}"
            ));
        };
        let mut rules = Vec::new();
        for (source, tests) in map {
            let patterns: Vec<&str> = match tests {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many
                    .iter()
                    .map(|t| {
                        t.as_str().ok_or_else(|| {
                            format!("select_globs.{source}: expected strings, found {t}")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(format!(
                        "select_globs.{source}: expected a glob or a list of globs, found {other}"
                    ));
                }
            };
            let tests = patterns
                .iter()
                .map(|p| glob(p).map(|m| (p.to_string(), m)))
                .collect::<Result<_, _>>()?;
            rules.push(GlobRule {
                source: source.clone(),
                matcher: glob(source)?,
                tests,
            });
        }
        Ok(SelectGlobs { rules })
    }
}

/// Which test files run, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileSelection {
    pub all: bool,
    /// Selected test files (empty when `all`).
    pub tests: Vec<String>,
    pub selected: usize,
    pub total: usize,
    /// Why each test file was selected (or why everything was).
    pub why: BTreeMap<String, Vec<String>>,
    pub reasons: Vec<String>,
}

impl FileSelection {
    pub fn everything(reason: String, total: usize) -> FileSelection {
        FileSelection {
            all: true,
            tests: Vec::new(),
            selected: total,
            total,
            why: BTreeMap::new(),
            reasons: vec![reason],
        }
    }
}

/// Maps `changed` paths to the test files among `test_files` (every runnable test file at the
/// commit). Safe first: what reaches a changed file is the import `graph`, a source file's own
/// test file by name, and `globs`; learned `links` only add tests and order them (failures
/// first), never take one away. A changed file the graph cannot place selects everything.
pub fn select_files(
    changed: &[String],
    test_files: &[String],
    globs: &SelectGlobs,
    links: &[TestLink],
    graph: &Graph,
    coverage: &Excluded,
) -> FileSelection {
    let total = test_files.len();
    let mut left_out: Vec<String> = Vec::new();
    let tests: BTreeSet<String> = test_files.iter().cloned().collect();
    let mut why: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |test: &String, reason: String| {
        let reasons = why.entry(test.clone()).or_default();
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    };
    for path in changed {
        // Explicit configuration: a glob places a file (even a build file) on purpose.
        let mut mapped = false;
        for GlobRule {
            source,
            matcher,
            tests: patterns,
        } in &globs.rules
        {
            if !matcher.is_match(path) {
                continue;
            }
            for (pattern, test_matcher) in patterns {
                let hits: Vec<&String> = test_files
                    .iter()
                    .filter(|t| test_matcher.is_match(t.as_str()))
                    .collect();
                if hits.is_empty() {
                    return FileSelection::everything(
                        format!(
                            "{path}: select_globs `{source}` → `{pattern}` names no existing test file"
                        ),
                        total,
                    );
                }
                for hit in hits {
                    add(hit, format!("select_globs `{source}` matched {path}"));
                }
            }
            mapped = true;
        }
        if tests.contains(path) {
            add(path, "changed".into());
        }
        let category = categorize(path);
        if category == Category::Docs && !is_test_support(path) {
            continue;
        }
        if is_test_file(path) && !graph.tracked(path) {
            // A deleted test file is not there to run, and a test file is not imported.
            continue;
        }
        let go_module = graph.nested_go_module(path).filter(|_| graph.tracked(path));
        match graph.knows(path) {
            Ok(()) if !graph.tracked(path) => {
                return FileSelection::everything(
                    format!(
                        "{path}: deleted or renamed; what still imports it cannot be told (selection must be safe before it is small)"
                    ),
                    total,
                );
            }
            Ok(()) if runs_everything(path, category) => {
                return FileSelection::everything(
                    format!(
                        "{path}: configures how tests run or build (selection must be safe before it is small)"
                    ),
                    total,
                );
            }
            Ok(()) => {
                let shown = coverage.get(path);
                for (test, chain) in graph.reaching(path, &tests) {
                    // Per-test coverage shows this test file never ran the changed code.
                    if let Some(why) = shown.and_then(|shown| shown.get(&test)) {
                        left_out.push(format!("{test}: left out for {path}: {why}"));
                        continue;
                    }
                    add(&test, chain);
                }
                for test in own_tests(path, test_files) {
                    add(test, format!("the test file named after {path}"));
                }
            }
            Err(_) if mapped => {}
            // A nested module's requirements: its own packages' tests, and what names the file.
            Err(_) if go_module.is_some() => {
                let dir = go_module.as_deref().unwrap_or_default();
                for test in test_files
                    .iter()
                    .filter(|t| t.starts_with(&format!("{dir}/")))
                {
                    add(test, format!("in the Go module {path} describes"));
                }
                for (file, named) in graph.naming(path) {
                    if tests.contains(&file) {
                        add(&file, named.clone());
                    }
                    for (test, chain) in graph.reaching(&file, &tests) {
                        add(&test, format!("{chain}, which {named}"));
                    }
                }
            }
            Err(why)
                if graph_language(path)
                    || foreign_code(path)
                    || runs_everything(path, category) =>
            {
                return FileSelection::everything(
                    format!(
                        "{path}: a {} file no import graph places ({why}; selection must be safe before it is small)",
                        category.as_str()
                    ),
                    total,
                );
            }
            // Data, scripts, CI files: read only by code that names them.
            Err(_) => {
                for (file, named) in graph.naming(path) {
                    if tests.contains(&file) {
                        add(&file, named.clone());
                    }
                    for (test, chain) in graph.reaching(&file, &tests) {
                        add(&test, format!("{chain}, which {named}"));
                    }
                }
            }
        }
        // A co-change is a guess; what the graph places it has answered (safe by
        // construction), and a CI or tooling file changes no test's outcome here. So a
        // co-change adds a test only for a file the graph cannot read (a data file, a
        // script), and otherwise only orders. A real failure after this file changed is
        // evidence of a reach the graph missed: it always adds.
        let guesses_add = graph.knows(path).is_err()
            && !matches!(
                category,
                Category::Infrastructure | Category::Tooling | Category::Docs
            );
        for link in links.iter().filter(|l| {
            &l.source_path == path
                && tests.contains(&l.test_file)
                && (l.kind == "failure" || guesses_add)
        }) {
            let reason = match link.kind.as_str() {
                "failure" => format!(
                    "failed after {path} changed ({} run{})",
                    link.count,
                    plural(link.count)
                ),
                _ => format!(
                    "changed together with {path} in {} commit{}",
                    link.count,
                    plural(link.count)
                ),
            };
            add(&link.test_file, reason);
        }
    }
    // History orders: tests that failed after these files changed first, then co-changed ones.
    let weight = |test: &String| -> (u32, u32) {
        let of = |kind: &str| {
            links
                .iter()
                .filter(|l| {
                    &l.test_file == test && l.kind == kind && changed.contains(&l.source_path)
                })
                .map(|l| l.count)
                .sum::<u32>()
        };
        (of("failure"), of("co_change"))
    };
    let mut selected: Vec<String> = why.keys().cloned().collect();
    selected.sort_by_key(|test| std::cmp::Reverse(weight(test)));
    let mut reasons: Vec<String> = selected
        .iter()
        .map(|test| format!("{test}: {}", why[test].join("; ")))
        .collect();
    // What coverage left out for one file but another file selected is selected.
    reasons.extend(
        left_out
            .into_iter()
            .filter(|note| !why.contains_key(note.split(": ").next().unwrap_or_default())),
    );
    FileSelection {
        all: false,
        selected: selected.len(),
        tests: selected,
        total,
        why,
        reasons,
    }
}

/// Whether `path` is in a language an import graph reads (whether or not it was read).
fn graph_language(path: &str) -> bool {
    super::imports::language(path).is_some()
}

/// Source code in a language no import graph reads: what imports it cannot be told.
fn foreign_code(path: &str) -> bool {
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_lowercase())
        .unwrap_or_default();
    [
        "rs", "go", "java", "kt", "scala", "c", "h", "cc", "cpp", "hpp", "cs", "rb", "php",
        "swift", "m", "pl", "ex", "exs", "erl", "hs", "ml", "lua", "r", "dart", "vue", "svelte",
    ]
    .contains(&extension.as_str())
}

/// Files that configure the runner or the build: what they change cannot be placed.
fn runs_everything(path: &str, category: Category) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_lowercase();
    matches!(category, Category::Dependencies)
        || [
            "pytest.ini",
            "tox.ini",
            "setup.cfg",
            "setup.py",
            "pyproject.toml",
            ".coveragerc",
            "noxfile.py",
            "makefile",
            "jsconfig.json",
            ".env",
            "sitecustomize.py",
        ]
        .contains(&name.as_str())
        || name.contains(".config.")
        || name.starts_with("tsconfig")
        || name.starts_with(".babelrc")
        || name.starts_with(".mocharc")
        || name.starts_with(".env.")
        || name.starts_with(".nycrc")
}

/// Test files named after a source file: `encoding.py` → `test_encoding.py`,
/// `encoding_test.py`, `test_encoding_*.py`; `a.js` → `a.test.js`, `a.spec.ts`, `__tests__/a.js`.
fn own_tests<'a>(path: &str, test_files: &'a [String]) -> Vec<&'a String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name).to_lowercase();
    if stem.is_empty() || stem == "__init__" || stem == "index" {
        return Vec::new();
    }
    test_files
        .iter()
        .filter(|test| {
            let test_name = test.rsplit('/').next().unwrap_or(test).to_lowercase();
            let test_stem = test_name.split('.').next().unwrap_or(&test_name);
            test_stem == format!("test_{stem}")
                || test_stem == format!("{stem}_test")
                || test_stem.starts_with(&format!("test_{stem}_"))
                || (test_stem == stem && test_name != name.to_lowercase())
        })
        .collect()
}

fn plural(count: u32) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TESTS: [&str; 5] = [
        "tests/test_payments.py",
        "tests/test_payments_refund.py",
        "tests/test_users.py",
        "tests/test_api.py",
        "tests/test_encoding.py",
    ];

    fn tests() -> Vec<String> {
        TESTS.map(String::from).to_vec()
    }

    /// A shop: each test imports its module, the API test imports users, `encoding.py` is
    /// imported by nothing the graph can see (its test loads it by a path the test computes).
    fn graph() -> Graph {
        let mut tracked = TESTS.to_vec();
        tracked.extend([
            "src/payments/card/charge.py",
            "src/users.py",
            "src/encoding.py",
            "src/api.py",
            "tests/conftest.py",
            "README.md",
            "requirements.txt",
            "assets/logo.xyz",
            "tests/data/users.json",
        ]);
        Graph::from_edges(
            &["python"],
            &tracked,
            &[
                ("tests/test_payments.py", "src/payments/card/charge.py"),
                (
                    "tests/test_payments_refund.py",
                    "src/payments/card/charge.py",
                ),
                ("tests/test_users.py", "src/users.py"),
                ("tests/test_api.py", "src/api.py"),
                ("src/api.py", "src/users.py"),
                ("tests/test_users.py", "tests/conftest.py"),
            ],
        )
    }

    fn link(source: &str, test: &str, kind: &str, count: u32) -> TestLink {
        TestLink {
            source_path: source.into(),
            test_file: test.into(),
            kind: kind.into(),
            count,
        }
    }

    fn changed(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn select(paths: &[&str], globs: &SelectGlobs, links: &[TestLink]) -> FileSelection {
        select_files(
            &changed(paths),
            &tests(),
            globs,
            links,
            &graph(),
            &Excluded::new(),
        )
    }

    #[test]
    fn per_test_coverage_leaves_out_importers_but_never_a_file_s_own_test() {
        let shown = |tests: &[&str]| -> Excluded {
            BTreeMap::from([(
                "src/users.py".to_string(),
                tests
                    .iter()
                    .map(|t| (t.to_string(), "never ran greet".to_string()))
                    .collect(),
            )])
        };
        let coverage = shown(&["tests/test_api.py", "tests/test_users.py"]);
        let selection = select_files(
            &changed(&["src/users.py"]),
            &tests(),
            &SelectGlobs::default(),
            &[],
            &graph(),
            &coverage,
        );
        assert_eq!(selection.tests, ["tests/test_users.py"], "{selection:?}");
        assert_eq!(
            selection.why["tests/test_users.py"],
            ["the test file named after src/users.py"]
        );
        assert!(
            selection
                .reasons
                .contains(&"tests/test_api.py: left out for src/users.py: never ran greet".into()),
            "{:?}",
            selection.reasons
        );
        // Another changed file reaching the same test still selects it.
        let selection = select_files(
            &changed(&["src/users.py", "src/api.py"]),
            &tests(),
            &SelectGlobs::default(),
            &[],
            &graph(),
            &coverage,
        );
        assert_eq!(
            selection.tests,
            ["tests/test_api.py", "tests/test_users.py"]
        );
        assert!(
            !selection.reasons.iter().any(|r| r.contains("left out")),
            "{:?}",
            selection.reasons
        );
    }

    #[test]
    fn importers_are_selected_with_the_chain_that_reaches_them() {
        let selection = select(&["src/users.py", "README.md"], &SelectGlobs::default(), &[]);
        assert!(!selection.all, "{selection:?}");
        assert_eq!(
            selection.tests,
            ["tests/test_api.py", "tests/test_users.py"]
        );
        assert_eq!(
            selection.why["tests/test_api.py"],
            ["imports src/api.py → imports src/users.py"]
        );
        assert_eq!((selection.selected, selection.total), (2, 5));
    }

    #[test]
    fn globs_add_to_what_the_graph_selects() {
        let globs = SelectGlobs::from(Some(&json!({ "src/payments/**": ["tests/test_api*.py"] })))
            .expect("globs");
        let selection = select(&["src/payments/card/charge.py"], &globs, &[]);
        assert_eq!(
            selection.tests,
            [
                "tests/test_api.py",
                "tests/test_payments.py",
                "tests/test_payments_refund.py"
            ]
        );
        assert!(selection.why["tests/test_api.py"][0].contains("src/payments/**"));
    }

    #[test]
    fn history_adds_and_orders_but_never_removes() {
        // The map learned only test_users for encoding.py (the co-change trap): the test file
        // named after encoding.py is still selected; a failure adds its test, and a co-change
        // adds nothing for a file the graph places (it answered already).
        let links = [
            link("src/encoding.py", "tests/test_users.py", "co_change", 3),
            link("src/encoding.py", "tests/test_api.py", "failure", 1),
            link("src/encoding.py", "tests/deleted_test.py", "failure", 9),
        ];
        let selection = select(&["src/encoding.py"], &SelectGlobs::default(), &links);
        assert_eq!(
            selection.tests,
            ["tests/test_api.py", "tests/test_encoding.py"],
            "failures first; a test file no longer there is not selected"
        );
        assert_eq!(
            selection.why["tests/test_encoding.py"],
            ["the test file named after src/encoding.py"]
        );
        assert_eq!(
            selection.why["tests/test_api.py"],
            ["failed after src/encoding.py changed (1 run)"]
        );
        // A data file no code names: a co-change is all there is to go on, so it adds; a CI
        // file's co-changes add nothing.
        let links = [
            link("fixtures/rates.csv", "tests/test_users.py", "co_change", 2),
            link(
                ".github/workflows/ci.yml",
                "tests/test_api.py",
                "co_change",
                4,
            ),
        ];
        let selection = select(
            &["fixtures/rates.csv", ".github/workflows/ci.yml"],
            &SelectGlobs::default(),
            &links,
        );
        assert!(!selection.all, "{selection:?}");
        assert_eq!(selection.tests, ["tests/test_users.py"]);
        assert_eq!(
            selection.why["tests/test_users.py"],
            ["changed together with fixtures/rates.csv in 2 commits"]
        );
        // Links never narrow what the graph reaches.
        let links = [link("src/users.py", "tests/test_users.py", "co_change", 5)];
        let selection = select(&["src/users.py"], &SelectGlobs::default(), &links);
        assert_eq!(
            selection.tests,
            ["tests/test_users.py", "tests/test_api.py"]
        );
    }

    #[test]
    fn a_changed_test_selects_itself_and_docs_nothing() {
        let selection = select(
            &["tests/test_users.py", "docs/guide.md"],
            &SelectGlobs::default(),
            &[],
        );
        assert_eq!(selection.tests, ["tests/test_users.py"]);
        let selection = select(&["README.md"], &SelectGlobs::default(), &[]);
        assert!(!selection.all && selection.tests.is_empty());
        let selection = select(&["tests/conftest.py"], &SelectGlobs::default(), &[]);
        assert_eq!(
            selection.tests,
            ["tests/test_users.py"],
            "a conftest reaches the tests it is loaded for"
        );
    }

    #[test]
    fn what_cannot_be_placed_selects_everything() {
        for path in [
            "requirements.txt",
            "poetry.lock",
            "Makefile",
            "pytest.ini",
            "jest.config.js",
            "src/deleted.py",
            "src/main.go",
        ] {
            let selection = select(&["src/users.py", path], &SelectGlobs::default(), &[]);
            assert!(selection.all, "{path}: {selection:?}");
            assert_eq!(selection.selected, 5);
            assert!(
                selection.reasons[0].starts_with(path),
                "{:?}",
                selection.reasons
            );
        }
        // Without python3 the graph has no Python: a Python change runs everything.
        let unread = Graph::from_edges(&[], &["src/users.py"], &[]);
        let selection = select_files(
            &changed(&["src/users.py"]),
            &tests(),
            &SelectGlobs::default(),
            &[],
            &unread,
            &Excluded::new(),
        );
        assert!(selection.all, "{selection:?}");
    }

    #[test]
    fn a_glob_naming_no_test_selects_everything_and_bad_globs_are_errors() {
        let globs =
            SelectGlobs::from(Some(&json!({ "src/**": "tests/nothing_*.py" }))).expect("globs");
        assert!(select(&["src/users.py"], &globs, &[]).all);
        assert!(SelectGlobs::from(Some(&json!({ "src/[": "x" }))).is_err());
        assert!(SelectGlobs::from(Some(&json!(["src/**"]))).is_err());
        assert!(SelectGlobs::from(Some(&json!({ "src/**": 3 }))).is_err());
    }

    #[test]
    fn a_data_file_selects_what_reaches_the_code_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            (
                "src/rates.py",
                "import os\nRATES = os.path.join(os.path.dirname(__file__), 'rates.csv')\n",
            ),
            ("src/rates.csv", "eur,1\n"),
            ("tests/test_rates.py", "from src import rates\n"),
            (
                "tests/test_fixtures.py",
                "import glob\nFILES = glob.glob('tests/data/*')\n",
            ),
            ("tests/test_other.py", "def test_x(): pass\n"),
            ("tests/data/users.json", "{}"),
            (".github/workflows/ci.yml", "on: push\n"),
        ];
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        let tracked: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        let graph = Graph::build(dir.path(), &tracked);
        let tests: Vec<String> = tracked
            .iter()
            .filter(|f| is_test_file(f))
            .cloned()
            .collect();
        let select = |path: &str| {
            select_files(
                &changed(&[path]),
                &tests,
                &SelectGlobs::default(),
                &[],
                &graph,
                &Excluded::new(),
            )
        };
        let selection = select("src/rates.csv");
        assert_eq!(selection.tests, ["tests/test_rates.py"], "{selection:?}");
        assert!(
            selection.why["tests/test_rates.py"][0]
                .ends_with("src/rates.py, which names rates.csv"),
            "{selection:?}"
        );
        assert_eq!(
            select("tests/data/users.json").tests,
            ["tests/test_fixtures.py"]
        );
        let ci = select(".github/workflows/ci.yml");
        assert!(
            !ci.all && ci.tests.is_empty(),
            "no code names the CI file: {ci:?}"
        );
    }

    #[test]
    fn own_test_files_are_found_by_name() {
        let files = changed(&[
            "tests/test_enc.py",
            "tests/enc_test.py",
            "tests/test_enc_more.py",
            "web/enc.test.js",
            "tests/test_encx.py",
        ]);
        let found = own_tests("src/enc.py", &files);
        assert_eq!(
            found,
            [
                "tests/test_enc.py",
                "tests/enc_test.py",
                "tests/test_enc_more.py",
                "web/enc.test.js"
            ]
        );
        assert!(own_tests("src/__init__.py", &files).is_empty());
    }
}
