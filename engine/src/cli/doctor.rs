//! `cairn doctor`: what this machine gives Cairn. For now the sandbox: the mechanism found,
//! the policy, and how each resource limit is enforced. Exit 3 when the policy requires a
//! sandbox this machine cannot give.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use cairn_engine::exec::sandbox::Mechanism;
use cairn_engine::pipeline::SandboxPolicy;

use super::EXIT_ERROR;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct DoctorArgs {}

pub fn doctor(home: Option<PathBuf>, _args: &DoctorArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, None)?;
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
                return Ok(ExitCode::from(EXIT_ERROR));
            }
            SandboxPolicy::Auto => eprintln!(
                "warning: steps would run without a sandbox: {why}; install bubblewrap \
                 (`apt-get install bubblewrap`)"
            ),
            SandboxPolicy::Off => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
