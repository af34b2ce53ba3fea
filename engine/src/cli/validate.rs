//! `cairn validate FILE`: every problem of a workflow file, with file, line and column.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_engine::agents::Registry;
use cairn_engine::pipeline::{self, LoadOptions};

use super::EXIT_INVALID;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Workflow files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn validate(args: &ValidateArgs) -> ExitCode {
    let registry = Registry::builtin(None);
    let names = registry.names();
    let check = |name: &str, with: &serde_json::Value| {
        cairn_engine::exec::Agents::check_with(&registry, name, with)
    };
    let options = LoadOptions {
        known_agents: &names,
        check_with: Some(&check),
    };
    let mut ok = true;
    for file in &args.files {
        match pipeline::load_file(file, &options) {
            Ok(workflow) => println!(
                "{}: ok: workflow `{}` with {}",
                file.display(),
                workflow.name,
                super::run::plural(workflow.steps.len(), "step")
            ),
            Err(error) => {
                ok = false;
                eprintln!("{error}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
