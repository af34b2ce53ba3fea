//! `cairn doctor`: the slow, thorough look at Cairn's state that ordinary commands skip.
//!
//! Every command opens the database with `PRAGMA quick_check` (cheap); the doctor runs the full
//! `PRAGMA integrity_check` (every index against its table), read-only, so a damaged database
//! is reported and left exactly as found. Exit 0 when healthy, 3 when something is wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use cairn_engine::store::{self, Check};

use super::EXIT_ERROR;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct DoctorArgs {}

pub fn doctor(home: Option<PathBuf>, _args: &DoctorArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, None)?;
    let database = settings.database();
    let mut healthy = true;
    match std::fs::metadata(&database) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "database   {}: not created yet (the first run creates it)",
                database.display()
            );
        }
        Err(error) => {
            healthy = false;
            println!("database   {}: cannot be read: {error}", database.display());
        }
        Ok(metadata) => {
            println!(
                "database   {} ({} bytes)",
                database.display(),
                metadata.len()
            );
            match store::refuse_damaged(&database, Check::Full) {
                Ok(()) => println!("integrity  ok (PRAGMA integrity_check)"),
                Err(error) => {
                    healthy = false;
                    println!("integrity  FAILED: {error}");
                }
            }
        }
    }
    if healthy {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: cairn doctor found problems (above)");
        Ok(ExitCode::from(EXIT_ERROR))
    }
}
