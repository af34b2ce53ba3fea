//! `cairn artifacts list RUN` and `cairn artifacts get RUN --step STEP --out DIR`: what a run's
//! steps handed on (`artifacts:`), and a copy of one step's files, extracted under the same
//! rules as a restore into a workspace (`exec/files/archive.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use cairn_engine::exec::files::{Blobs, extract};
use cairn_engine::store::Error as StoreError;

use super::Invalid;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct ArtifactsArgs {
    #[command(subcommand)]
    pub command: ArtifactsCommand,
}

#[derive(clap::Subcommand)]
pub enum ArtifactsCommand {
    /// Every artifact file of a run: step, path, size and SHA-256.
    List {
        run: i64,
        /// One JSON array of { step_id, path, size, sha256, archive }.
        #[arg(long)]
        json: bool,
    },
    /// Extract one step's artifacts into a directory.
    Get {
        run: i64,
        #[arg(long)]
        step: String,
        /// Where to extract (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub fn artifacts(home: Option<PathBuf>, args: &ArtifactsArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    match &args.command {
        ArtifactsCommand::List { run, json } => {
            let run = store.run(*run)?;
            let records = store.artifacts(run.id)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&json!(records))?);
                return Ok(());
            }
            if records.is_empty() {
                eprintln!("run {} has no artifacts", run.id);
                return Ok(());
            }
            // At least as wide as the headings.
            let step_width = records.iter().map(|r| r.step_id.len()).fold(4, usize::max);
            let path_width = records
                .iter()
                .map(|r| r.file.path.len())
                .fold(4, usize::max);
            println!(
                "{:step_width$}  {:path_width$}  {:>12}  SHA256",
                "STEP", "PATH", "SIZE"
            );
            for record in records {
                println!(
                    "{:step_width$}  {:path_width$}  {:>12}  {}",
                    record.step_id, record.file.path, record.file.size, record.file.sha256
                );
            }
            Ok(())
        }
        ArtifactsCommand::Get { run, step, out } => {
            let run = store.run(*run)?;
            if !store.steps(run.id)?.iter().any(|s| &s.step_id == step) {
                return Err(StoreError::StepNotFound {
                    run_id: run.id,
                    step_id: step.clone(),
                }
                .into());
            }
            let Some(archive) = store.artifact_archive(run.id, step)? else {
                return Err(Invalid(format!(
                    "step `{step}` of run {} stored no artifacts (it declares none, or did not succeed)",
                    run.id
                ))
                .into());
            };
            let blob = Blobs::beside(&store)
                .open_verified(&archive)
                .with_context(|| format!("artifacts of step `{step}` of run {}", run.id))?;
            let extracted = extract(std::io::BufReader::new(blob), out)
                .with_context(|| format!("failed to extract into {}", out.display()))?;
            eprintln!(
                "extracted {} files ({} bytes) of step `{step}` into {}",
                extracted.files,
                extracted.bytes,
                out.display()
            );
            Ok(())
        }
    }
}
