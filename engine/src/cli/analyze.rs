//! `cairn analyze --repo PATH [--commit SHA]`: the orchestrator's view of one commit, with the
//! history model's probability and top features beside the rule floor when one was calibrated
//! for the repository (`cairn risk calibrate`).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use cairn_engine::agents::orchestrator;
use cairn_engine::agents::orchestrator::history as risk_model;
use cairn_engine::llm::CallScope;
use cairn_engine::store::Location;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    #[arg(long, value_name = "SHA", default_value = "HEAD")]
    pub commit: String,
    #[arg(long)]
    pub json: bool,
    /// Rules only: do not ask the local model or the remote tier.
    #[arg(long)]
    pub no_model: bool,
}

pub async fn analyze(home: Option<PathBuf>, args: &AnalyzeArgs) -> Result<()> {
    super::check_repository(&args.repo)?;
    let home_for_history = home.clone();
    let router = if args.no_model {
        None
    } else {
        let settings = Settings::resolve(home, None)?;
        let store = settings.open_store()?;
        Some(settings.llm(&store)?)
    };
    // Recorded outside any run, so what the models cost shows in `cairn costs`.
    let scope = CallScope::outside_run("cairn analyze");
    let mut analysis =
        orchestrator::analyze_with_models(&args.repo, &args.commit, router.as_ref(), Some(&scope))
            .await
            .map_err(|e| anyhow!(e))?;
    let history = history_model(home_for_history, &args.repo, &analysis.commit);
    if let Some(explanation) = &history {
        risk_model::raise(&mut analysis, explanation);
    }
    if args.json {
        let mut value = serde_json::to_value(&analysis)?;
        value["history"] = serde_json::to_value(&history)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("commit   {}", analysis.commit);
    println!(
        "risk     {} (score {}, decided by {})",
        analysis.risk.level.as_str(),
        analysis.risk.score,
        analysis.decided_by
    );
    println!("summary  {}", analysis.summary);
    println!("reasons");
    for reason in &analysis.risk.reasons {
        println!(
            "  {:>3}  {:<20} {}",
            reason.score, reason.rule, reason.detail
        );
    }
    println!("files");
    for file in &analysis.files {
        let rename = file
            .file
            .old_path
            .as_deref()
            .map(|p| format!(" (from {p})"))
            .unwrap_or_default();
        let lines = if file.file.binary {
            "binary".to_string()
        } else {
            format!("+{} -{}", file.file.additions, file.file.deletions)
        };
        println!(
            "  {:<9} {:<15} {:>12}  {}{rename}",
            file.file.status,
            file.category.as_str(),
            lines,
            file.file.path
        );
    }
    if let Some(models) = &analysis.models {
        println!("models");
        for call in &models.calls {
            println!("  {call}");
        }
        for skipped in &models.not_summarised {
            println!("  not summarised: {skipped}");
        }
        for note in models.summary_note.iter().chain(&models.risk_note) {
            println!("  {note}");
        }
        if let Some(level) = &models.model_level {
            println!("  the model proposed {level}; the rule floor was kept unless that is higher");
        }
    }
    if let Some(history) = &history {
        println!(
            "history  {:.0}% chance of introducing a defect (this repository's base rate {:.0}%; \
             the model raises to high at {:.0}%, never lowers the rule floor)",
            history.probability * 100.0,
            history.base_rate * 100.0,
            history.high_threshold * 100.0
        );
        for part in &history.top {
            println!(
                "  {:>+6.2}  {:<28} {}",
                part.log_odds,
                part.feature,
                trim_number(part.value)
            );
        }
    }
    let route = &analysis.route;
    println!(
        "route    tests: {}, build: {}, deploy: {}, monitor: {} min",
        route.tests, route.build, route.deploy, route.monitor_minutes
    );
    Ok(())
}

/// The history model's view of `commit` when a model was calibrated for this repository (or a
/// clone of it). Analysis never fails for it: without a store or a model there is nothing to
/// add, and a model that cannot be used is said on stderr.
fn history_model(
    home: Option<PathBuf>,
    repo: &Path,
    commit: &str,
) -> Option<risk_model::Explanation> {
    let settings = Settings::resolve(home, None).ok()?;
    // Never create a state database just to find it has no model.
    match settings.store_location().ok()? {
        Location::Sqlite(path) if !path.exists() => return None,
        _ => {}
    }
    let attempt = || -> Result<Option<risk_model::Explanation>> {
        let store = settings.open_store()?;
        Ok(risk_model::from_store(&store, repo, commit)?)
    };
    match attempt() {
        Ok(explanation) => explanation,
        Err(error) => {
            eprintln!("warning: the history risk model was not applied: {error:#}");
            None
        }
    }
}

fn trim_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}
