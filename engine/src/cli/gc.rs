//! `cairn gc`: applies the retention policy now (`retention:` in `cairn.yaml`): deletes
//! finished runs and logs past their age, expired cache entries, and run directories left
//! without a run or holding a finished run's checkout, and artifact and cache blobs no row
//! names. `cairn serve` does the same hourly.

use std::path::PathBuf;

use anyhow::Result;

use cairn_engine::retention::collect;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct GcArgs {
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn gc(home: Option<PathBuf>, args: &GcArgs) -> Result<()> {
    let settings = Settings::resolve(home, None)?;
    let retention = settings.retention()?;
    let store = settings.open_store()?;
    let report = collect(&store, &settings.work_dir(), &retention)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let policy = retention.policy;
    eprintln!(
        "kept: runs for {}, logs for {}, and the newest {} finished runs",
        cairn_engine::pipeline::format_duration(policy.runs),
        cairn_engine::pipeline::format_duration(policy.logs),
        policy.keep_runs
    );
    println!(
        "removed {} runs, {} log lines, {} expired cache entries, {} other rows",
        report.database.runs.len(),
        report.database.log_lines,
        report.database.cache_entries,
        report.database.other_rows
    );
    println!(
        "removed {} run directories and {} checkouts of finished runs",
        report.run_directories.len(),
        report.checkouts
    );
    println!(
        "evicted {} step cache entries to fit the cache size; removed {} unreferenced artifact \
         and cache blobs ({} bytes)",
        report.cache_evictions, report.blobs, report.blob_bytes
    );
    Ok(())
}
