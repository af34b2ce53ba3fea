//! `cairn doctor`: the slow, thorough look at Cairn's state that ordinary commands skip, and
//! what this machine gives Cairn.
//!
//! Every command opens the database with `PRAGMA quick_check` (cheap); the doctor runs the full
//! `PRAGMA integrity_check` (every index against its table), read-only, so a damaged database
//! is reported and left exactly as found. It then reports the step sandbox: the mechanism found,
//! the policy, and how each resource limit is enforced. Exit 0 when healthy, 3 when something is
//! wrong (a damaged database, or a policy that requires a sandbox this machine cannot give).
//! Then the machine itself (`doctor_target.rs`): CPU features, disk, Docker, HAProxy, the
//! model and, from an unpacked `cairn bundle`, every file's checksum.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use cairn_engine::exec::sandbox::Mechanism;
use cairn_engine::pipeline::SandboxPolicy;
use cairn_engine::store::{self, Check, Location};

use super::EXIT_ERROR;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// An unpacked `cairn bundle` to check file by file against its manifest (found by
    /// itself when this binary is the bundle's `bin/cairn`).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
}

pub fn doctor(home: Option<PathBuf>, args: &DoctorArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, None)?;
    let bundle = args
        .bundle
        .clone()
        .or_else(super::doctor_target::bundle_of_this_binary);
    let healthy = check_database(&settings)
        & check_sandbox(&settings)?
        & super::doctor_target::check_target(&settings, bundle.as_deref());
    if healthy {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: cairn doctor found problems (above)");
        Ok(ExitCode::from(EXIT_ERROR))
    }
}

fn check_database(settings: &Settings) -> bool {
    let database = match settings.store_location() {
        Ok(Location::Sqlite(path)) => path,
        Ok(location @ Location::Postgres(_)) => {
            return match location.open(&settings.home) {
                Ok(store) => {
                    println!(
                        "database   PostgreSQL at {}: reachable, schema current",
                        store.location()
                    );
                    true
                }
                Err(error) => {
                    println!("database   PostgreSQL: {:#}", anyhow::Error::from(error));
                    false
                }
            };
        }
        Err(error) => {
            println!("database   {error:#}");
            return false;
        }
    };
    match std::fs::metadata(&database) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "database   {}: not created yet (the first run creates it)",
                database.display()
            );
            true
        }
        Err(error) => {
            println!("database   {}: cannot be read: {error}", database.display());
            false
        }
        Ok(metadata) => {
            println!(
                "database   {} ({} bytes)",
                database.display(),
                metadata.len()
            );
            match store::refuse_damaged(&database, Check::Full) {
                Ok(()) => {
                    println!("integrity  ok (PRAGMA integrity_check)");
                    true
                }
                Err(error) => {
                    println!("integrity  FAILED: {error}");
                    false
                }
            }
        }
    }
}

fn check_sandbox(settings: &Settings) -> Result<bool> {
    let sandbox = settings.sandbox()?;
    println!("sandbox: {}", sandbox.mechanism.describe());
    println!("sandbox policy: {}", sandbox.policy.as_str());
    for line in sandbox.limit_report() {
        println!("  {line}");
    }
    if let Mechanism::Unavailable { why } = &sandbox.mechanism {
        match sandbox.policy {
            SandboxPolicy::Required => {
                eprintln!("error: the policy requires a sandbox and none is available: {why}");
                return Ok(false);
            }
            SandboxPolicy::Auto => eprintln!(
                "warning: steps would run without a sandbox: {why}; install bubblewrap \
                 (`apt-get install bubblewrap`)"
            ),
            SandboxPolicy::Off => {}
        }
    }
    Ok(true)
}
