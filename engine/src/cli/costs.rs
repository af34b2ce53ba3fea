//! `cairn costs`: what language-model calls spent, by day, task and tier, and what the cache
//! saved.

use std::path::PathBuf;

use anyhow::Result;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct CostsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn costs(home: Option<PathBuf>, args: &CostsArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let rows = store.costs()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no language-model calls recorded yet");
        return Ok(());
    }
    println!(
        "{:<10}  {:<22} {:<7} {:>6} {:>6} {:>9} {:>10} {:>10}",
        "DAY", "TASK", "TIER", "CALLS", "HITS", "TOKENS", "COST", "SAVED"
    );
    let (mut tokens, mut cost, mut saved, mut calls, mut hits) = (0u64, 0i64, 0i64, 0u64, 0u64);
    for row in &rows {
        println!(
            "{:<10}  {:<22} {:<7} {:>6} {:>6} {:>9} {:>10.4} {:>10.4}",
            row.day,
            row.task,
            row.tier,
            row.calls,
            row.cache_hits,
            row.tokens,
            row.cost_micros as f64 / 1e6,
            row.saved_micros as f64 / 1e6
        );
        tokens += row.tokens;
        cost += row.cost_micros;
        saved += row.saved_micros;
        calls += row.calls;
        hits += row.cache_hits;
    }
    println!(
        "{:<10}  {:<22} {:<7} {:>6} {:>6} {:>9} {:>10.4} {:>10.4}",
        "total",
        "",
        "",
        calls,
        hits,
        tokens,
        cost as f64 / 1e6,
        saved as f64 / 1e6
    );
    Ok(())
}
