//! The measure for runners that select test files (pytest, node's test runner, any command
//! whose JUnit report Cairn can read): per commit, the agent's own file selection (import
//! graph, own test files by name, history learned into a store in the scratch directory),
//! the fraction of the suite's test cases in the selected files, and safety by mutation:
//! every changed Python or JavaScript function gets a guard (`script_mutants.rs`), the whole
//! suite runs with the faults on, the files of the failing tests run again with them off, and
//! every test failing only with the faults must be in a selected file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::mutate::SWITCH;
use super::script_mutants;
use super::{CommitReport, Error, Options, Progress, empty};
use crate::agents::test::imports::Graph;
use crate::agents::test::narrow::{go_tests, narrow};
use crate::agents::test::per_test::{self, Excluded};
use crate::agents::test::results::{Outcome, TestResult, parse_go_json, parse_junit};
use crate::agents::test::runner::with_report;
use crate::agents::test::{SelectGlobs, files, go_comments, learn, select_files};
use crate::store::Store;

/// The suite command made to write Cairn's JUnit report, and where; or a `go test -json`
/// command, whose events (its standard output) are kept in the report file.
pub struct FileSuite {
    command: String,
    report: std::path::PathBuf,
    go: bool,
}

impl FileSuite {
    pub fn new(command: &str, scratch: &Path) -> Result<FileSuite, Error> {
        let words: Vec<&str> = command.split_whitespace().collect();
        if words.windows(2).any(|w| w == ["go", "test"]) {
            let command = if words.contains(&"-json") {
                command.to_string()
            } else {
                command.replacen("go test", "go test -json", 1)
            };
            return Ok(FileSuite {
                command,
                report: scratch.join("reports").join("go-test.json"),
                go: true,
            });
        }
        let report = scratch.join("reports").join("junit.xml");
        let command = with_report(command, &report)
            .map_err(Error::Command)?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--command: `{command}` is neither `cargo test …`, `go test …` nor a runner whose report Cairn writes (pytest, node --test)"
                ))
            })?;
        Ok(FileSuite {
            command,
            report,
            go: false,
        })
    }

    pub fn command(&self) -> &str {
        &self.command
    }
}

pub fn measure_commit(
    options: &Options,
    suite: &FileSuite,
    store: &Store,
    checkout: &Path,
    commit: &str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CommitReport, Error> {
    let mut report = empty(commit);
    let repo_key = options.repo.display().to_string();
    if options.per_test_coverage {
        progress(Progress::Step("recording per-test coverage at the parent"));
        if let Err(error) =
            record_parent_coverage(options, suite, store, checkout, commit, &repo_key)
        {
            report
                .notes
                .push(format!("per-test coverage not recorded: {error}"));
        }
    }
    // Installed dependencies stay; what a previous commit's run left does not.
    super::check_out(checkout, commit, &["node_modules", ".venv"])?;
    progress(Progress::Step("selecting"));
    let all_changed = files::changed(checkout, commit).map_err(Error::Git)?;
    // As the agent selects: a Go file changed only in comments changed nothing that runs.
    let changed = go_comments::behaviour_changed(checkout, commit, &all_changed);
    let tracked = files::tracked(checkout, commit).map_err(Error::Git)?;
    let test_files: Vec<String> = tracked
        .iter()
        .filter(|f| files::is_test_file(f))
        .cloned()
        .collect();
    let graph = Graph::build(checkout, &tracked);
    learn::learn_history(store, &repo_key, checkout, commit).map_err(Error::Command)?;
    let links = store
        .test_links(&repo_key, &changed)
        .map_err(|e| Error::Command(e.to_string()))?;
    let coverage = if options.per_test_coverage {
        let records = store
            .test_coverage(&repo_key)
            .map_err(|e| Error::Command(e.to_string()))?;
        per_test::excluded(checkout, commit, &changed, &records, &graph, &test_files)
    } else {
        Excluded::new()
    };
    let selection = select_files(
        &changed,
        &test_files,
        &SelectGlobs::default(),
        &links,
        &graph,
        &coverage,
    );
    report.selection_all = selection.all;
    report.selection_reasons = selection.reasons.clone();
    if selection.all {
        report.fraction = Some(1.0);
        report.safety_skipped =
            Some("everything selected: every fault-revealing test is kept".into());
        return Ok(report);
    }
    let chosen: BTreeSet<&str> = selection.tests.iter().map(String::as_str).collect();
    // Faults in the changed functions of source files (test files are what reveals them).
    let hunks = files::changed_hunks(checkout, commit).map_err(Error::Git)?;
    let mut mutants = Vec::new();
    for (file, hunks) in &hunks {
        if files::is_test_file(file)
            || mutants.len() >= options.max_mutants
            || (all_changed.contains(file) && !changed.contains(file))
        {
            continue;
        }
        let lines: Vec<(usize, usize)> = hunks
            .iter()
            .filter(|h| h.count > 0)
            .map(|h| (h.start as usize, (h.start + h.count - 1) as usize))
            .collect();
        if lines.is_empty() {
            continue;
        }
        match script_mutants::plant(checkout, file, &lines) {
            Ok(found) => mutants.extend(found),
            Err(error) => report.notes.push(error),
        }
    }
    report.mutants = mutants
        .iter()
        .map(|m| format!("{}:{} {}", m.file, m.line, m.name))
        .collect();
    if mutants.is_empty() && selection.tests.is_empty() {
        report.fraction = Some(0.0);
        report.selected = Some(0);
        report.safety_skipped = Some("no function changed, and no test selected".into());
        return Ok(report);
    }
    progress(Progress::Step(if mutants.is_empty() {
        "running the suite"
    } else {
        "running the suite with faults"
    }));
    let mut results = run(
        suite,
        checkout,
        &suite.command,
        !mutants.is_empty(),
        options.binary_timeout,
    )?;
    if suite.go && !mutants.is_empty() {
        complete_go(
            suite,
            checkout,
            &test_files,
            &mut results,
            options.binary_timeout,
        )?;
    }
    let file_of = |result: &TestResult| -> Option<String> {
        if suite.go {
            return go_test_file(&result.id, checkout, &test_files);
        }
        learn::test_file_of(&result.id, checkout, &test_files)
            .into_iter()
            .next()
    };
    let mut selected = 0;
    let mut total = 0;
    let mut failed: BTreeMap<String, Vec<&TestResult>> = BTreeMap::new();
    for result in results.iter().filter(|r| r.outcome != Outcome::Ignored) {
        total += 1;
        let file = file_of(result);
        selected += usize::from(file.as_deref().is_some_and(|f| chosen.contains(f)));
        if result.outcome == Outcome::Failed {
            failed
                .entry(file.unwrap_or_default())
                .or_default()
                .push(result);
        }
    }
    report.selected = Some(selected);
    report.total = Some(total);
    report.fraction = (total > 0).then(|| selected as f64 / total as f64);
    if mutants.is_empty() {
        report.safety_skipped = Some("no function changed".into());
        return Ok(report);
    }
    if !failed.is_empty() {
        progress(Progress::Step("re-running failures without faults"));
        let known: Vec<String> = failed.keys().filter(|f| !f.is_empty()).cloned().collect();
        let command = if failed.contains_key("") {
            suite.command.clone()
        } else {
            narrow(&suite.command, &known, checkout).unwrap_or_else(|_| suite.command.clone())
        };
        let clean = run(suite, checkout, &command, false, options.binary_timeout)?;
        for (file, tests) in &failed {
            for test in tests {
                let passed = clean
                    .iter()
                    .any(|r| r.id == test.id && r.outcome == Outcome::Passed);
                if passed {
                    if !chosen.contains(file.as_str()) {
                        report.missed.push(test.id.clone());
                    }
                    report.revealing.push(test.id.clone());
                } else {
                    report.failing_anyway.push(test.id.clone());
                }
            }
        }
    }
    if report.revealing.is_empty() {
        report.safety_skipped = Some("no test of the suite revealed the faults".into());
    }
    Ok(report)
}

/// What a previous pipeline run with `coverage: true` would have recorded: the suite at the
/// parent of `commit`, under coverage.py with one context per test (`per_test.rs`).
fn record_parent_coverage(
    options: &Options,
    suite: &FileSuite,
    store: &Store,
    checkout: &Path,
    commit: &str,
    repo_key: &str,
) -> Result<(), Error> {
    let words: Vec<&str> = suite.command.split_whitespace().collect();
    let rest = match words.as_slice() {
        ["pytest", rest @ ..] => rest,
        ["python3" | "python", "-m", "pytest", rest @ ..] => rest,
        _ => {
            return Err(Error::Usage(format!(
                "per-test coverage is recorded for pytest commands only, not `{}`",
                suite.command
            )));
        }
    };
    let parent = crate::exec::git(
        checkout,
        &["rev-parse", "--verify", "--quiet", &format!("{commit}^1")],
    )
    .map_err(Error::Git)?;
    let parent = parent.trim().to_string();
    super::check_out(checkout, &parent, &["node_modules", ".venv"])?;
    let folder = options.scratch.join("per-test-coverage");
    std::fs::create_dir_all(&folder).map_err(|source| Error::Write {
        path: folder.clone(),
        source,
    })?;
    let plugin = folder.join(format!("{}.py", per_test::CONTEXT_PLUGIN_MODULE));
    std::fs::write(&plugin, per_test::CONTEXT_PLUGIN).map_err(|source| Error::Write {
        path: plugin.clone(),
        source,
    })?;
    let data = folder.join(".coverage");
    let contexts = folder.join("contexts.json");
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&contexts);
    let command = format!(
        "PYTHONPATH='{}'${{PYTHONPATH:+:$PYTHONPATH}} python3 -m coverage run --data-file='{}' --source=. -m pytest -p {} {}",
        folder.display(),
        data.display(),
        per_test::CONTEXT_PLUGIN_MODULE,
        rest.join(" ")
    );
    // Failing tests still record what they ran; only a run that reports nothing is an error.
    run(suite, checkout, &command, false, options.binary_timeout)?;
    let output = Command::new("python3")
        .args(["-m", "coverage", "json", "--show-contexts", "-o"])
        .arg(&contexts)
        .arg(format!("--data-file={}", data.display()))
        .current_dir(checkout)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command(format!("failed to run coverage json: {e}")))?;
    if !output.status.success() {
        return Err(Error::Command(format!(
            "coverage json failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let json = std::fs::read_to_string(&contexts)
        .map_err(|e| Error::Command(format!("coverage wrote no {}: {e}", contexts.display())))?;
    let records = per_test::parse_contexts(&json, &parent).map_err(Error::Command)?;
    store
        .write(|txn| txn.record_test_coverage(repo_key, &records))
        .map_err(|e| Error::Command(e.to_string()))?;
    Ok(())
}

/// Runs `command` in `checkout` (faults on or off) within `limit`, and reads its report.
fn run(
    suite: &FileSuite,
    checkout: &Path,
    command: &str,
    faults: bool,
    limit: Duration,
) -> Result<Vec<TestResult>, Error> {
    match std::fs::remove_file(&suite.report) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Write {
                path: suite.report.clone(),
                source: e,
            });
        }
        _ => {}
    }
    if let Some(reports) = suite.report.parent() {
        std::fs::create_dir_all(reports).map_err(|source| Error::Write {
            path: reports.to_path_buf(),
            source,
        })?;
    }
    // `go test -json` reports on its standard output.
    let stdout = if suite.go {
        let file = std::fs::File::create(&suite.report).map_err(|source| Error::Write {
            path: suite.report.clone(),
            source,
        })?;
        Stdio::from(file)
    } else {
        Stdio::null()
    };
    let mut process = Command::new("sh");
    process
        .arg("-c")
        .arg(command)
        .current_dir(checkout)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        // Its own process group, so the time limit stops whatever the suite started.
        .process_group(0);
    if faults {
        process.env(SWITCH, "1");
    } else {
        process.env_remove(SWITCH);
    }
    let mut child = process
        .spawn()
        .map_err(|e| Error::Command(format!("failed to run `{command}`: {e}")))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > limit => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                return Err(Error::Command(format!(
                    "`{command}` ran over its time limit of {}s",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(Error::Command(format!(
                    "failed to wait for `{command}`: {e}"
                )));
            }
        }
    }
    let xml = std::fs::read_to_string(&suite.report).map_err(|e| {
        Error::Command(format!(
            "`{command}` wrote no report {}: {e}",
            suite.report.display()
        ))
    })?;
    if suite.go {
        let results = parse_go_json(&xml);
        if results.is_empty() {
            return Err(Error::Command(format!(
                "`{command}` reported no test (did it build?)"
            )));
        }
        return Ok(results);
    }
    parse_junit(&xml).map_err(Error::Command)
}

/// A fault panics, and a panic ends a Go package's test binary: the package's later tests
/// never report. So each package that failed with the faults runs again with its unreported
/// top-level tests only, until every test of it has reported or a run reports nothing new.
fn complete_go(
    suite: &FileSuite,
    checkout: &Path,
    test_files: &[String],
    results: &mut Vec<TestResult>,
    limit: Duration,
) -> Result<(), Error> {
    let mut by_dir: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for file in test_files.iter().filter(|f| f.ends_with("_test.go")) {
        let Ok(text) = std::fs::read_to_string(checkout.join(file)) else {
            continue;
        };
        let dir = file.rsplit_once('/').map_or("", |(dir, _)| dir);
        by_dir.entry(dir).or_default().extend(go_tests(&text));
    }
    loop {
        let mut reported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut failed_dirs = BTreeSet::new();
        for result in results.iter() {
            let Some(file) = go_test_file(&result.id, checkout, test_files) else {
                continue;
            };
            let dir = file.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
            let top = result.name.split('/').next().unwrap_or(&result.name);
            reported
                .entry(dir.clone())
                .or_default()
                .insert(top.to_string());
            if result.outcome == Outcome::Failed {
                failed_dirs.insert(dir);
            }
        }
        let mut progressed = false;
        for dir in failed_dirs {
            let missing: Vec<&String> = by_dir
                .get(dir.as_str())
                .into_iter()
                .flatten()
                .filter(|t| !reported.get(&dir).is_some_and(|r| r.contains(t.as_str())))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let run_only = format!(
                "-run '^({})$' ./{dir}",
                missing
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join("|")
            );
            let command = if suite.command.contains("./...") {
                suite.command.replace("./...", &run_only)
            } else {
                format!("{} {run_only}", suite.command)
            };
            let more = match run(suite, checkout, &command, true, limit) {
                Ok(more) => more,
                // A run that built but reported no test: nothing more to learn here.
                Err(Error::Command(_)) => Vec::new(),
                Err(other) => return Err(other),
            };
            let known: BTreeSet<String> = results.iter().map(|r| r.id.clone()).collect();
            for result in more {
                if !known.contains(&result.id) {
                    progressed = true;
                    results.push(result);
                }
            }
        }
        if !progressed {
            return Ok(());
        }
    }
}

/// The test file of a `go test -json` result (`import/path::TestX/subtest`): among the files
/// defining `func TestX(`, the one whose directory ends the package's import path (the
/// repository root's files match any path, and lose to a longer match).
fn go_test_file(id: &str, checkout: &Path, test_files: &[String]) -> Option<String> {
    let (package, test) = id.rsplit_once("::")?;
    let function = test.split('/').next().unwrap_or(test);
    let definition = format!("func {function}(");
    test_files
        .iter()
        .filter(|f| f.ends_with("_test.go"))
        .filter_map(|file| {
            let dir = file.rsplit_once('/').map_or("", |(dir, _)| dir);
            let matched = dir.is_empty() || package == dir || package.ends_with(&format!("/{dir}"));
            matched.then_some((dir.len(), file))
        })
        .filter(|(_, file)| {
            std::fs::read_to_string(checkout.join(file.as_str()))
                .is_ok_and(|text| text.contains(&definition))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, file)| file.clone())
}
