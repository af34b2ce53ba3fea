//! Entry points: load a workflow from a file or a string, running every check, and return it
//! or all the problems found. Problems come in phases: YAML syntax first (nothing else can be
//! checked without a tree), then every field on its own, then the checks across steps.

use std::path::Path;

use super::error::{Diagnostic, Diagnostics, Error};
use super::model::{Location, Workflow};
use super::parse::parse;
use super::validate::validate;

/// What the loader needs to know about the engine it loads for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Agents the engine has registered; `agent:` names outside this list are errors.
    /// Empty means "do not check agent names" (for tools that only check the file's shape).
    pub known_agents: &'a [&'a str],
}

/// Reads and loads a workflow file; messages name the file as `path` is written.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Workflow, Error> {
    let file_name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&file_name, &text, options),
        Err(error) => Err(Error {
            diagnostics: vec![Diagnostic {
                file: file_name,
                location: Location { line: 1, column: 1 },
                message: format!("failed to read workflow file: {error}"),
            }],
        }),
    }
}

/// Loads a workflow from `text`; `file_name` is only used in messages, exactly as given.
pub fn load_str(file_name: &str, text: &str, options: &LoadOptions) -> Result<Workflow, Error> {
    let (workflow, spans) = parse(file_name, text, options.known_agents)?;
    let mut diagnostics = Diagnostics::new(file_name);
    validate(&workflow, &spans, &mut diagnostics);
    diagnostics.finish(workflow)
}
