//! Selection for runners other than cargo (pytest, go test, npm test, any command): changed
//! files map to test files through configured globs (`with: select_globs:`) and the file→test
//! map learned from history (co-changes, failures after a change). Safe before small: a build
//! file, a lockfile, test support, an unknown file type or a source file nothing maps selects
//! everything.

use std::collections::BTreeMap;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::Serialize;
use serde_json::Value;

use super::files::{is_test_file, is_test_support};
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
/// commit) through `globs` and learned `links`.
pub fn select_files(
    changed: &[String],
    test_files: &[String],
    globs: &SelectGlobs,
    links: &[TestLink],
) -> FileSelection {
    let total = test_files.len();
    let mut why: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in changed {
        // Explicit configuration first: a glob may map even a build file on purpose.
        let mut mapped = false;
        for GlobRule {
            source,
            matcher,
            tests,
        } in &globs.rules
        {
            if !matcher.is_match(path) {
                continue;
            }
            for (pattern, test_matcher) in tests {
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
                    why.entry(hit.clone())
                        .or_default()
                        .push(format!("select_globs `{source}` matched {path}"));
                }
            }
            mapped = true;
        }
        if mapped {
            continue;
        }
        if is_test_file(path) {
            // A deleted test file is not there to run.
            if test_files.contains(path) {
                why.entry(path.clone()).or_default().push("changed".into());
            }
            continue;
        }
        let category = categorize(path);
        if category == Category::Docs {
            continue;
        }
        if is_test_support(path) {
            return FileSelection::everything(
                format!("{path}: test support can affect any test"),
                total,
            );
        }
        if !matches!(
            category,
            Category::Code | Category::Security | Category::Config
        ) {
            return FileSelection::everything(
                format!(
                    "{path}: a {} file no map can place (selection must be safe before it is small)",
                    category.as_str()
                ),
                total,
            );
        }
        let mut linked = false;
        for link in links
            .iter()
            .filter(|l| &l.source_path == path && test_files.contains(&l.test_file))
        {
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
            why.entry(link.test_file.clone()).or_default().push(reason);
            linked = true;
        }
        if !linked {
            return FileSelection::everything(
                format!(
                    "{path}: no learned or configured test maps it (selection must be safe before it is small)"
                ),
                total,
            );
        }
    }
    let tests: Vec<String> = why.keys().cloned().collect();
    let reasons = why
        .iter()
        .map(|(test, reasons)| format!("{test}: {}", reasons.join("; ")))
        .collect();
    FileSelection {
        all: false,
        selected: tests.len(),
        tests,
        total,
        why,
        reasons,
    }
}

fn plural(count: u32) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tests() -> Vec<String> {
        [
            "tests/test_payments.py",
            "tests/test_payments_refund.py",
            "tests/test_users.py",
            "tests/test_api.py",
        ]
        .map(String::from)
        .to_vec()
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

    #[test]
    fn globs_select_matching_tests() {
        let globs = SelectGlobs::from(Some(
            &json!({ "src/payments/**": ["tests/test_payments*.py"] }),
        ))
        .expect("globs");
        let selection = select_files(
            &changed(&["src/payments/card/charge.py"]),
            &tests(),
            &globs,
            &[],
        );
        assert!(!selection.all, "{selection:?}");
        assert_eq!(
            selection.tests,
            ["tests/test_payments.py", "tests/test_payments_refund.py"]
        );
        assert_eq!((selection.selected, selection.total), (2, 4));
        assert!(selection.why["tests/test_payments.py"][0].contains("src/payments/**"));
    }

    #[test]
    fn learned_links_select_and_explain() {
        let links = [
            link("src/users.py", "tests/test_users.py", "co_change", 3),
            link("src/users.py", "tests/test_api.py", "failure", 1),
            link("src/users.py", "tests/deleted_test.py", "co_change", 9),
        ];
        let selection = select_files(
            &changed(&["src/users.py", "README.md"]),
            &tests(),
            &SelectGlobs::default(),
            &links,
        );
        assert_eq!(
            selection.tests,
            ["tests/test_api.py", "tests/test_users.py"],
            "a test file no longer there is not selected"
        );
        assert_eq!(
            selection.why["tests/test_users.py"],
            ["changed together with src/users.py in 3 commits"]
        );
        assert_eq!(
            selection.why["tests/test_api.py"],
            ["failed after src/users.py changed (1 run)"]
        );
    }

    #[test]
    fn a_changed_test_selects_itself_and_docs_nothing() {
        let selection = select_files(
            &changed(&["tests/test_users.py", "docs/guide.md"]),
            &tests(),
            &SelectGlobs::default(),
            &[],
        );
        assert_eq!(selection.tests, ["tests/test_users.py"]);
        let selection = select_files(
            &changed(&["README.md"]),
            &tests(),
            &SelectGlobs::default(),
            &[],
        );
        assert!(!selection.all && selection.tests.is_empty());
    }

    #[test]
    fn what_cannot_be_placed_selects_everything() {
        for path in [
            "requirements.txt",
            "poetry.lock",
            "Makefile",
            "src/unmapped.py",
            "tests/conftest.py",
            "assets/logo.xyz",
        ] {
            let links = [link("src/users.py", "tests/test_users.py", "co_change", 1)];
            let selection = select_files(
                &changed(&["src/users.py", path]),
                &tests(),
                &SelectGlobs::default(),
                &links,
            );
            assert!(selection.all, "{path}: {selection:?}");
            assert_eq!(selection.selected, 4);
            assert!(
                selection.reasons[0].starts_with(path),
                "{:?}",
                selection.reasons
            );
        }
    }

    #[test]
    fn a_glob_naming_no_test_selects_everything_and_bad_globs_are_errors() {
        let globs =
            SelectGlobs::from(Some(&json!({ "src/**": "tests/nothing_*.py" }))).expect("globs");
        assert!(select_files(&changed(&["src/a.py"]), &tests(), &globs, &[]).all);
        assert!(SelectGlobs::from(Some(&json!({ "src/[": "x" }))).is_err());
        assert!(SelectGlobs::from(Some(&json!(["src/**"]))).is_err());
        assert!(SelectGlobs::from(Some(&json!({ "src/**": 3 }))).is_err());
    }
}
