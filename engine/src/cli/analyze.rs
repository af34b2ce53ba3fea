//! `cairn analyze --repo PATH [--commit SHA]`: the orchestrator's view of one commit.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

use cairn_engine::agents::orchestrator;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    #[arg(long, value_name = "SHA", default_value = "HEAD")]
    pub commit: String,
    #[arg(long)]
    pub json: bool,
}

pub fn analyze(args: &AnalyzeArgs) -> Result<()> {
    let analysis = orchestrator::analyze(&args.repo, &args.commit).map_err(|e| anyhow!(e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
        return Ok(());
    }
    println!("commit   {}", analysis.commit);
    println!("risk     {} (score {}, decided by {})", analysis.risk.level.as_str(), analysis.risk.score, analysis.decided_by);
    println!("summary  {}", analysis.summary);
    println!("reasons");
    for reason in &analysis.risk.reasons {
        println!("  {:>3}  {:<20} {}", reason.score, reason.rule, reason.detail);
    }
    println!("files");
    for file in &analysis.files {
        let rename = file.file.old_path.as_deref().map(|p| format!(" (from {p})")).unwrap_or_default();
        let lines = if file.file.binary { "binary".to_string() } else { format!("+{} -{}", file.file.additions, file.file.deletions) };
        println!("  {:<9} {:<15} {:>12}  {}{rename}", file.file.status, file.category.as_str(), lines, file.file.path);
    }
    let route = &analysis.route;
    println!("route    tests: {}, build: {}, deploy: {}, monitor: {} min", route.tests, route.build, route.deploy, route.monitor_minutes);
    Ok(())
}
