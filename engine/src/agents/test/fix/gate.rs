//! The fix gate, in a scratch worktree at the tested commit (`../scratch.rs`): a proposed
//! patch is accepted only if it applies (`git apply --check`), the project still builds, the
//! tests that failed now pass, and every test that passed before still passes — the same
//! commands, narrowed to the same selection, as the run that failed.

use std::path::{Path, PathBuf};

use super::patch::Patch;
use crate::agents::test::narrow::quote;
use crate::agents::test::results::{Format, Outcome, TestResult, collect};
use crate::agents::test::scratch::{Scratch, bounded, run_shell, tail};
use crate::exec::{LogSink, git};

/// How the failed run ran its tests, and what it found: what a fix is checked against.
pub struct Suite {
    /// The runner commands of the run, in order (already narrowed to the selection).
    pub commands: Vec<String>,
    pub format: Format,
    /// The JUnit report's path, relative to the tree or absolute.
    pub junit: Option<String>,
    /// The step's declared environment.
    pub env: Vec<(String, String)>,
    /// Tests that passed in the run: each must still pass.
    pub passed: Vec<String>,
    /// Tests that failed for real (not flaky, not quarantined): each must now pass.
    pub failing: Vec<String>,
}

/// Runner configuration: a fix that edits it changes how the tests run, not the code.
const RUNNER_CONFIGS: &[&str] = &[
    "pytest.ini",
    "tox.ini",
    ".mocharc.js",
    ".mocharc.json",
    ".mocharc.yml",
    "jest.config.js",
    "jest.config.ts",
    "vitest.config.js",
    "vitest.config.ts",
];

impl Suite {
    /// Whether `path` is part of running the tests: a runner configuration, or a file the
    /// test command names (a repository's own runner script).
    pub fn runs(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        RUNNER_CONFIGS.contains(&name)
            || self.commands.iter().any(|command| {
                command
                    .split_whitespace()
                    .map(|word| word.trim_matches(['\'', '"']))
                    .map(|word| word.strip_prefix("./").unwrap_or(word))
                    .any(|word| word == path)
            })
    }
}

/// Why a patch that parsed was still rejected; the names are what the store records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    DoesNotApply,
    BuildError,
    StillFails,
    BreaksTests,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::DoesNotApply => "does_not_apply",
            Rejection::BuildError => "build_error",
            Rejection::StillFails => "still_fails",
            Rejection::BreaksTests => "breaks_tests",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// With what was checked.
    Accepted(String),
    Rejected(Rejection, String),
}

/// Writes `patch` where `git apply` reads it (beside the tree, not in it).
fn patch_file(scratch: &Scratch, patch: &Patch) -> Result<PathBuf, String> {
    let path = scratch.root.join("fix.patch");
    std::fs::write(&path, patch.text())
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    Ok(path)
}

/// Applies `patch` to the pristine tree at the commit; `Err` with git's words when it does
/// not apply.
pub fn apply(scratch: &Scratch, patch: &Patch) -> Result<Result<(), String>, String> {
    Scratch::reset(&scratch.new)?;
    let file = patch_file(scratch, patch)?;
    let file = file.to_string_lossy();
    // `git apply` itself refuses paths outside the tree and beyond symbolic links.
    let mut args = vec!["apply", "--check"];
    if let Err(why) = git(&scratch.new, &[args.as_slice(), &[file.as_ref()]].concat()) {
        // A hunk with less context after its change than before is taken to end the file
        // (and one at line 1 to start it); models write uneven context anywhere. Without that
        // inference every context line must still match.
        args.push("--unidiff-zero");
        if git(&scratch.new, &[args.as_slice(), &[file.as_ref()]].concat()).is_err() {
            return Ok(Err(why));
        }
    }
    args.retain(|a| *a != "--check");
    git(&scratch.new, &[args.as_slice(), &[file.as_ref()]].concat())?;
    Ok(Ok(()))
}

/// Runs the gate for one parsed patch.
pub async fn validate(
    scratch: &Scratch,
    patch: &Patch,
    suite: &Suite,
    logs: &LogSink,
) -> Result<Verdict, String> {
    let step = |text: String| logs.line("engine", format!("fix: {text}"));
    if let Err(why) = apply(scratch, patch)? {
        return Ok(Verdict::Rejected(Rejection::DoesNotApply, bounded(&why)));
    }
    step(format!("the patch applies ({})", patch.paths().join(", ")));
    let dir = &scratch.new;
    let mut env = suite.env.clone();
    env.extend(scratch.env());
    let mut writable = vec![scratch.root.clone()];
    if let Some(junit) = suite.junit.as_deref().map(Path::new)
        && junit.is_absolute()
        && let Some(folder) = junit.parent()
    {
        writable.push(folder.to_path_buf());
    }
    for command in build_commands(suite, patch, dir) {
        step(format!("building: {command}"));
        let (built, output) = run_shell(&command, dir, &writable, &env).await?;
        if !built {
            return Ok(Verdict::Rejected(
                Rejection::BuildError,
                format!("`{command}` failed:\n{}", tail(&output)),
            ));
        }
    }
    let mut results: Vec<TestResult> = Vec::new();
    let mut outputs = String::new();
    for command in &suite.commands {
        step(format!("running the failed run's tests: {command}"));
        clear_report(suite, dir)?;
        let (_, output) = run_shell(command, dir, &writable, &env).await?;
        match collect(suite.format, suite.junit.as_deref(), dir, &output) {
            Ok(found) => results.extend(found),
            Err(error) => outputs.push_str(&format!("{error}\n")),
        }
        outputs.push_str(&output);
    }
    let outcome = |id: &str| results.iter().find(|r| r.id == id).map(|r| r.outcome);
    let still: Vec<&str> = suite
        .failing
        .iter()
        .filter(|id| outcome(id) != Some(Outcome::Passed))
        .map(String::as_str)
        .collect();
    if !still.is_empty() {
        let how = if results.is_empty() {
            "the tests reported no result"
        } else {
            "still failing"
        };
        return Ok(Verdict::Rejected(
            Rejection::StillFails,
            format!("{how}: {}\n{}", still.join(", "), tail(&outputs)),
        ));
    }
    let broken: Vec<&str> = suite
        .passed
        .iter()
        .filter(|id| outcome(id) != Some(Outcome::Passed))
        .map(String::as_str)
        .collect();
    if !broken.is_empty() {
        return Ok(Verdict::Rejected(
            Rejection::BreaksTests,
            format!(
                "fixes {} but breaks {} test(s) that passed: {}\n{}",
                suite.failing.join(", "),
                broken.len(),
                broken.join(", "),
                tail(&outputs)
            ),
        ));
    }
    Ok(Verdict::Accepted(format!(
        "applies, builds, {} failing test(s) now pass and the {} that passed still pass",
        suite.failing.len(),
        suite.passed.len()
    )))
}

/// What "the project builds" means for the files the patch touches: the cargo test build for
/// a cargo runner, `py_compile` of the patched Python files, `go build ./...` for Go. Other
/// languages are built by their test run itself.
fn build_commands(suite: &Suite, patch: &Patch, dir: &Path) -> Vec<String> {
    let mut commands = Vec::new();
    if let Some(cargo) = suite.commands.iter().find(|c| c.starts_with("cargo test")) {
        // The options before `--` (packages, features, `--offline`); test filters go.
        let options = cargo.split(" -- ").next().unwrap_or(cargo);
        commands.push(options.replacen("cargo test", "cargo test --no-run", 1));
    }
    let present = |path: &&String| dir.join(path.as_str()).is_file();
    let python: Vec<String> = patch
        .paths()
        .iter()
        .filter(|p| p.ends_with(".py"))
        .filter(present)
        .map(|p| quote(p))
        .collect();
    if !python.is_empty() {
        commands.push(format!("python3 -m py_compile {}", python.join(" ")));
    }
    if patch.paths().iter().any(|p| p.ends_with(".go")) && dir.join("go.mod").is_file() {
        commands.push("go build ./...".into());
    }
    commands
}

/// Removes a report an earlier command left, so a run that writes none is not credited with
/// old results.
fn clear_report(suite: &Suite, dir: &Path) -> Result<(), String> {
    let Some(junit) = suite
        .junit
        .as_deref()
        .filter(|_| suite.format == Format::Junit)
    else {
        return Ok(());
    };
    let path = dir.join(junit);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!(
            "failed to remove the old JUnit report {}: {e}",
            path.display()
        )),
        _ => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::test::fix::patch::parse;

    fn suite(commands: &[&str]) -> Suite {
        Suite {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            format: Format::Libtest,
            junit: None,
            env: Vec::new(),
            passed: Vec::new(),
            failing: Vec::new(),
        }
    }

    #[test]
    fn the_runner_and_its_configuration_are_part_of_the_tests() {
        let suite = suite(&["python3 ./run_tests.py 'tests/test_a.py'"]);
        assert!(suite.runs("run_tests.py"));
        assert!(suite.runs("tests/test_a.py"));
        assert!(suite.runs("sub/pytest.ini"));
        assert!(!suite.runs("src/pay.py"));
        assert!(!suite.runs("src/run_tests.py"), "paths are whole");
    }

    #[test]
    fn the_build_follows_the_runner_and_the_patched_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("src")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("src/pay.py"), "x = 1\n").unwrap_or_else(|e| panic!("{e}"));
        let patch = parse("--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n--- a/src/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-y = 1\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            build_commands(&suite(&["python3 -m pytest -q"]), &patch, dir.path()),
            ["python3 -m py_compile src/pay.py"]
        );
        assert_eq!(
            build_commands(
                &suite(&["cargo test --no-fail-fast --offline -p calc -- --exact a::b"]),
                &patch,
                dir.path()
            ),
            [
                "cargo test --no-run --no-fail-fast --offline -p calc",
                "python3 -m py_compile src/pay.py"
            ]
        );
    }
}
