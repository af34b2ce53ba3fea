//! `cairn tests flaky`: tests that flip between passing and failing, with their score and
//! quarantine state. `cairn tests proposals`: generated tests and proposed fixes, and the gate's
//! verdict on each.
//! `cairn tests measure` lives in `measure.rs`.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use cairn_engine::agents::test::flakiness;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct TestsArgs {
    #[command(subcommand)]
    pub what: TestsCommand,
}

#[derive(clap::Subcommand)]
pub enum TestsCommand {
    /// Tests that failed or flaked, by flakiness score, with quarantine state.
    Flaky {
        /// Only this repository (its URL or path as the runs record it).
        #[arg(long)]
        repo: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Generated tests and proposed fixes, newest first: accepted or rejected, and why.
    Proposals {
        /// Only this repository (its URL or path as the runs record it).
        #[arg(long)]
        repo: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Measure test selection on a repository's history: fraction selected, and safety by
    /// mutation (every test revealing a fault in a changed function must be selected).
    Measure(super::measure::MeasureArgs),
}

pub fn tests(home: Option<PathBuf>, args: &TestsArgs) -> Result<()> {
    let (repo, as_json) = match &args.what {
        TestsCommand::Flaky { repo, json } => (repo, json),
        TestsCommand::Proposals { repo, limit, json } => {
            return proposals(home, repo.as_deref(), *limit, *json);
        }
        TestsCommand::Measure(measure) => return super::measure::measure(measure),
    };
    let store = Settings::resolve(home, None)?.open_store()?;
    let mut rows = Vec::new();
    for (repo, test_id) in store.unsteady_tests(repo.as_deref())? {
        let history = store.test_history(&repo, &test_id, 20)?;
        let quarantine = store.quarantined(&repo)?.remove(&test_id);
        rows.push(json!({
            "repo": repo,
            "test": test_id,
            "score": flakiness(&history),
            "runs": history.len(),
            "flaky_runs": history.iter().filter(|o| o.as_str() == "flaky").count(),
            "quarantined": quarantine.is_some(),
            "passes_in_row": quarantine.map(|q| q.passes_in_row),
        }));
    }
    rows.sort_by(|a, b| {
        b["score"]
            .as_f64()
            .partial_cmp(&a["score"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if *as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no test has failed or flaked yet");
        return Ok(());
    }
    // Numbers as numbers: a JSON value ignores width and alignment when printed.
    let count = |value: &serde_json::Value| value.as_u64().unwrap_or(0);
    let states: Vec<String> = rows
        .iter()
        .map(|row| {
            if row["quarantined"] == true {
                format!("quarantined ({} ok)", count(&row["passes_in_row"]))
            } else {
                "active".into()
            }
        })
        .collect();
    let state_width = states.iter().map(String::len).max().unwrap_or(0).max(5);
    println!(
        "{:>6} {:>5} {:>6}  {:<state_width$}  TEST",
        "SCORE", "RUNS", "FLAKY", "STATE"
    );
    for (row, state) in rows.iter().zip(&states) {
        println!(
            "{:>6.2} {:>5} {:>6}  {:<state_width$}  {}",
            row["score"].as_f64().unwrap_or(0.0),
            count(&row["runs"]),
            count(&row["flaky_runs"]),
            state,
            row["test"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn proposals(home: Option<PathBuf>, repo: Option<&str>, limit: usize, as_json: bool) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let rows = store.test_proposals(repo, limit)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!(
            "nothing has been proposed yet (with: generate: true or fix: true on a test_agent step)"
        );
        return Ok(());
    }
    println!(
        "{:>5} {:<12} {:<4} {:<9} {:<18} {:<7} FOR",
        "RUN", "COMMIT", "KIND", "STATUS", "REASON", "TIER"
    );
    for row in &rows {
        let commit = &row.commit_id[..row.commit_id.len().min(12)];
        let what = if row.kind == "fix" {
            let files = if row.source_path.is_empty() {
                "no patch"
            } else {
                row.source_path.as_str()
            };
            format!("failing {} ({files})", row.function)
        } else {
            format!("{} ({})", row.function, row.source_path)
        };
        println!(
            "{:>5} {:<12} {:<4} {:<9} {:<18} {:<7} {what}",
            row.run_id, commit, row.kind, row.status, row.reason, row.tier
        );
        if let Some(first) = row.detail.lines().find(|l| !l.trim().is_empty()) {
            println!("{:>5} {first}", "");
        }
    }
    Ok(())
}
