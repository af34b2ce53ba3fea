//! Entry points: load a workflow from a file or a string, running every check, and return it
//! or all the problems found. Problems come in phases: YAML syntax first (nothing else can be
//! checked without a tree), then every field on its own, then the checks across steps.

use std::path::Path;

use super::error::{Diagnostic, Diagnostics, Error};
use super::model::{Location, Workflow};
use super::parse::parse;
use super::validate::validate;

/// Checks an agent's `with:` block: `(agent name, with as JSON)`; the error message names the
/// key it is about first (`key: …` or `` `key` ``).
pub type WithCheck<'a> = &'a (dyn Fn(&str, &serde_json::Value) -> Result<(), String> + Sync);

/// What the loader needs to know about the engine it loads for.
#[derive(Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Agents the engine has registered; `agent:` names outside this list are errors.
    /// Empty means "do not check agent names" (for tools that only check the file's shape).
    pub known_agents: &'a [&'a str],
    /// Each agent's own check of its `with:` (the registry's); `None` checks only the shape.
    pub check_with: Option<WithCheck<'a>>,
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("known_agents", &self.known_agents)
            .field("check_with", &self.check_with.is_some())
            .finish()
    }
}

/// Reads and loads a workflow file; messages name the file as `path` is written.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Workflow, Error> {
    let file_name = path.display().to_string();
    match super::limits::read_limited(path) {
        Ok(text) => load_str(&file_name, &text, options),
        Err(reason) => Err(Error {
            diagnostics: vec![Diagnostic {
                file: file_name,
                location: Location { line: 1, column: 1 },
                message: format!("failed to read workflow file: {reason}"),
            }],
        }),
    }
}

/// Loads a workflow from `text`; `file_name` is only used in messages, exactly as given.
pub fn load_str(file_name: &str, text: &str, options: &LoadOptions) -> Result<Workflow, Error> {
    load_str_detailed(file_name, text, options).map(|loaded| loaded.workflow)
}

/// A loaded workflow with the form it was written in and what its conversion could not
/// honour (for `cairn validate` and `cairn convert`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub workflow: Workflow,
    pub form: super::parse::Form,
    pub notes: Vec<String>,
}

/// [`load_str`], keeping the form and the conversion's notes.
pub fn load_str_detailed(
    file_name: &str,
    text: &str,
    options: &LoadOptions,
) -> Result<Loaded, Error> {
    let (workflow, spans) = parse(file_name, text, options)?;
    let mut diagnostics = Diagnostics::new(file_name);
    validate(&workflow, &spans, &mut diagnostics);
    diagnostics.finish(Loaded {
        workflow,
        form: spans.form,
        notes: spans.notes,
    })
}

/// [`load_file`], keeping the form and the conversion's notes.
pub fn load_file_detailed(path: &Path, options: &LoadOptions) -> Result<Loaded, Error> {
    let file_name = path.display().to_string();
    match super::limits::read_limited(path) {
        Ok(text) => load_str_detailed(&file_name, &text, options),
        Err(reason) => Err(Error {
            diagnostics: vec![Diagnostic {
                file: file_name,
                location: Location { line: 1, column: 1 },
                message: format!("failed to read workflow file: {reason}"),
            }],
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        let options = LoadOptions {
            known_agents: &["orchestrator", "noop"],
            check_with: None,
        };
        match load_str("t.yaml", text, &options) {
            Ok(workflow) => panic!("expected errors, loaded {workflow:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn loads_the_default_pipeline() {
        let text = include_str!("../../../workflows/ai-pipeline.yaml");
        let options = LoadOptions {
            known_agents: &[
                "orchestrator",
                "noop",
                "test_agent",
                "build_agent",
                "deploy_agent",
                "monitor_agent",
            ],
            check_with: None,
        };
        let workflow = load_str("ai-pipeline.yaml", text, &options).unwrap();
        let ids: Vec<&str> = workflow.steps.iter().map(|step| step.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "analyze",
                "test",
                "test-extra",
                "build",
                "image",
                "deploy",
                "monitor"
            ]
        );
        let test = workflow.step("test").unwrap();
        assert_eq!(test.timeout, Some(std::time::Duration::from_secs(600)));
        let deploy = workflow.step("deploy").unwrap();
        assert_eq!(
            deploy.timeout,
            Some(std::time::Duration::from_secs(45 * 60))
        );
        let when = test.when.as_ref().unwrap();
        assert!(when.evaluate(&serde_json::json!({ "risk": "high" })));
        assert!(!when.evaluate(&serde_json::json!({ "risk": "low" })));
        let trigger = workflow.trigger.as_ref().unwrap();
        assert_eq!(trigger.schedule.as_deref(), Some("*/5 * * * *"));
        assert_eq!(trigger.repositories[0].branches, ["main"]);
    }

    #[test]
    fn positions_point_into_condition_text() {
        let text = "name: x\nsteps:\n  - id: a\n    run: 'true'\n    when: risk >=\n";
        assert_eq!(
            errors(text),
            "t.yaml:5:18: invalid `when` condition in step `a`: expected a value after `>=`"
        );
        let text =
            "name: x\nsteps:\n  - id: a\n    run: 'true'\n    when: \"risk == high || rsk\"\n";
        assert!(
            errors(text).starts_with("t.yaml:5:28: in `when` of step `a`: unknown variable `rsk`")
        );
    }

    #[test]
    fn converts_values() {
        let text = "name: x\nenv: { COUNT: 3, DEBUG: false, QUOTED: '007' }\nsteps:\n  - id: a\n    agent: noop\n    with: { n: 2000, r: 0.5, s: \"123\", b: true, z: ~, list: [a, 1] }\n  - id: b\n    agent: noop\n    with:\n";
        let workflow = load_str("t.yaml", text, &LoadOptions::default()).unwrap();
        assert_eq!(workflow.env["COUNT"], "3");
        assert_eq!(workflow.env["DEBUG"], "false");
        assert_eq!(workflow.env["QUOTED"], "007");
        let with = |index: usize| match &workflow.steps[index].action {
            super::super::model::Action::Agent { with, .. } => with.clone(),
            other => panic!("expected an agent, found {other:?}"),
        };
        assert_eq!(
            with(0),
            serde_json::json!({ "n": 2000, "r": 0.5, "s": "123", "b": true, "z": null, "list": ["a", 1] })
        );
        assert_eq!(with(1), serde_json::json!({}));
    }

    #[test]
    fn missing_file_is_a_diagnostic() {
        let error = load_file(
            Path::new("/nonexistent/cairn.yaml"),
            &LoadOptions::default(),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/cairn.yaml:1:1: failed to read workflow file:")
        );
    }
}
