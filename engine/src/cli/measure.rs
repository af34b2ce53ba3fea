//! `cairn tests measure`: runs the selection measure (`agents::test::measure`) on a
//! repository's history with a progress bar, then prints a per-commit table and a summary
//! (or the whole report as JSON).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cairn_engine::agents::test::measure::{self, CommitReport, Options, Progress, Report};

/// The default suite: every crate's unit and integration tests, as `cargo test` runs them
/// (doc tests have no binary and are left out).
pub const DEFAULT_COMMAND: &str = "cargo test --workspace";

#[derive(clap::Args)]
pub struct MeasureArgs {
    /// The repository whose history is measured (only read).
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// How many first-parent commits back from HEAD.
    #[arg(long, default_value_t = 30)]
    pub commits: usize,
    /// The suite: a `cargo test …` command (`-- args` go to every test binary), or a pytest
    /// or `node --test` command (measured by test files; Cairn adds its JUnit report).
    #[arg(long, default_value = DEFAULT_COMMAND)]
    pub command: String,
    /// Scratch directory for the checkout and the shared target dir (kept, so a second run
    /// builds incrementally). Default: `$TMPDIR/cairn-measure/<repository name>`.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Target directory shared by every commit (default: `<scratch>/target`).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,
    /// Time limit for one test binary (one suite run for file runners), in seconds.
    #[arg(long, default_value_t = 300)]
    pub binary_timeout: u64,
    /// At most this many changed functions get a fault per commit.
    #[arg(long, default_value_t = 20)]
    pub max_mutants: usize,
    /// Before each commit, record what each test executed at its parent and let the selection
    /// use it (per-test coverage): pytest suites run under coverage.py with one context per
    /// test, as a previous pipeline run with `coverage: true` would; `cargo test` suites are
    /// built with `-C instrument-coverage` and each test whose record is missing or out of
    /// date is run alone (needs `rustup component add llvm-tools-preview`).
    #[arg(long)]
    pub per_test_coverage: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn measure(args: &MeasureArgs) -> Result<()> {
    let name = args
        .repo
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".into());
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-measure").join(name));
    let options = Options {
        repo: args.repo.clone(),
        commits: args.commits,
        command: args.command.clone(),
        target_dir: args
            .target_dir
            .clone()
            .unwrap_or_else(|| scratch.join("target")),
        scratch,
        binary_timeout: Duration::from_secs(args.binary_timeout),
        max_mutants: args.max_mutants,
        per_test_coverage: args.per_test_coverage,
    };
    let bar = ProgressBar::new(args.commits as u64).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut current = String::new();
    let report = measure::measure(&options, &mut |progress| match progress {
        Progress::Commit {
            index,
            total,
            commit,
            subject,
        } => {
            bar.set_length(total as u64);
            bar.set_position(index as u64);
            current = format!(
                "{} {}",
                &commit[..commit.len().min(8)],
                subject.chars().take(50).collect::<String>()
            );
            bar.set_message(current.clone());
        }
        Progress::Step(step) => bar.set_message(format!("{current}: {step}")),
        // Each row as it is known (stderr), so a long measure shows its results as it goes.
        Progress::Done(commit) if bar.is_hidden() => eprintln!("{}", row(commit)),
        Progress::Done(commit) => bar.println(row(commit)),
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        // The rows were shown as they came on stderr; when stdout is that same terminal,
        // printing them again would show the table twice. Redirected, stdout gets them all.
        let rows_shown = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        print_table(&report, !rows_shown);
    }
    Ok(())
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn row(commit: &CommitReport) -> String {
    let tests = match (commit.selected, commit.total) {
        (Some(s), Some(t)) => format!("{s}/{t}"),
        _ if commit.selection_all => "all".into(),
        _ => "-".into(),
    };
    let safety = if let Some(reason) = &commit.skipped {
        format!("skipped: {}", reason.lines().next().unwrap_or(""))
    } else if !commit.revealing.is_empty() {
        format!(
            "{}/{} kept ({} faults)",
            commit.revealing.len() - commit.missed.len(),
            commit.revealing.len(),
            commit.mutants.len()
        )
    } else {
        commit.safety_skipped.clone().unwrap_or_default()
    };
    format!(
        "{:<8} {:>9} {:>5} {:>6}s  {:<42} {}",
        &commit.commit[..commit.commit.len().min(8)],
        tests,
        percent(commit.fraction),
        commit.seconds.round(),
        commit.subject.chars().take(42).collect::<String>(),
        safety
    )
}

fn print_table(report: &Report, with_rows: bool) {
    if with_rows {
        println!(
            "{:<8} {:>9} {:>5} {:>7}  {:<42} SAFETY (fault-revealing tests kept)",
            "COMMIT", "SELECTED", "FRAC", "TIME", "SUBJECT"
        );
        for commit in &report.commits {
            println!("{}", row(commit));
            for missed in &commit.missed {
                println!("         MISSED {missed}");
            }
        }
    } else {
        for commit in &report.commits {
            for missed in &commit.missed {
                println!(
                    "{} MISSED {missed}",
                    commit.commit.get(..8).unwrap_or(&commit.commit)
                );
            }
        }
    }
    let summary = &report.summary;
    println!();
    println!("suite: {}", report.command);
    println!(
        "commits: {} ({} measured, {} skipped)",
        summary.commits, summary.measured, summary.skipped
    );
    println!(
        "average fraction selected: {}",
        percent(summary.average_fraction)
    );
    println!(
        "fault-revealing tests kept: {}/{} ({}), over {} commits whose faults some test revealed; {} commits' faults revealed by no test",
        summary.kept,
        summary.revealing,
        summary
            .kept_percent
            .map_or_else(|| "-".into(), |p| format!("{p:.1}%")),
        summary.mutation_checked,
        summary.no_test_revealed
    );
    println!("wall time: {:.0}s", summary.seconds);
}
