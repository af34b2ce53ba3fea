//! `cairn graph FILE`: the workflow's DAG as Mermaid (default) or Graphviz DOT.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_engine::agents::Registry;
use cairn_engine::pipeline::{self, LoadOptions};

use super::EXIT_INVALID;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

#[derive(clap::Args)]
pub struct GraphArgs {
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: Format,
}

pub fn graph(args: &GraphArgs) -> ExitCode {
    let registry = Registry::builtin(None);
    let names = registry.names();
    match pipeline::load_file(
        &args.file,
        &LoadOptions {
            known_agents: &names,
            check_with: None,
        },
    ) {
        Ok(workflow) => {
            let text = match args.format {
                Format::Mermaid => pipeline::to_mermaid(&workflow),
                Format::Dot => pipeline::to_dot(&workflow),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
