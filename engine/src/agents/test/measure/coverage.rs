//! Per-test coverage of a Cargo suite, recorded for the measure: the suite built once more with
//! `-C instrument-coverage` into a target directory of its own, each test run alone — its own
//! process, so what it executes is its own, lazy statics and spawned threads included — with
//! its profile written to a fresh directory, merged by `llvm-profdata` and read back by
//! `llvm-cov export` as lcov, keeping the executed lines of the repository's own files.
//!
//! The LLVM tools must match rustc's LLVM, so they are the toolchain's own
//! (`rustup component add llvm-tools-preview`); Debian's `llvm` is refused by the profile
//! format. A test that does not run (ignored, filtered out) or leaves no profile (killed by a
//! signal) gets no record and stays unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Error;
use super::suite::{self, Binary, SuiteCommand, without_thread_count};
use crate::agents::test::Outcome;
use crate::agents::test::rust::per_test::{Listing, record_key};
use crate::store::TestCoverage;

/// `llvm-profdata` and `llvm-cov` of the toolchain that builds the suite.
pub struct Tools {
    profdata: PathBuf,
    cov: PathBuf,
}

impl Tools {
    pub fn find() -> Result<Tools, Error> {
        let rustc = |args: &[&str]| -> Result<String, Error> {
            let output = Command::new("rustc")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::Command(format!("failed to run rustc: {e}")))?;
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let sysroot = rustc(&["--print", "sysroot"])?.trim().to_string();
        let host = rustc(&["-vV"])?
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(str::to_string)
            .ok_or_else(|| Error::Command("rustc -vV names no host".into()))?;
        let bin = Path::new(&sysroot)
            .join("lib/rustlib")
            .join(host)
            .join("bin");
        let tools = Tools {
            profdata: bin.join("llvm-profdata"),
            cov: bin.join("llvm-cov"),
        };
        if !tools.profdata.is_file() || !tools.cov.is_file() {
            return Err(Error::Usage(format!(
                "per-test coverage of a Cargo suite needs the toolchain's llvm-profdata and llvm-cov (not found in {}): run `rustup component add llvm-tools-preview`",
                bin.display()
            )));
        }
        Ok(tools)
    }
}

/// Where and how the suite is recorded.
pub struct Recording<'a> {
    pub tools: &'a Tools,
    pub checkout: &'a Path,
    pub command: &'a SuiteCommand,
    /// The instrumented build's own target directory (kept between commits: incremental).
    pub target_dir: &'a Path,
    /// Profiles are written here, one test at a time.
    pub folder: &'a Path,
    pub limit: Duration,
}

impl Recording<'_> {
    /// Builds the suite instrumented at the checkout's commit.
    pub fn build(&self) -> Result<Vec<Binary>, Error> {
        let workspace =
            crate::agents::test::rust::Workspace::load(self.checkout).map_err(Error::Command)?;
        // Build scripts and proc macros are instrumented too; their profiles are not wanted.
        let build_profiles = self.folder.join("build-%p-%m.profraw");
        suite::build(
            self.checkout,
            self.target_dir,
            self.command,
            &workspace,
            &[
                ("RUSTFLAGS", "-C instrument-coverage"),
                ("LLVM_PROFILE_FILE", &build_profiles.display().to_string()),
            ],
        )
    }

    /// Lists every binary's tests, and records those `wanted` says (package, target, name)
    /// at `commit`.
    pub fn record(
        &self,
        binaries: &[Binary],
        commit: &str,
        wanted: &mut dyn FnMut(&str, &str, &str) -> bool,
    ) -> Result<(Listing, Vec<TestCoverage>), Error> {
        let mut listing = Listing::new();
        let mut records = Vec::new();
        let harness = without_thread_count(&self.command.harness_args);
        let root = self
            .checkout
            .canonicalize()
            .unwrap_or_else(|_| self.checkout.to_path_buf());
        for binary in binaries {
            let names = suite::list(binary, &self.command.harness_args)?;
            for name in &names {
                if !wanted(&binary.package, &binary.target, name) {
                    continue;
                }
                if let Some(lines) = self.one(binary, &harness, name, &root)? {
                    records.push(TestCoverage {
                        test_file: record_key(&binary.package, &binary.target, name),
                        commit_id: commit.to_string(),
                        lines,
                    });
                }
            }
            listing.insert((binary.package.clone(), binary.target.clone()), names);
        }
        Ok((listing, records))
    }

    /// Runs one test alone and reads what it executed; `None` when it did not run.
    fn one(
        &self,
        binary: &Binary,
        harness: &[String],
        name: &str,
        root: &Path,
    ) -> Result<Option<BTreeMap<String, Vec<u32>>>, Error> {
        let profiles = self.folder.join("run");
        let _ = std::fs::remove_dir_all(&profiles);
        std::fs::create_dir_all(&profiles).map_err(|source| Error::Write {
            path: profiles.clone(),
            source,
        })?;
        let pattern = profiles.join("%p-%m.profraw");
        let pass = suite::run_once(
            binary,
            harness,
            &[name.to_string()],
            true,
            true,
            false,
            self.limit,
            &[("LLVM_PROFILE_FILE", &pattern)],
        )?;
        if !matches!(
            pass.outcomes.get(name),
            Some(Outcome::Passed | Outcome::Failed)
        ) {
            return Ok(None);
        }
        let raw: Vec<PathBuf> = std::fs::read_dir(&profiles)
            .map_err(|e| Error::Command(format!("{}: {e}", profiles.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "profraw"))
            .collect();
        if raw.is_empty() {
            return Ok(None);
        }
        let merged = self.folder.join("test.profdata");
        let output = Command::new(&self.tools.profdata)
            .args(["merge", "-sparse", "-o"])
            .arg(&merged)
            .args(&raw)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Command(format!("failed to run llvm-profdata: {e}")))?;
        if !output.status.success() {
            return Err(Error::Command(format!(
                "llvm-profdata merge failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let output = Command::new(&self.tools.cov)
            .args(["export", "--format=lcov", "--skip-expansions"])
            .arg(format!("--instr-profile={}", merged.display()))
            .arg(&binary.path)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| Error::Command(format!("failed to run llvm-cov: {e}")))?;
        if !output.status.success() {
            return Err(Error::Command(format!(
                "llvm-cov export failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(Some(executed_lines(
            &String::from_utf8_lossy(&output.stdout),
            root,
        )))
    }
}

/// Executed lines per file of `root` from lcov text (`SF:`, `DA:line,count`).
pub fn executed_lines(lcov: &str, root: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut files: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in lcov.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            current = Path::new(path)
                .strip_prefix(root)
                .ok()
                .map(|p| p.display().to_string());
        } else if let (Some(file), Some(data)) = (&current, line.strip_prefix("DA:")) {
            let mut parts = data.split(',');
            let line = parts.next().and_then(|n| n.parse::<u32>().ok());
            let count = parts.next().and_then(|n| n.parse::<u64>().ok());
            if let (Some(line), Some(count)) = (line, count)
                && count > 0
            {
                files.entry(file.clone()).or_default().push(line);
            }
        } else if line == "end_of_record" {
            current = None;
        }
    }
    for lines in files.values_mut() {
        lines.sort_unstable();
        lines.dedup();
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcov_gives_the_executed_lines_of_the_repository() {
        let lcov = "SF:/repo/src/lib.rs\nFN:3,add\nDA:3,2\nDA:4,2\nDA:9,0\nDA:3,1\nend_of_record\n\
                    SF:/home/u/.cargo/registry/x/src/lib.rs\nDA:1,5\nend_of_record\n";
        let lines = executed_lines(lcov, Path::new("/repo"));
        assert_eq!(
            lines,
            BTreeMap::from([("src/lib.rs".to_string(), vec![3, 4])])
        );
    }
}
