//! `agent: test_agent`: runs the repository's tests through its own runner, only those the
//! change can affect, re-runs failures to tell flaky tests from broken ones, and quarantines
//! tests that keep flapping.
//!
//! ```yaml
//! - id: test
//!   agent: test_agent
//!   with:
//!     command: cargo test --workspace   # the runner (default: cargo test --workspace); pytest
//!                                       # and `node --test` get Cairn's JUnit report if none
//!     format: libtest                   # libtest | junit | go-json (default: from the command)
//!     junit: target/junit.xml           # where a JUnit-writing runner puts its report
//!     rerun: "cargo test -- --exact {test}"   # how to re-run one test: {test}, {file},
//!                                       # {packages} (default: per runner, see runner.rs)
//!     reruns: 2                         # re-runs of a failed test before it counts as failed
//!     select: true                      # change-based selection (forced off for high risk)
//!                                       # cargo: by module graph, see `rust/`
//!     quarantine_above: 0.3             # flakiness score that quarantines a test
//!     select_globs:                     # other runners: changed path glob → test file glob(s)
//!       "src/payments/**": ["tests/test_payments*.py"]
//!     coverage: true                    # changed lines no test ran (coverage.py, cargo llvm-cov)
//!     generate: false                   # propose tests for untested changed functions
//!     proposals: patch                  # patch | branch | both: where accepted tests go
//!     max_proposals: 3                  # proposals per commit
//!     fix: false                        # on real failures, propose a fix (see `fix/`)
//!     max_fixes: 1                      # fix proposals per failing step (1 to 10)
//! ```
//!
//! Runners other than cargo select the test files the static import graph reaches (`imports/`,
//! `select_files.rs`), plus a changed file's own test file, the globs and what history learned
//! (`learn.rs`, which only adds), and are narrowed to them (`narrow.rs`: pytest, node and other
//! JavaScript runners, `go test`, or `{tests}` in any command). Agent steps get the workflow's
//! and the step's `env:`.

mod coverage;
mod files;
pub mod fix;
mod flaky;
pub mod generate;
mod go_comments;
mod handover;
pub mod imports;
mod learn;
pub mod measure;
mod narrow;
mod per_test;
mod results;
mod runner;
pub mod rust;
mod scratch;
mod select;
mod select_files;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use flaky::score as flakiness;
pub use results::{Format, Outcome, TestResult, parse_go_json, parse_junit, parse_libtest};
pub use select::{Selection, Unit, select_rust, select_rust_changes};
pub use select_files::{FileSelection, SelectGlobs, select_files};

use super::registry::{Agent, AgentContext, AgentError, AgentFuture};
use crate::exec::sandbox;
use crate::llm::Router;

pub struct TestAgent {
    llm: Option<std::sync::Arc<Router>>,
}

impl TestAgent {
    /// `llm` proposes tests when `with: generate:` is on, and fixes when `with: fix:` is;
    /// without it none are proposed.
    pub fn new(llm: Option<std::sync::Arc<Router>>) -> TestAgent {
        TestAgent { llm }
    }
}

struct Config {
    command: String,
    format: Format,
    junit: Option<String>,
    rerun: Option<String>,
    reruns: u32,
    select: bool,
    quarantine_above: f64,
    globs: SelectGlobs,
    coverage: bool,
    generate: generate::Options,
    fix: fix::Options,
}

impl Config {
    /// `reports` is where Cairn puts a JUnit report of its own choosing when a runner it
    /// knows (pytest, node's test runner) was given none.
    fn from(with: &Value, reports: &Path) -> Result<Config, AgentError> {
        let text = |key: &str| with.get(key).and_then(Value::as_str).map(str::to_string);
        let mut command = text("command").unwrap_or_else(|| "cargo test --workspace".into());
        let mut own_report = None;
        if with.get("format").is_none() && text("junit").is_none() && junit_path(&command).is_none()
        {
            let report = reports.join("junit.xml");
            if let Some(reporting) =
                runner::with_report(&command, &report).map_err(AgentError::new)?
            {
                command = reporting;
                own_report = Some(report.display().to_string());
            }
        }
        let format = match with.get("format") {
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|_| AgentError::new(format!("with.format: expected libtest, junit or go-json, got {value}")))?,
            // `pytest --junitxml=report.xml` says both the format and where the report goes.
            None if junit_path(&command).is_some() || own_report.is_some() => Format::Junit,
            None => Format::for_command(&command).ok_or_else(|| {
                AgentError::new(format!("with.format: cannot tell the output format of `{command}`; set libtest, junit or go-json"))
            })?,
        };
        let junit = text("junit")
            .or(own_report)
            .or_else(|| junit_path(&command));
        if format == Format::Junit && junit.is_none() {
            return Err(AgentError::new(
                "with.junit: a junit runner needs the report's path",
            ));
        }
        let rerun = text("rerun").or_else(|| match format {
            Format::Libtest if command.starts_with("cargo test") => {
                Some("cargo test {packages} -- --exact {test}".into())
            }
            Format::GoJson => Some("go test -json -run '^{test}$' ./...".into()),
            _ => None,
        });
        Ok(Config {
            command,
            format,
            junit,
            rerun,
            reruns: with.get("reruns").and_then(Value::as_u64).unwrap_or(2) as u32,
            select: with.get("select").and_then(Value::as_bool).unwrap_or(true),
            quarantine_above: with
                .get("quarantine_above")
                .and_then(Value::as_f64)
                .unwrap_or(0.3),
            globs: SelectGlobs::from(with.get("select_globs")).map_err(AgentError::new)?,
            coverage: with
                .get("coverage")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            generate: generate::Options::from(with).map_err(AgentError::new)?,
            fix: fix::Options::from(with).map_err(AgentError::new)?,
        })
    }
}

/// Every key the test agent reads from `with:`; anything else is a typo, refused at load.
const WITH_KEYS: &[&str] = &[
    "command",
    "format",
    "junit",
    "rerun",
    "reruns",
    "select",
    "quarantine_above",
    "select_globs",
    "coverage",
    "generate",
    "proposals",
    "max_proposals",
    "fix",
    "max_fixes",
];

impl Agent for TestAgent {
    fn name(&self) -> &'static str {
        "test_agent"
    }

    fn check_with(&self, with: &Value) -> Result<(), String> {
        super::with::mapping(with, WITH_KEYS)?;
        // What can be checked without the checkout; `Config::from` (which may write a runner's
        // reporter beside the run) completes the check at run time.
        if let Some(value) = with.get("format") {
            serde_json::from_value::<Format>(value.clone()).map_err(|_| {
                format!("with.format: expected libtest, junit or go-json, got {value}")
            })?;
        }
        SelectGlobs::from(with.get("select_globs"))?;
        generate::Options::from(with)?;
        fix::Options::from(with)?;
        Ok(())
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        let llm = self.llm.clone();
        Box::pin(async move { run(context, llm).await })
    }
}

async fn run(
    context: AgentContext,
    llm: Option<std::sync::Arc<Router>>,
) -> Result<Value, AgentError> {
    let workspace = context.workspace.clone();
    let reports = workspace
        .parent()
        .unwrap_or(&workspace)
        .join("reports")
        .join(&context.step_id);
    let config = Config::from(&context.with, &reports)?;
    let repo = context
        .context
        .get("repo_url")
        .or_else(|| context.context.get("repo"))
        .and_then(Value::as_str)
        .unwrap_or("local")
        .to_string();
    let commit = context
        .context
        .get("commit")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let risk = context
        .context
        .get("risk")
        .and_then(Value::as_str)
        .unwrap_or("");

    // Runners other than cargo: the learned map and globs choose test files.
    let mut file_selection: Option<FileSelection> = None;
    let selection = if !config.select || risk == "high" || commit.is_empty() {
        let reason = if risk == "high" {
            "high risk: the full suite"
        } else if commit.is_empty() {
            "no commit: the full suite"
        } else {
            "selection is off"
        };
        Selection::everything(reason.into())
    } else if config.command.starts_with("cargo test") && workspace.join("Cargo.toml").exists() {
        let changes = rust::changes(&workspace, &commit).map_err(AgentError::new)?;
        let dir = workspace.clone();
        tokio::task::spawn_blocking(move || select_rust_changes(&dir, &changes))
            .await
            .map_err(|e| AgentError::new(e.to_string()))?
            .unwrap_or_else(|error| Selection::everything(format!("{error}; running everything")))
    } else {
        let changed = changed_paths(&workspace, &commit)?;
        let chosen = choose_files(&context, &config, &repo, &commit, &changed).await?;
        let mut selection = Selection::everything(String::new());
        selection.all = chosen.all;
        selection.reasons = chosen.reasons.clone();
        file_selection = Some(chosen);
        selection
    };
    if !selection.all && file_selection.is_none() {
        context.logs.line(
            "stdout",
            format!(
                "selected {} of {} test units (modules with tests, test targets, doc tests)",
                selection.selected_units, selection.total_units
            ),
        );
    }
    for reason in &selection.reasons {
        context.logs.line("stdout", format!("selected: {reason}"));
    }
    let nothing_selected = match &file_selection {
        Some(files) => !files.all && files.tests.is_empty(),
        None => selection.nothing(),
    };
    let selection_output = match &file_selection {
        Some(files) => json!(files),
        None => json!(selection),
    };
    if nothing_selected {
        context
            .logs
            .line("stdout", "no test can be affected by this change");
        let mut summary = json!({ "selection": selection_output, "tests_run": 0, "passed": 0, "failed": [], "flaky": [] });
        // No test reaches the change: exactly where a generated test is wanted.
        if config.generate.enabled && !commit.is_empty() {
            summary["generated"] = propose(
                &context,
                llm.as_deref(),
                &config.generate,
                &repo,
                &commit,
                &workspace,
                None,
            )
            .await?;
        }
        return Ok(summary);
    }
    let packages = selection
        .packages
        .iter()
        .map(|p| format!("-p {p}"))
        .collect::<Vec<_>>()
        .join(" ");
    let commands = match &file_selection {
        Some(files) if !files.all => vec![
            narrow::narrow(&config.command, &files.tests, &workspace).map_err(AgentError::new)?,
        ],
        _ if selection.all => vec![narrow::full(&config.command)],
        // Cargo: the units the module graph chose (targets, module filters), else packages.
        _ => selection
            .cargo_commands(&config.command)
            .unwrap_or_else(|| vec![narrow_cargo(&config.command, &packages)]),
    };
    if let Some(files) = &file_selection {
        context.logs.line(
            "stdout",
            format!("selected {} of {} test files", files.selected, files.total),
        );
    }
    let mut results = Vec::new();
    // What the runner said about each failure, for a fix proposal: the JUnit report's failure
    // text, then the output of its re-runs.
    let mut failure_texts = std::collections::BTreeMap::new();
    let mut run_output = String::new();
    for command in &commands {
        let command = with_no_fail_fast(command);
        clear_report(&config, &workspace)?;
        let (code, output) = execute(&command, &workspace, &context, &[]).await?;
        let found = collect(&config, &workspace, &output)?;
        if found.is_empty() && code != Some(0) {
            let how = match code {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_owned(),
            };
            return Err(AgentError::new(format!(
                "`{command}` failed ({how}) before reporting any test: see the step log"
            )));
        }
        if config.fix.enabled && config.format == Format::Junit {
            let report = workspace.join(config.junit.as_deref().unwrap_or_default());
            if let Ok(xml) = std::fs::read_to_string(&report) {
                failure_texts.extend(results::junit_failures(&xml));
            }
        }
        results.extend(found);
        if config.fix.enabled {
            run_output.push_str(&output);
        }
    }
    let command = commands.join(" && ");

    // Re-run each failure to tell flaky from broken.
    let mut flaky = Vec::new();
    let mut failed = Vec::new();
    let test_files = if results.iter().any(|r| r.outcome == Outcome::Failed) && !commit.is_empty() {
        files::test_files(&workspace, &commit).unwrap_or_default()
    } else {
        Vec::new()
    };
    for result in results.iter().filter(|r| r.outcome == Outcome::Failed) {
        let mut passed_later = false;
        let rerun = rerun_command(&config, result, &packages, &workspace, &test_files);
        if rerun.is_none() && config.reruns > 0 {
            context.logs.line(
                "engine",
                format!(
                    "{}: no way to re-run one test of `{}`; set with.rerun",
                    result.id, config.command
                ),
            );
        }
        for attempt in 1..=config.reruns {
            let Some(rerun) = &rerun else { break };
            context.logs.line(
                "engine",
                format!(
                    "re-running {} ({attempt}/{}): {rerun}",
                    result.id, config.reruns
                ),
            );
            clear_report(&config, &workspace)?;
            let (rerun_code, rerun_output) = execute(rerun, &workspace, &context, &[]).await?;
            if config.fix.enabled {
                let text: &mut String = failure_texts.entry(result.id.clone()).or_default();
                text.push_str(&format!("\n$ {rerun}\n{}", scratch::tail(&rerun_output)));
            }
            let again = collect(&config, &workspace, &rerun_output).unwrap_or_default();
            let passed = if config.format == Format::Junit {
                // A whole file may have run again: this test's own outcome is what counts.
                again
                    .iter()
                    .any(|r| r.id == result.id && r.outcome == Outcome::Passed)
            } else {
                again
                    .iter()
                    .any(|r| r.name == result.name && r.outcome == Outcome::Passed)
                    && rerun_code == Some(0)
            };
            if passed {
                passed_later = true;
                break;
            }
        }
        if passed_later {
            flaky.push(result.id.clone())
        } else {
            failed.push(result.id.clone())
        }
    }

    // Record, score, quarantine.
    let store = context.store.clone();
    let quarantined = store
        .quarantined(&repo)
        .map_err(|e| AgentError::new(e.to_string()))?;
    let mut newly_quarantined = Vec::new();
    let mut released = Vec::new();
    store
        .write(|txn| {
            for result in &results {
                let outcome = match result.outcome {
                    Outcome::Failed if flaky.contains(&result.id) => "flaky",
                    Outcome::Failed => "failed",
                    Outcome::Passed => "passed",
                    Outcome::Ignored => "ignored",
                };
                txn.record_test_result(
                    context.run_id,
                    &context.step_id,
                    &repo,
                    &commit,
                    &result.id,
                    outcome,
                    result.duration_ms,
                )?;
            }
            Ok(())
        })
        .map_err(|e| AgentError::new(e.to_string()))?;
    for result in results.iter().filter(|r| r.outcome != Outcome::Ignored) {
        let history = store
            .test_history(&repo, &result.id, flaky::WINDOW)
            .map_err(|e| AgentError::new(e.to_string()))?;
        let score = flakiness(&history);
        let write =
            |f: &(dyn Fn(&crate::store::WriteTxn<'_>) -> crate::store::Result<()> + Sync)| {
                store
                    .write(|txn| f(txn))
                    .map_err(|e| AgentError::new(e.to_string()))
            };
        match quarantined.get(&result.id) {
            Some(entry) if result.outcome == Outcome::Passed => {
                let passes = entry.passes_in_row + 1;
                if passes >= flaky::RELEASE_AFTER {
                    write(&|txn| txn.release_quarantine(&repo, &result.id))?;
                    released.push(result.id.clone());
                } else {
                    write(&|txn| txn.set_quarantine_passes(&repo, &result.id, passes))?;
                }
            }
            Some(_) => write(&|txn| txn.set_quarantine_passes(&repo, &result.id, 0))?,
            // A test failing for real in this run is a failure, not a quarantine candidate.
            None if score > config.quarantine_above && !failed.contains(&result.id) => {
                let reason = format!("flakiness {score:.2} over its last {} runs", history.len());
                write(&|txn| txn.quarantine(&repo, &result.id, &reason))?;
                newly_quarantined.push(result.id.clone());
            }
            None => {}
        }
    }
    let blocking: Vec<&String> = failed
        .iter()
        .filter(|id| !quarantined.contains_key(*id) && !newly_quarantined.contains(id))
        .collect();
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    // What failed for real after these files changed is remembered for the next selection.
    if !failed.is_empty() && !commit.is_empty() {
        let changed = changed_paths(&workspace, &commit).unwrap_or_default();
        let test_files = files::test_files(&workspace, &commit).unwrap_or_default();
        if let Err(error) = learn::learn_failures(
            &store,
            &repo,
            &commit,
            &workspace,
            &changed,
            &failed,
            &test_files,
        ) {
            context.logs.line(
                "engine",
                format!("failed to learn from the failures: {error}"),
            );
        }
    }
    let mut summary = json!({
        "selection": selection_output,
        "command": command,
        "tests_run": results.iter().filter(|r| r.outcome != Outcome::Ignored).count(),
        "passed": passed,
        "failed": failed,
        "flaky": flaky,
        "quarantined": quarantined.keys().chain(newly_quarantined.iter()).collect::<Vec<_>>(),
        "released_from_quarantine": released,
    });
    context.logs.line(
        "stdout",
        format!(
            "{} passed, {} failed, {} flaky ({} blocking)",
            passed,
            failed.len(),
            flaky.len(),
            blocking.len()
        ),
    );
    if !blocking.is_empty() {
        let names: Vec<&str> = blocking.iter().map(|s| s.as_str()).collect();
        let mut message = format!("{} test(s) failed: {}", names.len(), names.join(", "));
        if config.fix.enabled && !commit.is_empty() {
            let failures: Vec<fix::Failure> = blocking
                .iter()
                .map(|id| fix::Failure {
                    id: (*id).clone(),
                    files: learn::test_file_of(id, &workspace, &test_files),
                    output: failure_texts
                        .get(*id)
                        .cloned()
                        .unwrap_or_else(|| scratch::tail(&run_output)),
                })
                .collect();
            let suite = fix::Suite {
                commands: commands.iter().map(|c| with_no_fail_fast(c)).collect(),
                format: config.format,
                junit: config.junit.clone(),
                env: context.env.clone(),
                passed: results
                    .iter()
                    .filter(|r| r.outcome == Outcome::Passed)
                    .map(|r| r.id.clone())
                    .collect(),
                failing: blocking.iter().map(|id| (*id).clone()).collect(),
            };
            // A fix suggestion never hides the failure: the step fails whatever it finds.
            match suggest_fix(
                &context,
                llm.as_deref(),
                &config.fix,
                &repo,
                &commit,
                &failures,
                &suite,
            )
            .await
            {
                Ok(found) => message.push_str(&fix_summary(&found)),
                Err(error) => context
                    .logs
                    .line("engine", format!("fix: no suggestion: {error}")),
            }
        }
        return Err(AgentError::new(message));
    }
    // Line coverage of this run, when measured: it tells generation which changed functions no
    // test ran.
    let mut measured = None;
    if config.coverage && !commit.is_empty() {
        let (report, lcov) = coverage_gaps(&context, &command, &repo, &commit).await;
        summary["coverage"] = report;
        measured = lcov;
    }
    if config.generate.enabled && !commit.is_empty() {
        summary["generated"] = propose(
            &context,
            llm.as_deref(),
            &config.generate,
            &repo,
            &commit,
            &workspace,
            measured.as_ref(),
        )
        .await?;
    }
    Ok(summary)
}

/// cargo stops at the first failing test binary; every result is wanted.
fn with_no_fail_fast(command: &str) -> String {
    if command.starts_with("cargo test") && !command.contains("--no-fail-fast") {
        command.replacen("cargo test", "cargo test --no-fail-fast", 1)
    } else {
        command.to_string()
    }
}

/// Proposes fixes for the failures, through the fix gate.
async fn suggest_fix(
    context: &AgentContext,
    router: Option<&crate::llm::Router>,
    options: &fix::Options,
    repo: &str,
    commit: &str,
    failures: &[fix::Failure],
    suite: &fix::Suite,
) -> Result<Value, String> {
    let call = fix::Call {
        router,
        store: &context.store,
        run_id: context.run_id,
        step_id: &context.step_id,
        repo,
        commit,
        workspace: &context.workspace,
        logs: &context.logs,
        scope: super::registry::call_scope(context),
    };
    fix::suggest(call, options, failures, suite).await
}

/// What the step's error adds about the fix suggestion.
fn fix_summary(found: &Value) -> String {
    if let Some(why) = found["skipped"].as_str() {
        return format!("; no fix suggested ({why})");
    }
    if found["accepted"] == Value::Bool(true) {
        let places: Vec<String> = [("patch", "patch"), ("branch", "branch")]
            .iter()
            .filter_map(|(key, label)| found[*key].as_str().map(|v| format!("{label} {v}")))
            .collect();
        return format!("; a validated fix is suggested: {}", places.join(", "));
    }
    let reasons: Vec<&str> = found["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["reason"].as_str())
        .collect();
    format!("; no fix accepted (rejected: {})", reasons.join(", "))
}

/// Proposes tests for the commit's untested functions, through the validation gate.
async fn propose(
    context: &AgentContext,
    router: Option<&crate::llm::Router>,
    options: &generate::Options,
    repo: &str,
    commit: &str,
    workspace: &Path,
    coverage: Option<&coverage::Lcov>,
) -> Result<Value, AgentError> {
    let call = generate::Call {
        router,
        store: &context.store,
        run_id: context.run_id,
        step_id: &context.step_id,
        repo,
        commit,
        workspace,
        logs: &context.logs,
        scope: super::registry::call_scope(context),
        coverage,
    };
    generate::generate(call, options)
        .await
        .map_err(AgentError::new)
}

/// Learns from the repository's history, then maps `changed` to test files; a runner that
/// cannot be narrowed to files runs everything.
async fn choose_files(
    context: &AgentContext,
    config: &Config,
    repo: &str,
    commit: &str,
    changed: &[String],
) -> Result<FileSelection, AgentError> {
    // A Go file changed only in its comments changes no test's outcome.
    let changed = &go_comments::behaviour_changed(&context.workspace, commit, changed);
    let (store, workspace) = (context.store.clone(), context.workspace.clone());
    let (repo, commit, paths) = (repo.to_string(), commit.to_string(), changed.to_vec());
    let (learned, test_files, links, graph, coverage) = tokio::task::spawn_blocking(move || {
        let learned = learn::learn_history(&store, &repo, &workspace, &commit);
        let test_files = files::test_files(&workspace, &commit);
        let links = store.test_links(&repo, &paths).map_err(|e| e.to_string());
        let graph = files::tracked(&workspace, &commit)
            .map(|tracked| imports::Graph::build(&workspace, &tracked));
        // Per-test coverage of earlier runs, where it still describes the tests.
        let coverage = match (&graph, &test_files, store.test_coverage(&repo)) {
            (Ok(graph), Ok(tests), Ok(records)) => {
                per_test::excluded(&workspace, &commit, &paths, &records, graph, tests)
            }
            _ => per_test::Excluded::new(),
        };
        (learned, test_files, links, graph, coverage)
    })
    .await
    .map_err(|e| AgentError::new(e.to_string()))?;
    match learned {
        Ok(count) => context.logs.line(
            "engine",
            format!("learned co-changes from {count} new commit(s)"),
        ),
        Err(error) => context.logs.line(
            "engine",
            format!("could not learn from the history: {error}"),
        ),
    }
    let test_files = test_files.map_err(AgentError::new)?;
    let links = links.map_err(AgentError::new)?;
    let graph = graph.map_err(AgentError::new)?;
    for (language, why) in &graph.unavailable {
        context.logs.line(
            "engine",
            format!("{language} imports not read ({why}): its changes run everything"),
        );
    }
    let mut chosen = select_files(
        changed,
        &test_files,
        &config.globs,
        &links,
        &graph,
        &coverage,
    );
    if !chosen.all
        && !chosen.tests.is_empty()
        && let Err(why) = narrow::narrow(&config.command, &chosen.tests, &context.workspace)
    {
        chosen = FileSelection::everything(format!("{why}; the full suite"), test_files.len());
    }
    Ok(chosen)
}

/// The outputs' `coverage`: changed lines no test ran, or why that cannot be told.
async fn coverage_gaps(
    context: &AgentContext,
    command: &str,
    repo: &str,
    commit: &str,
) -> (Value, Option<coverage::Lcov>) {
    let workspace = &context.workspace;
    let hunks = match files::changed_hunks(workspace, commit) {
        Ok(hunks) => hunks,
        Err(error) => return (json!({ "unavailable": error }), None),
    };
    let folder = workspace.parent().unwrap_or(workspace).join("coverage");
    if let Err(error) = std::fs::create_dir_all(&folder) {
        return (
            json!({ "unavailable": format!("failed to create {}: {error}", folder.display()) }),
            None,
        );
    }
    let lcov = folder.join("lcov.info");
    let contexts = folder.join("contexts.json");
    let _ = std::fs::remove_file(&contexts);
    let steps = match coverage::instrumented(command, &lcov, &folder.join(".coverage")).await {
        Ok(steps) => steps,
        Err(why) => {
            context.logs.line("stdout", format!("coverage: {why}"));
            return (json!({ "unavailable": why }), None);
        }
    };
    // pytest: one coverage context per test, so the next runs can select by what each test
    // executed (`per_test.rs`).
    let steps = match per_test_steps(&steps, &folder, &contexts) {
        Ok(steps) => steps,
        Err(error) => {
            context.logs.line("engine", format!("coverage: {error}"));
            steps
        }
    };
    for step in &steps {
        context.logs.line("engine", format!("coverage: {step}"));
        if let Err(error) = execute(step, workspace, context, std::slice::from_ref(&folder)).await {
            return (json!({ "unavailable": error.to_string() }), None);
        }
    }
    let text = match std::fs::read_to_string(&lcov) {
        Ok(text) => text,
        Err(error) => {
            return (
                json!({ "unavailable": format!("the coverage run wrote no report {}: {error}", lcov.display()) }),
                None,
            );
        }
    };
    if let Ok(json) = std::fs::read_to_string(&contexts) {
        match per_test::parse_contexts(&json, commit) {
            Ok(records) => {
                let stored = context
                    .store
                    .write(|txn| txn.record_test_coverage(repo, &records));
                context.logs.line(
                    "engine",
                    match stored {
                        Ok(()) => format!(
                            "coverage: recorded what {} test file(s) executed",
                            records.len()
                        ),
                        Err(error) => format!("coverage: per-test coverage not recorded: {error}"),
                    },
                );
            }
            Err(error) => context.logs.line(
                "engine",
                format!("coverage: per-test coverage not read: {error}"),
            ),
        }
    }
    let root = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.clone());
    let measured = coverage::parse_lcov(&text, &root);
    let gaps = coverage::gaps(&hunks, &measured);
    for (file, lines) in &gaps {
        context.logs.line(
            "stdout",
            format!(
                "coverage: {file}: changed lines not covered: {}",
                coverage::ranges(lines)
            ),
        );
    }
    let tool = if command.starts_with("cargo") {
        "cargo-llvm-cov"
    } else {
        "coverage.py"
    };
    (coverage::report(&gaps, tool), Some(measured))
}

/// For a pytest coverage run: the context plugin written beside the report, loaded with
/// `-p`, and a JSON report with the contexts. Other runs are left as they are.
fn per_test_steps(steps: &[String], folder: &Path, contexts: &Path) -> Result<Vec<String>, String> {
    let Some(run) = steps.first().filter(|s| s.contains(" -m pytest")) else {
        return Ok(steps.to_vec());
    };
    let plugin = folder.join(format!("{}.py", per_test::CONTEXT_PLUGIN_MODULE));
    std::fs::write(&plugin, per_test::CONTEXT_PLUGIN)
        .map_err(|e| format!("failed to write {}: {e}", plugin.display()))?;
    let quoted = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', r"'\''"));
    let run = format!(
        "PYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} {}",
        quoted(folder),
        run.replacen(
            " -m pytest",
            &format!(" -m pytest -p {}", per_test::CONTEXT_PLUGIN_MODULE),
            1
        )
    );
    let data = run
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--data-file="))
        .unwrap_or(".coverage")
        .to_string();
    let mut all = vec![run];
    all.extend(steps[1..].iter().cloned());
    all.push(format!(
        "python3 -m coverage json --data-file={data} --show-contexts -o {}",
        quoted(contexts)
    ));
    Ok(all)
}

fn changed_paths(workspace: &Path, commit: &str) -> Result<Vec<String>, AgentError> {
    files::changed(workspace, commit).map_err(AgentError::new)
}

/// The report path of a `--junitxml=PATH` (pytest) or `--junit-xml=PATH` option.
fn junit_path(command: &str) -> Option<String> {
    command.split_whitespace().find_map(|word| {
        word.strip_prefix("--junitxml=")
            .or_else(|| word.strip_prefix("--junit-xml="))
            .map(|p| p.trim_matches(['"', '\'']).to_string())
    })
}

/// `cargo test --workspace …` → `cargo test -p a -p b …`.
fn narrow_cargo(command: &str, packages: &str) -> String {
    let rest = command
        .trim_start_matches("cargo test")
        .replace("--workspace", "")
        .replace(" --all ", " ");
    format!("cargo test {packages}{rest}")
        .trim_end()
        .to_string()
}

/// The command re-running one failed test: `with: rerun:` (`{test}`, `{packages}`, `{file}`),
/// else what the runner allows (`runner.rs`).
fn rerun_command(
    config: &Config,
    result: &TestResult,
    packages: &str,
    workspace: &Path,
    test_files: &[String],
) -> Option<String> {
    let file = learn::test_file_of(&result.id, workspace, test_files)
        .into_iter()
        .next();
    if let Some(template) = &config.rerun {
        if template.contains("{file}") && file.is_none() {
            return None;
        }
        return Some(
            template
                .replace("{test}", &result.name)
                .replace("{packages}", packages)
                .replace(
                    "{file}",
                    &narrow::quote(file.as_deref().unwrap_or_default()),
                ),
        );
    }
    let classname = result
        .id
        .strip_suffix(&format!("::{}", result.name))
        .unwrap_or_default();
    runner::rerun(
        &config.command,
        file.as_deref(),
        classname,
        &result.name,
        workspace,
    )
}

/// Removes the JUnit report a previous command left, so a runner that dies before writing
/// one is not credited with the old results.
fn clear_report(config: &Config, dir: &Path) -> Result<(), AgentError> {
    let Some(junit) = config
        .junit
        .as_deref()
        .filter(|_| config.format == Format::Junit)
    else {
        return Ok(());
    };
    let path = dir.join(junit);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::new(format!(
            "failed to remove the old JUnit report {}: {e}",
            path.display()
        ))),
        _ => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    AgentError::new(format!("failed to create {}: {e}", parent.display()))
                })?;
            }
            Ok(())
        }
    }
}

/// Runs a shell command in the checkout, in the step's sandbox with the step's environment
/// (the workflow's `env:`, then the step's own), streaming its output into the
/// step log. `writable` is where it may write beyond the checkout (a coverage report).
async fn execute(
    command: &str,
    dir: &Path,
    context: &AgentContext,
    writable: &[PathBuf],
) -> Result<(Option<i32>, String), AgentError> {
    let logs = &context.logs;
    let script = format!("{command} 2>&1");
    let plan = sandbox::Plan {
        script: &script,
        cwd: dir,
        writable: writable.to_vec(),
        env: context.env.clone(),
        step: &context.sandbox,
        requirement: context.sandbox_requirement,
    };
    let sandbox::Sandboxed { mut command, guard } = sandbox::current()
        .command(&plan)
        .map_err(|e| AgentError::new(e.to_string()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AgentError::new(format!("failed to start `{script}`: {e}")))?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    logs.line("stdout", text.trim_end());
                    output.push_str(&text);
                }
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| AgentError::new(format!("failed to wait for `{script}`: {e}")))?;
    if let Some(why) = guard.explain(&status) {
        logs.line("engine", why.clone());
        return Err(AgentError::new(format!("`{script}`: {why}")));
    }
    Ok((status.code(), output))
}

fn collect(config: &Config, dir: &Path, output: &str) -> Result<Vec<TestResult>, AgentError> {
    results::collect(config.format, config.junit.as_deref(), dir, output).map_err(AgentError::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_junit_option_gives_the_report_path() {
        assert_eq!(
            junit_path("python3 -m pytest -q --junitxml=out/r.xml").as_deref(),
            Some("out/r.xml")
        );
        assert_eq!(
            junit_path("pytest --junit-xml='r.xml'").as_deref(),
            Some("r.xml")
        );
        assert_eq!(junit_path("cargo test"), None);
    }

    #[test]
    fn a_cargo_command_is_narrowed_to_packages() {
        assert_eq!(
            narrow_cargo("cargo test --workspace", "-p a -p b"),
            "cargo test -p a -p b"
        );
        assert_eq!(
            narrow_cargo("cargo test --workspace -- --test-threads 1", "-p a"),
            "cargo test -p a  -- --test-threads 1"
        );
    }
}
