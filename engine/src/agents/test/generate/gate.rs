//! The validation gate. A proposed test is accepted only if it compiles, passes on the new
//! commit three times in a row, and — where there is a parent to check — fails on the parent
//! (so it tests the change, not what was already there). Everything runs in scratch worktrees
//! of the run's checkout, detached at the two commits: the checkout and its branch are never
//! touched (`../scratch.rs`).

use std::path::{Path, PathBuf};

use super::functions::Language;
use super::propose::{Proposal, Target, placed_text};
use crate::agents::test::results::{Outcome, parse_libtest};
pub use crate::agents::test::scratch::Scratch;
use crate::agents::test::scratch::{bounded, run_shell, tail};
use crate::exec::LogSink;

/// Passes in a row on the new commit before a test is trusted.
pub const PASSES_REQUIRED: u32 = 3;
/// Runs every test function of a module without pytest: what the gate uses when pytest is not
/// installed. Exit 5 (as pytest) when the module defines no test.
const PLAIN_PYTHON_RUNNER: &str = r#"import runpy, sys
ns = runpy.run_path(sys.argv[1], run_name="cairn_generated")
tests = [v for k, v in sorted(ns.items()) if k.startswith("test") and callable(v)]
if not tests:
    print("no test function defined"); sys.exit(5)
for test in tests:
    test()
print(f"{len(tests)} passed")
"#;

/// Why a proposal was rejected; the names are what the store records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    CompileError,
    FailsOnNew,
    Flaky,
    PassesOnParent,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::CompileError => "compile_error",
            Rejection::FailsOnNew => "fails_on_new",
            Rejection::Flaky => "flaky",
            Rejection::PassesOnParent => "passes_on_parent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// With what was checked (whether the parent could be).
    Accepted(String),
    Rejected(Rejection, String),
}

impl Scratch {
    /// Whether the commit itself builds its tests for `target` (Rust; checked once per package,
    /// which also warms the build directory). `Ok(Err(why))` when it does not.
    pub async fn baseline(&self, target: &Target) -> Result<Result<(), String>, String> {
        if target.language != Language::Rust {
            return Ok(Ok(()));
        }
        let dir = crate_dir(&self.new, &target.path);
        let mut baselines = self.baselines.lock().await;
        if let Some(known) = baselines.get(&dir) {
            return Ok(known.clone());
        }
        Scratch::reset(&self.new)?;
        let (built, output) = run_shell(
            "cargo test --offline --no-run",
            &dir,
            std::slice::from_ref(&self.root),
            &self.env(),
        )
        .await?;
        let verdict = if built {
            Ok(())
        } else {
            Err(format!(
                "the commit's tests do not build without any proposal: {}",
                excerpt(&output, Language::Rust)
            ))
        };
        baselines.insert(dir, verdict.clone());
        Ok(verdict)
    }

    /// Runs the gate for one proposal.
    pub async fn validate(
        &self,
        target: &Target,
        proposal: &Proposal,
        logs: &LogSink,
    ) -> Result<Verdict, String> {
        let step = |text: String| logs.line("engine", format!("generate: {}: {text}", target.name));
        Scratch::reset(&self.new)?;
        write_test(&self.new, target, proposal)?;
        step("compiling the proposed test".into());
        let (compiled, output) = self.compile(&self.new, target, proposal).await?;
        if !compiled {
            return Ok(Verdict::Rejected(
                Rejection::CompileError,
                excerpt(&output, target.language),
            ));
        }
        for run in 1..=PASSES_REQUIRED {
            let (passed, output) = self.run_test(&self.new, target, proposal).await?;
            step(format!(
                "run {run}/{PASSES_REQUIRED} on the new commit: {}",
                if passed { "passed" } else { "failed" }
            ));
            if !passed {
                return Ok(if run == 1 {
                    Verdict::Rejected(Rejection::FailsOnNew, tail(&output))
                } else {
                    Verdict::Rejected(
                        Rejection::Flaky,
                        format!(
                            "passed {} of {run} runs on the new commit, then failed:\n{}",
                            run - 1,
                            tail(&output)
                        ),
                    )
                });
            }
        }
        let Some((parent_dir, parent)) = &self.parent else {
            return Ok(Verdict::Accepted(
                "passed 3 runs; no parent commit to check it against".into(),
            ));
        };
        Scratch::reset(parent_dir)?;
        if target.language == Language::Rust && !parent_dir.join(&target.path).exists() {
            return Ok(Verdict::Accepted(format!(
                "passed 3 runs; {} does not exist on the parent",
                target.path
            )));
        }
        write_test(parent_dir, target, proposal)?;
        let (passed, _) = self.run_test(parent_dir, target, proposal).await?;
        step(format!(
            "on the parent {}: {}",
            &parent[..parent.len().min(12)],
            if passed { "passed" } else { "failed" }
        ));
        if passed {
            return Ok(Verdict::Rejected(
                Rejection::PassesOnParent,
                format!(
                    "passes on the parent commit {parent} as well: it does not test the change"
                ),
            ));
        }
        Ok(Verdict::Accepted(
            "passed 3 runs on the new commit and fails on the parent".into(),
        ))
    }

    async fn compile(
        &self,
        dir: &Path,
        target: &Target,
        proposal: &Proposal,
    ) -> Result<(bool, String), String> {
        match target.language {
            Language::Rust => {
                run_shell(
                    "cargo test --offline --no-run",
                    &crate_dir(dir, &target.path),
                    std::slice::from_ref(&self.root),
                    &self.env(),
                )
                .await
            }
            Language::Python => {
                run_shell(
                    &format!("python3 -m py_compile {}", proposal.test_path),
                    dir,
                    std::slice::from_ref(&self.root),
                    &self.env(),
                )
                .await
            }
        }
    }

    /// Runs the proposed test alone; passing means it ran and passed.
    async fn run_test(
        &self,
        dir: &Path,
        target: &Target,
        proposal: &Proposal,
    ) -> Result<(bool, String), String> {
        match target.language {
            Language::Rust => {
                let filter = proposal.filter.as_deref().unwrap_or("cairn_generated");
                let (ok, output) = run_shell(
                    &format!("cargo test --offline {filter}"),
                    &crate_dir(dir, &target.path),
                    std::slice::from_ref(&self.root),
                    &self.env(),
                )
                .await?;
                let ran: Vec<_> = parse_libtest(&output)
                    .into_iter()
                    .filter(|r| r.name.starts_with(filter))
                    .collect();
                let passed =
                    ok && !ran.is_empty() && ran.iter().all(|r| r.outcome == Outcome::Passed);
                Ok((passed, output))
            }
            Language::Python => {
                let command = if self.pytest {
                    format!(
                        "python3 -m pytest -q -p no:cacheprovider {}",
                        proposal.test_path
                    )
                } else {
                    format!(
                        "python3 -c '{}' {}",
                        PLAIN_PYTHON_RUNNER.replace('\'', r"'\''"),
                        proposal.test_path
                    )
                };
                run_shell(&command, dir, std::slice::from_ref(&self.root), &self.env()).await
            }
        }
    }
}

fn write_test(dir: &Path, target: &Target, proposal: &Proposal) -> Result<(), String> {
    let path = dir.join(&proposal.test_path);
    let current = std::fs::read_to_string(&path).ok();
    let text = placed_text(proposal, target.language, current.as_deref());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("failed to create {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, text).map_err(|e| format!("failed to write {}: {e}", path.display()))
}

/// The package directory of a Rust file: its nearest ancestor with a `Cargo.toml`.
fn crate_dir(root: &Path, file: &str) -> PathBuf {
    let mut dir = root.join(file);
    while dir.pop() && dir.starts_with(root) {
        if dir.join("Cargo.toml").exists() {
            return dir;
        }
    }
    root.to_path_buf()
}

/// The compiler's first error and what follows it, bounded.
fn excerpt(output: &str, language: Language) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = match language {
        Language::Rust => lines
            .iter()
            .position(|l| l.starts_with("error"))
            .unwrap_or(0),
        Language::Python => lines.len().saturating_sub(8),
    };
    bounded(
        &lines[start..]
            .iter()
            .take(20)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_start_at_the_first_error_and_are_bounded() {
        let output = "   Compiling x v0.1.0\nwarning: unused\nerror[E0425]: cannot find function `nope`\n --> src/lib.rs:9:5\n";
        assert_eq!(
            excerpt(output, Language::Rust),
            "error[E0425]: cannot find function `nope`\n --> src/lib.rs:9:5"
        );
    }
}
