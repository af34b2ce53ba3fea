//! `cairn convert FILE`: a workflow written in another form (the design brief's `pipeline:`,
//! a GitHub/Gitea Actions workflow) printed as the Cairn workflow it runs as.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_engine::agents::Registry;
use cairn_engine::pipeline::{self, LoadOptions};

use super::EXIT_INVALID;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The workflow file to convert (any form Cairn reads).
    pub file: PathBuf,
}

pub fn convert(args: &ConvertArgs) -> ExitCode {
    let registry = Registry::builtin(None);
    let names = registry.names();
    // A translation, not a check of the agents' settings: the design brief's own file names no
    // service for its deploy stage, and its native form is where a team adds one
    // (`cairn validate` then checks every agent's configuration).
    let options = LoadOptions {
        known_agents: &names,
        check_with: None,
    };
    match pipeline::load_file_detailed(&args.file, &options) {
        Ok(loaded) => {
            eprintln!(
                "{}: read as {}; the Cairn workflow it runs as follows",
                args.file.display(),
                loaded.form.as_str()
            );
            print!(
                "{}",
                pipeline::to_native_yaml(&loaded.workflow, &loaded.notes)
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
