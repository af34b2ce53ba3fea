//! `cairn rollback RUN`: restores the previous version of every service a run deployed, with
//! its traffic split, and records why.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use cairn_engine::agents::deploy::rollback_run;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct RollbackArgs {
    pub run: i64,
    /// Why (recorded with the rollback).
    #[arg(long, default_value = "manual rollback")]
    pub reason: String,
}

pub async fn rollback(home: Option<PathBuf>, args: &RollbackArgs) -> Result<ExitCode> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let reports = rollback_run(&store, args.run, &args.reason)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if reports.is_empty() {
        eprintln!("run {} deployed nothing that can be rolled back", args.run);
        return Ok(ExitCode::from(super::EXIT_RUN_FAILED));
    }
    for report in &reports {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(ExitCode::SUCCESS)
}
