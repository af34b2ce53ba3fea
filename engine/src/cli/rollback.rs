//! `cairn rollback RUN`: restores the previous version of every service a run deployed, with
//! its traffic split, and records why; a canary of the run held for a person is rolled back
//! by its deploy step. `cairn rollback --drill SERVICE` rolls a service back and forward again
//! under load and reports the time to full traffic each way and the failed requests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use cairn_engine::agents::deploy::{drill, rollback_run};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct RollbackArgs {
    #[arg(required_unless_present = "drill")]
    pub run: Option<i64>,
    /// Why (recorded with the rollback).
    #[arg(long, default_value = "manual rollback")]
    pub reason: String,
    /// Drill SERVICE instead: back to its previous release and forward again, under load.
    #[arg(long, value_name = "SERVICE", conflicts_with = "run")]
    pub drill: Option<String>,
    /// Where the drill's clients send requests (default: the proxy Cairn runs for the service).
    #[arg(long, requires = "drill")]
    pub url: Option<String>,
}

pub async fn rollback(home: Option<PathBuf>, args: &RollbackArgs) -> Result<ExitCode> {
    let store = Settings::resolve(home, None)?.open_store()?;
    if let Some(service) = &args.drill {
        let report = drill(&store, service, args.url.as_deref())
            .await
            .map_err(|e| anyhow!("{e}"))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        for way in report["ways"].as_array().into_iter().flatten() {
            eprintln!(
                "{}: {} → {}: full traffic after {} ms",
                way["way"].as_str().unwrap_or("?"),
                way["from"].as_str().unwrap_or("?"),
                way["to"].as_str().unwrap_or("?"),
                way["full_traffic_ms"]
            );
        }
        eprintln!(
            "{} requests, {} failed; goal (< 10 s each way, 0 failed) {}",
            report["requests"],
            report["failed_requests"],
            if report["met"] == true {
                "met"
            } else {
                "NOT met"
            }
        );
        return Ok(if report["met"] == true {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_RUN_FAILED)
        });
    }
    let Some(run) = args.run else {
        return Err(anyhow!("name a run to roll back, or --drill SERVICE"));
    };
    let reports = rollback_run(&store, run, &args.reason)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if reports.is_empty() {
        eprintln!("run {run} deployed nothing that can be rolled back");
        return Ok(ExitCode::from(super::EXIT_RUN_FAILED));
    }
    for report in &reports {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(ExitCode::SUCCESS)
}
