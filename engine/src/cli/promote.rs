//! `cairn promote RUN`: a person's answer to a canary held without a verdict (`inconclusive:
//! hold`): the deploy step promotes it to all replicas. `cairn rollback RUN` is the other
//! answer. See `agents/deploy/rollback.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use cairn_engine::agents::deploy::promote_run;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct PromoteArgs {
    pub run: i64,
    /// Why (recorded with the deploy).
    #[arg(long, default_value = "promoted by a person")]
    pub reason: String,
}

pub async fn promote(home: Option<PathBuf>, args: &PromoteArgs) -> Result<ExitCode> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let reports = promote_run(&store, args.run, &args.reason)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if reports.is_empty() {
        eprintln!(
            "run {} has no canary waiting for a person (`cairn status` lists held canaries)",
            args.run
        );
        return Ok(ExitCode::from(super::EXIT_RUN_FAILED));
    }
    for report in &reports {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(ExitCode::SUCCESS)
}
