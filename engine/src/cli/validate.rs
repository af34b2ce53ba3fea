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
        match pipeline::load_file_detailed(file, &options) {
            Ok(loaded) => {
                let form = match loaded.form {
                    pipeline::Form::Native => String::new(),
                    other => format!(" (read as {}; `cairn convert` shows it)", other.as_str()),
                };
                println!(
                    "{}: ok: workflow `{}` with {}{form}",
                    file.display(),
                    loaded.workflow.name,
                    super::run::plural(loaded.workflow.steps.len(), "step")
                );
                for note in &loaded.notes {
                    eprintln!("{}: note: {note}", file.display());
                }
            }
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
