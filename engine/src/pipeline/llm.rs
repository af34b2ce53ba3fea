//! The `llm:` key of a workflow and of a step: which language models its agents may use.
//!
//! ```yaml
//! llm: { local: off }        # top level: no step of this workflow runs the local model
//! steps:
//!   - id: analyze
//!     agent: orchestrator
//!     llm: { remote: off }   # this step keeps its text on the machine; keys it leaves out
//!                            # come from the top level
//! ```
//!
//! Each key is `on` (the default) or `off`. A tier that is off is skipped, so the next one
//! answers (remote → local → rules): with both off, the agent's rules decide, exactly as with
//! the orchestrator's `with: { model: off }`. The rules' risk floor never depends on a model.

use marked_yaml::Node;

use super::error::Diagnostics;
use super::model::ModelUse;
use super::yaml::{check_keys, describe, entry, location};

const KEYS: &[&str] = &["local", "remote"];

/// `llm:` of the workflow (`label` "the workflow") or of a step; every problem is reported.
pub(crate) fn parse_model_use(node: &Node, label: &str, diagnostics: &mut Diagnostics) -> ModelUse {
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "`llm` of {label} must be a mapping such as `{{ local: off }}`, not {}",
                describe(node)
            ),
        );
        return ModelUse::default();
    };
    check_keys(mapping, KEYS, &format!("in `llm` of {label}"), diagnostics);
    let mut toggle = |key: &str| {
        let (_, value) = entry(mapping, key)?;
        match value.as_scalar().map(|s| s.as_str().trim()) {
            Some("on" | "true" | "yes") => Some(true),
            Some("off" | "false" | "no") => Some(false),
            _ => {
                diagnostics.report(
                    location(value),
                    format!(
                        "`llm.{key}` of {label} must be `on` or `off`, not {}",
                        describe(value)
                    ),
                );
                None
            }
        }
    };
    let local = toggle("local");
    let remote = toggle("remote");
    ModelUse { local, remote }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use crate::pipeline::{LoadOptions, ModelUse, load_str};

    const OPTIONS: LoadOptions<'static> = LoadOptions {
        known_agents: &[],
        check_with: None,
    };

    #[test]
    fn a_step_inherits_the_workflows_llm_and_overrides_what_it_says() {
        let text = "name: w\nllm: { local: off }\nsteps:\n  - id: a\n    agent: orchestrator\n  - id: b\n    agent: orchestrator\n    llm: { local: on, remote: off }\n";
        let workflow = load_str("w.yaml", text, &OPTIONS).unwrap();
        let a = workflow.steps[0].llm.over(workflow.llm);
        let b = workflow.steps[1].llm.over(workflow.llm);
        assert!(!a.local_allowed() && a.remote_allowed(), "{a:?}");
        assert!(b.local_allowed() && !b.remote_allowed(), "{b:?}");
        assert_eq!(
            ModelUse::default().over(ModelUse::default()),
            ModelUse::default()
        );
        assert!(ModelUse::default().local_allowed() && ModelUse::default().remote_allowed());
    }

    #[test]
    fn mistakes_are_named_with_their_position() {
        let text = "name: w\nllm: { local: maybe, remot: off }\nsteps:\n  - id: a\n    run: 'true'\n    llm: off\n";
        let error = load_str("w.yaml", text, &OPTIONS).unwrap_err().to_string();
        assert!(
            error.contains("w.yaml:2:15: `llm.local` of the workflow must be `on` or `off`"),
            "{error}"
        );
        assert!(
            error.contains("w.yaml:2:") && error.contains("remot"),
            "{error}"
        );
        assert!(error.contains("did you mean `remote`"), "{error}");
        assert!(
            error.contains("w.yaml:6:10: `llm` of step") && error.contains("must be a mapping"),
            "{error}"
        );
    }
}
