//! The test suite of one checkout for the measure: built once with
//! `cargo test --no-run --message-format=json` (into a target directory shared by every
//! commit, so builds are incremental), then each test binary is run directly, the way
//! `cargo test` runs it (working directory and `CARGO_MANIFEST_DIR` of its package), with a
//! time limit. Doc tests have no binary and are not part of the measured suite.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use crate::agents::test::Outcome;
use crate::agents::test::rust::{Kind, Workspace, unit_key};

/// One test binary of the suite.
#[derive(Debug, Clone)]
pub struct Binary {
    pub package: String,
    /// Unit key of its target (`lib`, `bin:x`, `test:x`), as selection names targets.
    pub target: String,
    pub path: PathBuf,
    pub package_dir: PathBuf,
}

/// The cargo and harness halves of a `cargo test …` command.
#[derive(Debug, Clone)]
pub struct SuiteCommand {
    pub cargo_args: Vec<String>,
    pub harness_args: Vec<String>,
}

impl SuiteCommand {
    pub fn parse(command: &str) -> Result<SuiteCommand, Error> {
        let rest = command.trim().strip_prefix("cargo test").ok_or_else(|| {
            Error::Usage(format!(
                "--command must be a `cargo test …` command, got `{command}`"
            ))
        })?;
        let (cargo, harness) = rest.split_once(" -- ").unwrap_or((rest, ""));
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        Ok(SuiteCommand {
            cargo_args: words(cargo),
            harness_args: words(harness),
        })
    }
}

/// Builds every test binary of the suite in `checkout`, into `target_dir`; `env` is set for
/// the compiler (what `option_env!` reads).
pub fn build(
    checkout: &Path,
    target_dir: &Path,
    command: &SuiteCommand,
    workspace: &Workspace,
    env: &[(&str, &str)],
) -> Result<Vec<Binary>, Error> {
    let mut child = Command::new("cargo")
        .arg("test")
        .args(&command.cargo_args)
        .args([
            "--no-run",
            "--message-format=json-render-diagnostics",
            "--target-dir",
        ])
        .arg(target_dir)
        .envs(env.iter().copied())
        .current_dir(checkout)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command(format!("failed to start cargo: {e}")))?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });
    let mut binaries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for message in cargo_metadata::Message::parse_stream(BufReader::new(stdout)).flatten() {
            let cargo_metadata::Message::CompilerArtifact(artifact) = message else {
                continue;
            };
            let Some(executable) = artifact.executable else {
                continue;
            };
            if !artifact.profile.test {
                continue;
            }
            let package_dir = artifact
                .manifest_path
                .parent()
                .map(|p| p.as_std_path().to_path_buf())
                .unwrap_or_default();
            let Some(package) = workspace
                .packages
                .iter()
                .find(|p| workspace.root.join(&p.dir) == package_dir)
            else {
                continue;
            };
            let kind = package
                .targets
                .iter()
                .find(|t| t.name == artifact.target.name)
                .map(|t| t.kind);
            let Some(kind) = kind.filter(|k| matches!(k, Kind::Lib | Kind::Bin | Kind::Test))
            else {
                continue;
            };
            binaries.push(Binary {
                package: package.name.clone(),
                target: unit_key(kind, &artifact.target.name),
                path: executable.into_std_path_buf(),
                package_dir,
            });
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Command(format!("failed to wait for cargo: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(12)..].join("\n");
        return Err(Error::Build(tail));
    }
    binaries.sort_by(|a, b| (&a.package, &a.target).cmp(&(&b.package, &b.target)));
    Ok(binaries)
}

/// The test names a binary holds, with the harness arguments applied.
pub fn list(binary: &Binary, harness_args: &[String]) -> Result<Vec<String>, Error> {
    let output = Command::new(&binary.path)
        .args(harness_args)
        .args(["--list", "--format", "terse"])
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::Command(format!(
                "failed to list the tests of {}: {e}",
                binary.path.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// Outcome per test name. A binary that dies before its summary (a fault that aborts the
/// process, a signal, the time limit) takes every test it had not reported down with it, and
/// most of those never met the fault: its unreported tests are run again one at a time
/// (`--test-threads=1`, so the test running when a process dies is the one that killed it),
/// and only a test that fails or kills its process on its own counts as failed.
pub fn run(
    binary: &Binary,
    harness_args: &[String],
    names: &[String],
    exact: bool,
    mutant: bool,
    limit: Duration,
) -> Result<BTreeMap<String, Outcome>, Error> {
    let first = run_once(
        binary,
        harness_args,
        names,
        exact,
        false,
        mutant,
        limit,
        &[],
    )?;
    let mut outcomes = first.outcomes;
    if first.complete {
        for name in names {
            outcomes.entry(name.clone()).or_insert(Outcome::Failed);
        }
        return Ok(outcomes);
    }
    tracing::info!(binary = %binary.path.display(), "test binary died before its summary: re-running its unreported tests one at a time");
    let mut remaining: Vec<String> = names
        .iter()
        .filter(|n| !outcomes.contains_key(*n))
        .cloned()
        .collect();
    // The harness arguments may set their own thread count; one thread is the point here.
    let harness: Vec<String> = without_thread_count(harness_args);
    while !remaining.is_empty() {
        let pass = run_once(binary, &harness, &remaining, true, true, mutant, limit, &[])?;
        outcomes.extend(pass.outcomes);
        let culprit = pass
            .started
            .filter(|name| !outcomes.contains_key(name) && remaining.contains(name));
        match culprit {
            Some(name) if !pass.complete => {
                outcomes.insert(name, Outcome::Failed);
            }
            // Finished, or died where no test was running: what is unreported failed.
            _ => {
                for name in &remaining {
                    outcomes.entry(name.clone()).or_insert(Outcome::Failed);
                }
            }
        }
        // Each pass settles at least one test (its culprit, or all), so this ends.
        remaining.retain(|name| !outcomes.contains_key(name));
    }
    Ok(outcomes)
}

/// `args` without `--test-threads N` / `--test-threads=N`.
pub(super) fn without_thread_count(args: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        if arg == "--test-threads" {
            skip_next = true;
            continue;
        }
        if arg.starts_with("--test-threads=") {
            continue;
        }
        kept.push(arg.clone());
    }
    kept
}

/// One process of a test binary.
pub(super) struct Pass {
    pub(super) outcomes: BTreeMap<String, Outcome>,
    /// The harness printed its summary line and the process exited on its own.
    complete: bool,
    /// The last test the harness said it started without a verdict (meaningful with one
    /// thread: the test running when the process died).
    started: Option<String>,
}

#[allow(clippy::too_many_arguments)] // The switches of one process; named at each call.
pub(super) fn run_once(
    binary: &Binary,
    harness_args: &[String],
    names: &[String],
    exact: bool,
    one_thread: bool,
    mutant: bool,
    limit: Duration,
    env: &[(&str, &Path)],
) -> Result<Pass, Error> {
    let mut command = Command::new(&binary.path);
    command.envs(env.iter().copied());
    command.args(harness_args);
    if one_thread {
        command.arg("--test-threads=1");
    }
    if exact {
        command.arg("--exact").args(names);
    }
    command
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so a time limit kills whatever the tests started too.
        .process_group(0);
    if mutant {
        command.env(super::mutate::SWITCH, "1");
    } else {
        command.env_remove(super::mutate::SWITCH);
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::Command(format!("failed to run {}: {e}", binary.path.display())))?;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut outcomes = BTreeMap::new();
        let mut summary = false;
        let mut started = None;
        if let Some(stdout) = stdout {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((name, outcome)) = crate::agents::test::results::libtest_line(&line) {
                    outcomes.insert(name, outcome);
                } else if line.starts_with("test result: ") {
                    summary = true;
                } else if let Some(name) = started_test(&line) {
                    started = Some(name);
                }
            }
        }
        (outcomes, summary, started)
    });
    let started_at = Instant::now();
    let mut exited = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // Killed by a signal (an abort) is not an exit of its own.
                exited = status.code().is_some();
                break;
            }
            Ok(None) if started_at.elapsed() > limit => {
                tracing::warn!(binary = %binary.path.display(), "test binary over its time limit: killed");
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(Error::Command(format!(
                    "failed to wait for {}: {e}",
                    binary.path.display()
                )));
            }
        }
    }
    let (outcomes, summary, started) = reader.join().unwrap_or_default();
    let started = started.filter(|name| !outcomes.contains_key(name));
    Ok(Pass {
        outcomes,
        complete: exited && summary,
        started,
    })
}

/// `test NAME ... ` with no verdict yet: what libtest prints (and flushes) when one thread
/// starts a test; the verdict follows on the same line once it ends.
fn started_test(line: &str) -> Option<String> {
    let rest = line.strip_prefix("test ")?;
    let name = rest.trim_end().strip_suffix(" ...")?;
    Some(name.trim().to_string())
}
