//! What Cairn knows about the test runners it drives without being told: which runner a
//! command is, how to get a JUnit report of Cairn's choosing from it when the command names
//! none (pytest's `--junitxml`, node's test runner through Cairn's own reporter, which names
//! each test's file), and how to re-run one failed test to tell flaky from broken.

use std::path::Path;

use super::narrow::{full, narrow, quote};

/// Node's test runner reporter that writes JUnit with the test's file as `classname` (node's
/// own `junit` reporter names no file, so tests of different files could not be told apart).
pub const NODE_REPORTER: &str = r#"// Written by Cairn: JUnit for node --test, one <testcase> per test, classname = its file.
import { relative } from 'node:path';
const escape = (text) => String(text).replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]);
export default async function* cairnJunit(source) {
  const cases = [];
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const data = event.data;
    if (data.details && data.details.type === 'suite') continue;
    const file = data.file ? relative(process.cwd(), data.file) : '';
    const seconds = ((data.details && data.details.duration_ms) || 0) / 1000;
    let body = '';
    if (event.type === 'test:fail') {
      const error = data.details && data.details.error;
      body = `<failure message="${escape(error && error.message ? error.message : 'failed')}"/>`;
    } else if (data.skip !== undefined || data.todo !== undefined) {
      body = '<skipped/>';
    }
    cases.push(`<testcase classname="${escape(file)}" name="${escape(data.name)}" time="${seconds}">${body}</testcase>`);
  }
  yield `<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="node">${cases.join('\n')}</testsuite></testsuites>\n`;
}
"#;

/// A runner Cairn recognises in a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Pytest,
    Node,
    Jest,
    Vitest,
    Mocha,
    Other,
}

impl Runner {
    pub fn of(command: &str) -> Runner {
        let words: Vec<&str> = command.split_whitespace().collect();
        let has = |word: &str| {
            words
                .iter()
                .any(|w| *w == word || w.ends_with(&format!("/{word}")))
        };
        if has("pytest") || has("py.test") {
            Runner::Pytest
        } else if has("node") && words.contains(&"--test") {
            Runner::Node
        } else if has("jest") {
            Runner::Jest
        } else if has("vitest") {
            Runner::Vitest
        } else if has("mocha") {
            Runner::Mocha
        } else {
            Runner::Other
        }
    }
}

/// `command` made to write a JUnit report to `report` (absolute), when it is a runner Cairn
/// knows that was given no report of its own; `None` otherwise. Node's reporter module is
/// written into `reports` (the directory holding `report`).
pub fn with_report(command: &str, report: &Path) -> Result<Option<String>, String> {
    let path = quote(&report.display().to_string());
    match Runner::of(command) {
        Runner::Pytest if !command.contains("--junitxml") && !command.contains("--junit-xml") => {
            // After the runner's own words, before any `{tests}` or file arguments narrow adds.
            Ok(Some(insert_option(command, &format!("--junitxml={path}"))))
        }
        Runner::Node if !command.contains("--test-reporter") => {
            let dir = report.parent().unwrap_or(report);
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
            let module = dir.join("cairn-node-junit.mjs");
            std::fs::write(&module, NODE_REPORTER)
                .map_err(|e| format!("failed to write {}: {e}", module.display()))?;
            let module = quote(&module.display().to_string());
            Ok(Some(insert_option(
                command,
                &format!(
                    "--test-reporter=spec --test-reporter-destination=stdout --test-reporter={module} --test-reporter-destination={path}"
                ),
            )))
        }
        _ => Ok(None),
    }
}

/// `option` placed right after the runner's word (`pytest`, `--test`), so arguments that
/// follow (files, `{tests}`) stay last.
fn insert_option(command: &str, option: &str) -> String {
    let words: Vec<&str> = command.split(' ').collect();
    let anchor = words.iter().position(|w| {
        *w == "pytest" || w.ends_with("/pytest") || *w == "py.test" || *w == "--test"
    });
    match anchor {
        Some(index) => {
            let mut out: Vec<&str> = words[..=index].to_vec();
            out.push(option);
            out.extend(&words[index + 1..]);
            out.join(" ")
        }
        None => format!("{command} {option}"),
    }
}

/// The command that re-runs the one test `name` of `file` (`classname` is the JUnit class,
/// used for pytest's node id), or `None` when the runner cannot be narrowed to one test.
pub fn rerun(
    command: &str,
    file: Option<&str>,
    classname: &str,
    name: &str,
    workspace: &Path,
) -> Option<String> {
    let base = full(command);
    match (Runner::of(command), file) {
        (Runner::Pytest, Some(file)) => {
            // `tests.test_pay.TestRefund` in `tests/test_pay.py` → `::TestRefund::name`.
            let module = file.trim_end_matches(".py").replace('/', ".");
            let classes = classname
                .strip_prefix(&module)
                .unwrap_or_default()
                .trim_start_matches('.');
            let mut id = file.to_string();
            for class in classes.split('.').filter(|c| !c.is_empty()) {
                id.push_str("::");
                id.push_str(class);
            }
            id.push_str("::");
            id.push_str(name);
            narrow(&base, &[id], workspace).ok()
        }
        (Runner::Node, Some(file)) => {
            let pattern = format!(
                "--test-name-pattern={}",
                quote(&format!("^{}$", regex::escape(name)))
            );
            narrow(
                &insert_option(&base, &pattern),
                &[file.to_string()],
                workspace,
            )
            .ok()
        }
        (Runner::Jest | Runner::Vitest, Some(file)) => {
            let filtered = format!("{base} -t {}", quote(&format!("^{}$", regex::escape(name))));
            narrow(&filtered, &[file.to_string()], workspace).ok()
        }
        (Runner::Mocha, Some(file)) => {
            let filtered = format!("{base} --grep {}", quote(&regex::escape(name)));
            narrow(&filtered, &[file.to_string()], workspace).ok()
        }
        // A command with `{tests}` runs the test's whole file; the test's own outcome counts.
        (Runner::Other, Some(file)) if command.contains("{tests}") => {
            narrow(command, &[file.to_string()], workspace).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_are_recognised_and_given_a_report() {
        let report = tempfile::tempdir().expect("tempdir");
        let xml = report.path().join("step.xml");
        assert_eq!(Runner::of("python3 -m pytest -q"), Runner::Pytest);
        assert_eq!(Runner::of("node --test test/"), Runner::Node);
        assert_eq!(Runner::of("npx jest"), Runner::Jest);
        assert_eq!(Runner::of("make check"), Runner::Other);
        let pytest = with_report("python3 -m pytest -q {tests}", &xml).expect("pytest");
        assert_eq!(
            pytest,
            Some(format!(
                "python3 -m pytest --junitxml={} -q {{tests}}",
                xml.display()
            ))
        );
        assert_eq!(with_report("pytest --junitxml=r.xml", &xml), Ok(None));
        let node = with_report("node --test", &xml)
            .expect("node")
            .expect("a report");
        assert!(
            node.starts_with("node --test --test-reporter=spec"),
            "{node}"
        );
        assert!(report.path().join("cairn-node-junit.mjs").exists());
        assert_eq!(with_report("cargo test", &xml), Ok(None));
    }

    #[test]
    fn one_test_is_re_run_the_way_its_runner_filters() {
        let here = Path::new(".");
        assert_eq!(
            rerun(
                "python3 -m pytest -q --junitxml=r.xml",
                Some("tests/test_pay.py"),
                "tests.test_pay.TestRefund",
                "test_full[1]",
                here
            )
            .as_deref(),
            Some(
                "python3 -m pytest -q --junitxml=r.xml 'tests/test_pay.py::TestRefund::test_full[1]'"
            )
        );
        assert_eq!(
            rerun(
                "pytest {tests}",
                Some("test_a.py"),
                "test_a",
                "test_x",
                here
            )
            .as_deref(),
            Some("pytest test_a.py::test_x")
        );
        assert_eq!(
            rerun(
                "node --test --test-reporter=x",
                Some("test/a.test.js"),
                "test/a.test.js",
                "adds (1+1)",
                here
            )
            .as_deref(),
            Some(
                "node --test --test-name-pattern='^adds \\(1\\+1\\)$' --test-reporter=x test/a.test.js"
            )
        );
        assert_eq!(
            rerun(
                "python3 run.py {tests}",
                Some("tests/test_a.py"),
                "tests.test_a",
                "test_x",
                here
            )
            .as_deref(),
            Some("python3 run.py tests/test_a.py")
        );
        assert_eq!(rerun("make check", Some("t.py"), "t", "x", here), None);
        assert_eq!(rerun("pytest", None, "t", "x", here), None);
    }
}
