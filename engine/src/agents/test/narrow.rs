//! Narrowing a runner's command to the selected test files: a `{tests}` placeholder in any
//! command, pytest and JavaScript runners (test files as arguments), `go test` (the packages of
//! the files and `-run` over the test functions they define), node's test runner.

use std::collections::BTreeSet;
use std::path::Path;

/// Quotes a path for `sh -c` when it needs it.
pub fn quote(path: &str) -> String {
    if path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c))
    {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', r"'\''"))
    }
}

/// The command for the whole suite: a `{tests}` placeholder stands for nothing.
pub fn full(command: &str) -> String {
    command.replace(" {tests}", "").replace("{tests}", "")
}

/// The command that runs only `tests` (test files relative to `workspace`), or why it cannot
/// be narrowed (then the whole suite runs).
pub fn narrow(command: &str, tests: &[String], workspace: &Path) -> Result<String, String> {
    let files = tests.iter().map(|t| quote(t)).collect::<Vec<_>>().join(" ");
    if command.contains("{tests}") {
        return Ok(command.replace("{tests}", &files));
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let has = |word: &str| {
        words
            .iter()
            .any(|w| *w == word || w.ends_with(&format!("/{word}")))
    };
    let node_test = has("node") && words.contains(&"--test");
    if has("pytest") || has("jest") || has("vitest") || has("mocha") || node_test {
        return Ok(format!("{command} {files}"));
    }
    if words
        .windows(2)
        .any(|w| w == ["npm", "test"] || w == ["yarn", "test"] || w == ["pnpm", "test"])
    {
        let separator = if words.contains(&"--") { "" } else { " --" };
        return Ok(format!("{command}{separator} {files}"));
    }
    if words.windows(2).any(|w| w == ["go", "test"]) {
        return narrow_go(command, tests, workspace);
    }
    Err(format!(
        "cannot narrow `{command}` to test files: put {{tests}} where they go"
    ))
}

fn narrow_go(command: &str, tests: &[String], workspace: &Path) -> Result<String, String> {
    let mut packages = BTreeSet::new();
    let mut functions = BTreeSet::new();
    for test in tests {
        let text = std::fs::read_to_string(workspace.join(test))
            .map_err(|e| format!("failed to read {test}: {e}"))?;
        functions.extend(go_tests(&text));
        let dir = test.rsplit_once('/').map_or(".", |(dir, _)| dir);
        packages.insert(if dir == "." {
            "./".to_string()
        } else {
            format!("./{dir}")
        });
    }
    if functions.is_empty() {
        return Err("the selected Go test files define no Test functions".into());
    }
    let packages = packages.into_iter().collect::<Vec<_>>().join(" ");
    let run = format!(
        "-run '^({})$'",
        functions.into_iter().collect::<Vec<_>>().join("|")
    );
    let narrowed = if command.contains("./...") {
        command.replace("./...", &format!("{run} {packages}"))
    } else {
        format!("{command} {run} {packages}")
    };
    Ok(narrowed)
}

/// `func TestX(t *testing.T)` names in a Go test file.
pub fn go_tests(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("func Test"))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| format!("Test{name}")))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn runners_are_narrowed_to_files() {
        let here = Path::new(".");
        let tests = files(&["tests/test_a.py", "tests/it's.py"]);
        assert_eq!(
            narrow("python3 -m pytest --junitxml=r.xml", &tests, here).as_deref(),
            Ok("python3 -m pytest --junitxml=r.xml tests/test_a.py 'tests/it'\\''s.py'")
        );
        assert_eq!(
            narrow("sh run.sh {tests} --fast", &files(&["a.py"]), here).as_deref(),
            Ok("sh run.sh a.py --fast")
        );
        assert_eq!(
            narrow("npm test", &files(&["a.test.js"]), here).as_deref(),
            Ok("npm test -- a.test.js")
        );
        assert_eq!(
            narrow("npm test -- --ci", &files(&["a.test.js"]), here).as_deref(),
            Ok("npm test -- --ci a.test.js")
        );
        assert_eq!(
            narrow("node --test", &files(&["test/a.test.js"]), here).as_deref(),
            Ok("node --test test/a.test.js")
        );
        assert!(narrow("make check", &tests, here).is_err());
        assert_eq!(full("sh run.sh {tests}"), "sh run.sh");
    }

    #[test]
    fn go_test_gets_packages_and_a_run_pattern() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pay")).expect("mkdir");
        std::fs::write(dir.path().join("pay/pay_test.go"), "package pay\n\nfunc TestCharge(t *testing.T) {}\nfunc TestRefund(t *testing.T) {}\nfunc helper() {}\n").expect("write");
        let narrowed = narrow(
            "go test -json ./...",
            &files(&["pay/pay_test.go"]),
            dir.path(),
        );
        assert_eq!(
            narrowed.as_deref(),
            Ok("go test -json -run '^(TestCharge|TestRefund)$' ./pay")
        );
    }
}
