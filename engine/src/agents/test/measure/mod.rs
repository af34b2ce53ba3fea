//! `cairn tests measure`: how small and how safe the test agent's selection is on a
//! repository's real history.
//!
//! For each of the last N first-parent commits (oldest first, in one scratch checkout outside
//! the repository, with one target directory shared by every commit so builds stay
//! incremental): the selection the agent would make (the same code), the fraction of the
//! suite's tests it keeps, and its safety by mutation: every non-test function the commit
//! changed gets a fault guard (`mutate.rs`), the suite is built once and run with the faults
//! switched on, each failing test is re-run with them off, and the tests that failed only
//! because of the faults (the fault-revealing tests) must all be in the selection.
//!
//! A commit whose selection is everything needs no build (every test is kept by definition);
//! a commit that changes no Rust function has no mutant, so only its fraction is measured.
//! A suite other than `cargo test` (pytest, node's test runner) is measured by test files
//! (`files.rs`), with faults in the changed Python and JavaScript functions.

mod coverage;
mod files;
mod mutate;
mod script_mutants;
mod suite;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use mutate::{CONST_SWITCH, Candidate, SWITCH, apply, candidates};
pub use suite::SuiteCommand;

use super::rust::per_test::{self, Narrowing, Parsed, Reach, record_key};
use super::rust::{Change, Workspace, changes};
use super::{Outcome, Selection, select_rust_changes};
use crate::exec::git;
use crate::store::{Store, TestCoverage};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("failed to prepare the scratch checkout: {0}")]
    Git(String),
    #[error("{0}")]
    Command(String),
    #[error("the build failed:\n{0}")]
    Build(String),
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub repo: PathBuf,
    pub commits: usize,
    /// The suite: a `cargo test …` command, or a pytest / `node --test` command.
    pub command: String,
    /// Where the scratch checkout lives (kept between runs).
    pub scratch: PathBuf,
    /// Shared target directory (default: inside the scratch directory).
    pub target_dir: PathBuf,
    /// Time limit for one test binary's run.
    pub binary_timeout: Duration,
    /// At most this many functions get a fault per commit, most changed first.
    pub max_mutants: usize,
    /// Record per-test coverage at each commit's parent before selecting (pytest through
    /// coverage.py; cargo through `-C instrument-coverage`, only the tests whose record is
    /// missing or out of date).
    pub per_test_coverage: bool,
}

/// What happened to one commit.
#[derive(Debug, Clone, Serialize)]
pub struct CommitReport {
    pub commit: String,
    pub subject: String,
    /// Tests of the suite the selection runs, and in the suite; `None` when not measured.
    pub selected: Option<usize>,
    pub total: Option<usize>,
    pub fraction: Option<f64>,
    pub selection_all: bool,
    pub selection_reasons: Vec<String>,
    /// Functions that got a fault (`file:line name`).
    pub mutants: Vec<String>,
    /// Tests that failed with the faults and passed without them.
    pub revealing: Vec<String>,
    /// Fault-revealing tests the selection did not keep (must be empty).
    pub missed: Vec<String>,
    /// Tests that failed with the faults and without them (not counted).
    pub failing_anyway: Vec<String>,
    /// Why safety was not checked by mutation, if it was not.
    pub safety_skipped: Option<String>,
    /// Why nothing was measured, if nothing was.
    pub skipped: Option<String>,
    /// What else the measure of this commit ran into.
    pub notes: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub commits: usize,
    pub measured: usize,
    pub skipped: usize,
    pub average_fraction: Option<f64>,
    pub revealing: usize,
    pub kept: usize,
    pub kept_percent: Option<f64>,
    pub mutation_checked: usize,
    pub no_test_revealed: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub repo: String,
    pub command: String,
    pub commits: Vec<CommitReport>,
    pub summary: Summary,
}

/// What the caller shows as progress.
pub enum Progress<'a> {
    Commit {
        index: usize,
        total: usize,
        commit: &'a str,
        subject: &'a str,
    },
    Step(&'a str),
    /// A commit's result, as soon as it is known.
    Done(&'a CommitReport),
}

pub fn measure(options: &Options, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Report, Error> {
    let started = Instant::now();
    // A `cargo test` suite is measured by test binaries; any other by the files it selects.
    let suite = if options.command.trim_start().starts_with("cargo test") {
        Suite::Cargo(SuiteCommand::parse(&options.command)?)
    } else {
        std::fs::create_dir_all(&options.scratch).map_err(|source| Error::Write {
            path: options.scratch.clone(),
            source,
        })?;
        let learned = options.scratch.join("learned.db");
        // What history teaches is learned afresh for each measure.
        let _ = std::fs::remove_file(&learned);
        let store = Store::open(&learned).map_err(|e| Error::Command(e.to_string()))?;
        Suite::Files(
            files::FileSuite::new(&options.command, &options.scratch)?,
            store,
        )
    };
    let repo = options
        .repo
        .canonicalize()
        .map_err(|e| Error::Usage(format!("--repo {}: {e}", options.repo.display())))?;
    // Read-only in the repository: list the commits, nothing else.
    let listing = git(
        &repo,
        &[
            "rev-list",
            "--first-parent",
            "-n",
            &options.commits.to_string(),
            "HEAD",
        ],
    )
    .map_err(Error::Git)?;
    let mut commits: Vec<String> = listing.lines().map(str::to_string).collect();
    commits.reverse();
    let checkout = options.scratch.join("checkout");
    prepare(&repo, &checkout)?;
    let mut coverage = match &suite {
        Suite::Cargo(_) if options.per_test_coverage => Some(CoverageState {
            tools: coverage::Tools::find()?,
            records: BTreeMap::new(),
            parsed: Parsed::default(),
        }),
        _ => None,
    };
    let mut reports = Vec::new();
    for (index, commit) in commits.iter().enumerate() {
        let subject = git(&checkout, &["log", "-1", "--format=%s", commit])
            .map_err(Error::Git)?
            .trim()
            .to_string();
        progress(Progress::Commit {
            index,
            total: commits.len(),
            commit,
            subject: &subject,
        });
        let commit_started = Instant::now();
        let measured = match &suite {
            Suite::Cargo(command) => measure_commit(
                options,
                command,
                coverage.as_mut(),
                &checkout,
                commit,
                progress,
            ),
            Suite::Files(files, store) => {
                files::measure_commit(options, files, store, &checkout, commit, progress)
            }
        };
        let mut report = measured.unwrap_or_else(|error| CommitReport {
            skipped: Some(error.to_string()),
            ..empty(commit)
        });
        report.subject = subject;
        report.seconds = commit_started.elapsed().as_secs_f64();
        tracing::info!(commit = %commit, fraction = ?report.fraction, revealing = report.revealing.len(), missed = report.missed.len(), "measured");
        progress(Progress::Done(&report));
        reports.push(report);
    }
    // Leave the scratch checkout clean of mutants.
    let _ = git(&checkout, &["checkout", "--force", "--quiet", "--detach"]);
    let summary = summarize(&reports, started.elapsed().as_secs_f64());
    Ok(Report {
        repo: repo.display().to_string(),
        command: match &suite {
            Suite::Files(files, _) => files.command().to_string(),
            Suite::Cargo(_) => options.command.clone(),
        },
        commits: reports,
        summary,
    })
}

enum Suite {
    Cargo(SuiteCommand),
    Files(files::FileSuite, Store),
}

/// Per-test coverage of a Cargo suite, kept across the measured commits: a record stays
/// until something its test executed changes.
struct CoverageState {
    tools: coverage::Tools,
    records: BTreeMap<String, TestCoverage>,
    /// The repository's files as units, parsed once per version.
    parsed: Parsed,
}

fn empty(commit: &str) -> CommitReport {
    CommitReport {
        commit: commit.to_string(),
        subject: String::new(),
        selected: None,
        total: None,
        fraction: None,
        selection_all: false,
        selection_reasons: Vec::new(),
        mutants: Vec::new(),
        revealing: Vec::new(),
        missed: Vec::new(),
        failing_anyway: Vec::new(),
        safety_skipped: None,
        skipped: None,
        notes: Vec::new(),
        seconds: 0.0,
    }
}

/// Copies of the test binaries in `dir` (a later build overwrites the originals).
fn keep_copies(binaries: &[suite::Binary], dir: &Path) -> Result<Vec<suite::Binary>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    binaries
        .iter()
        .enumerate()
        .map(|(index, binary)| {
            let copy = dir.join(format!("{index}-{}", binary.package));
            std::fs::copy(&binary.path, &copy).map_err(|source| Error::Write {
                path: copy.clone(),
                source,
            })?;
            Ok(suite::Binary {
                path: copy,
                ..binary.clone()
            })
        })
        .collect()
}

/// A scratch clone of `repo` with `repo`'s HEAD history fetched (the repository is only read).
fn prepare(repo: &Path, checkout: &Path) -> Result<(), Error> {
    if !checkout.join(".git").exists() {
        std::fs::create_dir_all(checkout).map_err(|source| Error::Write {
            path: checkout.to_path_buf(),
            source,
        })?;
        git(checkout, &["init", "--quiet"]).map_err(Error::Git)?;
    }
    let source = repo.display().to_string();
    git(
        checkout,
        &["fetch", "--quiet", "--no-tags", "--force", &source, "HEAD"],
    )
    .map_err(Error::Git)?;
    Ok(())
}

/// Puts the scratch checkout at `commit` with nothing a previous commit's run left, except the
/// `keep` patterns (installed dependencies).
pub(super) fn check_out(checkout: &Path, commit: &str, keep: &[&str]) -> Result<(), Error> {
    git(
        checkout,
        &["checkout", "--force", "--quiet", "--detach", commit],
    )
    .map_err(Error::Git)?;
    let mut clean = vec!["clean", "-ffdxq"];
    for pattern in keep {
        clean.extend(["-e", pattern]);
    }
    git(checkout, &clean).map_err(Error::Git)?;
    Ok(())
}

fn measure_commit(
    options: &Options,
    command: &SuiteCommand,
    coverage: Option<&mut CoverageState>,
    checkout: &Path,
    commit: &str,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CommitReport, Error> {
    let mut report = empty(commit);
    check_out(checkout, commit, &[])?;
    progress(Progress::Step("selecting"));
    let changed = changes(checkout, commit).map_err(Error::Git)?;
    let mut selection = select_rust_changes(checkout, &changed)
        .unwrap_or_else(|e| Selection::everything(format!("{e}; running everything")));
    if let Some(state) = coverage
        && !selection.all
        && !selection.nothing()
    {
        selection = narrow_by_coverage(
            options,
            command,
            state,
            checkout,
            commit,
            &selection,
            &mut report,
            progress,
        )?;
    }
    report.selection_all = selection.all;
    report.selection_reasons = selection.reasons.clone();
    if selection.all {
        report.fraction = Some(1.0);
        report.safety_skipped =
            Some("everything selected: every fault-revealing test is kept".into());
        return Ok(report);
    }
    let workspace = Workspace::load(checkout).map_err(Error::Command)?;
    let mutants = plant(checkout, &workspace, &changed, options.max_mutants)?;
    report.mutants = mutants
        .iter()
        .map(|(file, c)| format!("{file}:{} {}", c.line, c.name))
        .collect();
    if mutants.is_empty() && selection.nothing() {
        report.fraction = Some(0.0);
        report.selected = Some(0);
        report.safety_skipped = Some("no Rust function changed, and no test selected".into());
        return Ok(report);
    }
    progress(Progress::Step("building"));
    let mut binaries = suite::build(checkout, &options.target_dir, command, &workspace, &[])?;
    // The clean build runs the re-runs; `const fn` faults need a build of their own.
    let mut clean = binaries.clone();
    if mutants.iter().any(|(_, c)| c.constant) {
        progress(Progress::Step("building with the const fn faults"));
        clean = keep_copies(&binaries, &options.scratch.join("clean"))?;
        match suite::build(
            checkout,
            &options.target_dir,
            command,
            &workspace,
            &[(mutate::CONST_SWITCH, "1")],
        ) {
            Ok(faulty) => binaries = faulty,
            Err(error) => report.notes.push(format!(
                "the const fn faults do not compile (a const fn used in a const context): {error}"
            )),
        }
    }
    progress(Progress::Step(if mutants.is_empty() {
        "listing tests"
    } else {
        "running the suite with faults"
    }));
    let mut selected = 0;
    let mut total = 0;
    let mut failed: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, binary) in binaries.iter().enumerate() {
        let names = suite::list(binary, &command.harness_args)?;
        let outcomes = if mutants.is_empty() {
            names.iter().map(|n| (n.clone(), Outcome::Passed)).collect()
        } else {
            suite::run(
                binary,
                &command.harness_args,
                &names,
                false,
                true,
                options.binary_timeout,
            )?
        };
        for (name, outcome) in &outcomes {
            if *outcome == Outcome::Ignored {
                continue;
            }
            total += 1;
            selected += usize::from(selection.covers(&binary.package, &binary.target, name));
            if *outcome == Outcome::Failed {
                failed.entry(index).or_default().push(name.clone());
            }
        }
    }
    report.selected = Some(selected);
    report.total = Some(total);
    report.fraction = (total > 0).then(|| selected as f64 / total as f64);
    if mutants.is_empty() {
        report.safety_skipped = Some("no non-test Rust function changed".into());
        return Ok(report);
    }
    progress(Progress::Step("re-running failures without faults"));
    for (index, names) in failed {
        let binary = &binaries[index];
        let Some(clean_binary) = clean
            .iter()
            .find(|c| (&c.package, &c.target) == (&binary.package, &binary.target))
        else {
            continue;
        };
        let clean = suite::run(
            clean_binary,
            &command.harness_args,
            &names,
            true,
            false,
            options.binary_timeout,
        )?;
        for name in names {
            let id = format!("{} {}::{name}", binary.package, binary.target);
            if clean.get(&name) == Some(&Outcome::Passed) {
                if !selection.covers(&binary.package, &binary.target, &name) {
                    report.missed.push(id.clone());
                }
                report.revealing.push(id);
            } else {
                report.failing_anyway.push(id);
            }
        }
    }
    if report.revealing.is_empty() {
        report.safety_skipped = Some("no test of the suite revealed the faults".into());
    }
    Ok(report)
}

/// The selection narrowed by per-test coverage recorded at the commit's parent (for the tests
/// the selection runs whose record is missing or out of date), when the reach of the change
/// can be told (`rust/reach.rs`); the selection as it is otherwise.
#[allow(clippy::too_many_arguments)] // One call site; the measure's parts it reads.
fn narrow_by_coverage(
    options: &Options,
    command: &SuiteCommand,
    state: &mut CoverageState,
    checkout: &Path,
    commit: &str,
    selection: &Selection,
    report: &mut CommitReport,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Selection, Error> {
    let Ok(parent) = git(
        checkout,
        &["rev-parse", "--verify", "--quiet", &format!("{commit}^1")],
    ) else {
        return Ok(selection.clone());
    };
    let parent = parent.trim().to_string();
    let Some(changed) = per_test::reach(checkout, &parent, commit, &mut state.parsed) else {
        report.notes.push(
            "per-test coverage does not narrow: the reach of the change cannot be told \
             (a manifest, a data file, a build script, a procedural macro, a line outside every item)"
                .into(),
        );
        return Ok(selection.clone());
    };
    report.notes.push(describe_reach(&changed));
    progress(Progress::Step("recording per-test coverage at the parent"));
    let folder = options.scratch.join("coverage");
    std::fs::create_dir_all(&folder).map_err(|source| Error::Write {
        path: folder.clone(),
        source,
    })?;
    let recording = coverage::Recording {
        tools: &state.tools,
        checkout,
        command,
        target_dir: &options.scratch.join("coverage-target"),
        folder: &folder,
        limit: options.binary_timeout,
    };
    check_out(checkout, &parent, &[])?;
    let known: Vec<TestCoverage> = state.records.values().cloned().collect();
    let unchanged = Reach::default();
    let mut current = Narrowing::new(checkout, &parent, &unchanged, &known, &mut state.parsed);
    let recorded = recording.build().and_then(|binaries| {
        recording.record(&binaries, &parent, &mut |package, target, name| {
            selection.covers(package, target, name)
                && !current.is_current(&record_key(package, target, name))
        })
    });
    check_out(checkout, commit, &[])?;
    let (listing, fresh) = match recorded {
        Ok(recorded) => recorded,
        Err(error) => {
            report
                .notes
                .push(format!("per-test coverage not recorded: {error}"));
            return Ok(selection.clone());
        }
    };
    report.notes.push(format!(
        "per-test coverage recorded for {} tests at the parent",
        fresh.len()
    ));
    for record in fresh {
        state.records.insert(record.test_file.clone(), record);
    }
    let records: Vec<TestCoverage> = state.records.values().cloned().collect();
    let mut narrowing = Narrowing::new(checkout, &parent, &changed, &records, &mut state.parsed);
    Ok(per_test::narrow(selection, &listing, &mut narrowing))
}

/// One line on what the change reaches: how many units, through which names.
fn describe_reach(reach: &Reach) -> String {
    let units: usize = reach.units.values().map(BTreeSet::len).sum();
    let names: Vec<String> = reach
        .names
        .iter()
        .chain(reach.local.keys())
        .map(|name| {
            if let Some(function) = name.strip_prefix("fn:") {
                format!("{function}()")
            } else if let Some(field) = name.strip_prefix("field:") {
                format!(".{field}")
            } else {
                name.clone()
            }
        })
        .collect();
    let shown = names[..names.len().min(12)].join(", ");
    let more = if names.len() > 12 { ", …" } else { "" };
    format!(
        "the change reaches {units} units in {} files through {} names ({shown}{more})",
        reach.units.len(),
        names.len()
    )
}

/// Writes fault guards into the functions the commit changed (source files of packages only),
/// and into the functions calling a `macro_rules!` macro it changed.
fn plant(
    checkout: &Path,
    workspace: &Workspace,
    changed: &[Change],
    max: usize,
) -> Result<Vec<(String, Candidate)>, Error> {
    let mut all: Vec<(String, Candidate)> = Vec::new();
    let mut macros: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for change in changed
        .iter()
        .filter(|c| !c.deleted && c.path.ends_with(".rs") && !c.lines.is_empty())
    {
        let Some(package) = workspace.owner(&change.path) else {
            continue;
        };
        let relative = change
            .path
            .strip_prefix(&format!("{}/", package.dir))
            .unwrap_or(&change.path);
        if !relative.starts_with("src/") || package.proc_macro {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(checkout.join(&change.path)) else {
            continue;
        };
        match mutate::changed(&text, &change.lines) {
            Ok(found) => {
                all.extend(
                    found
                        .functions
                        .into_iter()
                        .map(|c| (change.path.clone(), c)),
                );
                if !found.macros.is_empty() {
                    macros
                        .entry(package.dir.clone())
                        .or_default()
                        .extend(found.macros);
                }
            }
            Err(error) => {
                tracing::warn!(file = %change.path, %error, "no mutant in an unparsable file")
            }
        }
    }
    // A changed macro is faulty wherever it expands: in the functions of its package calling it.
    for (dir, names) in &macros {
        let prefix = if dir.is_empty() {
            "src/".to_string()
        } else {
            format!("{dir}/src/")
        };
        let listing = git(checkout, &["ls-files", "--", &prefix]).map_err(Error::Git)?;
        for file in listing.lines().filter(|f| f.ends_with(".rs")) {
            let Ok(text) = std::fs::read_to_string(checkout.join(file)) else {
                continue;
            };
            if let Ok(found) = mutate::callers(&text, names) {
                for candidate in found {
                    if !all
                        .iter()
                        .any(|(f, c)| f == file && c.insert_at == candidate.insert_at)
                    {
                        all.push((file.to_string(), candidate));
                    }
                }
            }
        }
    }
    all.sort_by(|a, b| {
        b.1.changed
            .cmp(&a.1.changed)
            .then_with(|| (&a.0, a.1.line).cmp(&(&b.0, b.1.line)))
    });
    all.truncate(max);
    let files: BTreeSet<String> = all.iter().map(|(f, _)| f.clone()).collect();
    for file in files {
        let path = checkout.join(&file);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        let chosen: Vec<Candidate> = all
            .iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, c)| c.clone())
            .collect();
        std::fs::write(&path, apply(&text, &chosen))
            .map_err(|source| Error::Write { path, source })?;
    }
    Ok(all)
}

fn summarize(reports: &[CommitReport], seconds: f64) -> Summary {
    let fractions: Vec<f64> = reports.iter().filter_map(|r| r.fraction).collect();
    let revealing: usize = reports.iter().map(|r| r.revealing.len()).sum();
    let missed: usize = reports.iter().map(|r| r.missed.len()).sum();
    Summary {
        commits: reports.len(),
        measured: reports.iter().filter(|r| r.skipped.is_none()).count(),
        skipped: reports.iter().filter(|r| r.skipped.is_some()).count(),
        average_fraction: (!fractions.is_empty())
            .then(|| fractions.iter().sum::<f64>() / fractions.len() as f64),
        revealing,
        kept: revealing - missed,
        kept_percent: (revealing > 0)
            .then(|| 100.0 * (revealing - missed) as f64 / revealing as f64),
        mutation_checked: reports.iter().filter(|r| !r.revealing.is_empty()).count(),
        no_test_revealed: reports
            .iter()
            .filter(|r| !r.mutants.is_empty() && r.revealing.is_empty() && r.skipped.is_none())
            .count(),
        seconds,
    }
}
