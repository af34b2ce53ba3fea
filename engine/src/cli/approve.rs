//! `cairn approve RUN`: lets a run's deploy that waits for its window (or for the end of a
//! freeze) go now; the reason is recorded with it. See `agents/deploy/gate.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use cairn_engine::agents::deploy::approve_run;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct ApproveArgs {
    pub run: i64,
    /// Why it may go outside its window (recorded with the deploy).
    #[arg(long, default_value = "approved by a person")]
    pub reason: String,
}

pub async fn approve(home: Option<PathBuf>, args: &ApproveArgs) -> Result<ExitCode> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let reports = approve_run(&store, args.run, &args.reason)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if reports.is_empty() {
        eprintln!(
            "run {} has no deploy waiting for a window (`cairn status` lists waiting deploys)",
            args.run
        );
        return Ok(ExitCode::from(super::EXIT_RUN_FAILED));
    }
    for report in &reports {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(ExitCode::SUCCESS)
}
