//! `cairn analyze --repo PATH [--commit SHA]`: the orchestrator's view of one commit.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

use cairn_engine::agents::orchestrator;
use cairn_engine::llm::CallScope;

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
    let router = if args.no_model {
        None
    } else {
        let settings = Settings::resolve(home, None)?;
        let store = settings.open_store()?;
        Some(settings.llm(&store)?)
    };
    // Recorded outside any run, so what the models cost shows in `cairn costs`.
    let scope = CallScope::outside_run("cairn analyze");
    let analysis =
        orchestrator::analyze_with_models(&args.repo, &args.commit, router.as_ref(), Some(&scope))
            .await
            .map_err(|e| anyhow!(e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
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
    let route = &analysis.route;
    println!(
        "route    tests: {}, build: {}, deploy: {}, monitor: {} min",
        route.tests, route.build, route.deploy, route.monitor_minutes
    );
    Ok(())
}
