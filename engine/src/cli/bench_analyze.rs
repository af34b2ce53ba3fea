//! `cairn bench analyze --repo PATH`: how long `cairn analyze` takes per commit over a fixed
//! set of a repository's commits (the newest `--commits` first-parent commits of `--rev`), and
//! the process's peak memory. Reports p50/p95/max seconds and the commits over the bounds of
//! `ARCHITECTURE.md` ("Risk and routing": 30 s for any commit, 5 s for ≤ 10 files).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use cairn_engine::agents::orchestrator;

use super::settings::Settings;

/// Any commit must be analysed within this many seconds…
const BOUND_ANY_S: f64 = 30.0;
/// …and one of at most `TYPICAL_FILES` files within this many.
const BOUND_TYPICAL_S: f64 = 5.0;
const TYPICAL_FILES: usize = 10;

#[derive(clap::Args)]
pub struct BenchAnalyzeArgs {
    /// The repository whose commits are analysed.
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// Where the fixed set of commits ends.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// How many first-parent commits, newest first.
    #[arg(long, default_value_t = 20)]
    pub commits: usize,
    /// Rules only, as `cairn analyze --no-model`.
    #[arg(long)]
    pub no_model: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct CommitTiming {
    pub commit: String,
    pub files: usize,
    pub seconds: f64,
    pub risk: &'static str,
}

#[derive(Serialize)]
pub struct AnalyzeReport {
    pub repo: String,
    pub range: String,
    pub model: bool,
    pub commits: usize,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub max_seconds: f64,
    pub peak_rss_mb: f64,
    /// Commits over 30 s, and commits of ≤ 10 files over 5 s.
    pub over_bounds: Vec<String>,
    pub timings: Vec<CommitTiming>,
}

pub async fn bench_analyze(home: Option<PathBuf>, args: &BenchAnalyzeArgs) -> Result<()> {
    let listed = cairn_engine::exec::git(
        &args.repo,
        &[
            "rev-list",
            "--first-parent",
            "-n",
            &args.commits.to_string(),
            &args.rev,
            "--",
        ],
    )
    .map_err(|e| anyhow::anyhow!(e))
    .with_context(|| format!("failed to list the commits of {}", args.repo.display()))?;
    let commits: Vec<&str> = listed.lines().collect();
    if commits.is_empty() {
        bail!("no commits at `{}` in {}", args.rev, args.repo.display());
    }
    let router = if args.no_model {
        None
    } else {
        let settings = Settings::resolve(home, None)?;
        let store = settings.open_store()?;
        Some(settings.llm(&store)?)
    };
    let mut timings = Vec::new();
    for commit in &commits {
        let started = Instant::now();
        let analysis = orchestrator::analyze_with_models(&args.repo, commit, router.as_ref(), None)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{} {:>4} files {:>7.2} s {}",
            &commit[..commit.len().min(10)],
            analysis.files.len(),
            seconds,
            analysis.risk.level.as_str()
        );
        timings.push(CommitTiming {
            commit: commit.to_string(),
            files: analysis.files.len(),
            seconds,
            risk: analysis.risk.level.as_str(),
        });
    }
    let report = summarize(&args.repo, &commits, router.is_some(), timings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} commits of {} ({}), model {}",
            report.commits,
            report.repo,
            report.range,
            if report.model { "on" } else { "off" }
        );
        println!(
            "p50 {:.2} s   p95 {:.2} s   max {:.2} s   peak RSS {:.0} MB",
            report.p50_seconds, report.p95_seconds, report.max_seconds, report.peak_rss_mb
        );
        for over in &report.over_bounds {
            println!("over the bound: {over}");
        }
    }
    Ok(())
}

fn summarize(
    repo: &Path,
    commits: &[&str],
    model: bool,
    timings: Vec<CommitTiming>,
) -> AnalyzeReport {
    let mut seconds: Vec<f64> = timings.iter().map(|t| t.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((seconds.len() as f64 - 1.0) * p).round() as usize;
        seconds.get(index).copied().unwrap_or(0.0)
    };
    let over_bounds = timings
        .iter()
        .filter(|t| {
            t.seconds > BOUND_ANY_S || (t.files <= TYPICAL_FILES && t.seconds > BOUND_TYPICAL_S)
        })
        .map(|t| format!("{} ({} files, {:.1} s)", t.commit, t.files, t.seconds))
        .collect();
    let newest = commits.first().copied().unwrap_or("");
    let oldest = commits.last().copied().unwrap_or("");
    AnalyzeReport {
        repo: repo.display().to_string(),
        range: format!("{oldest}..{newest} (first parent, inclusive)"),
        model,
        commits: timings.len(),
        p50_seconds: percentile(0.5),
        p95_seconds: percentile(0.95),
        max_seconds: seconds.last().copied().unwrap_or(0.0),
        peak_rss_mb: peak_rss_mb(),
        over_bounds,
        timings,
    }
}

/// The process's peak resident memory (`VmHWM`), in MB; 0 where /proc is not available.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
