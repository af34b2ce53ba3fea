//! The design brief's pipeline form (`pipeline: { trigger: on_push, stages: [...] }`, see
//! `../shared/DESIGN.md`), read into Cairn's own [`Workflow`] with every position kept, so it
//! validates like the native form and `cairn convert` prints its native equivalent.
//!
//! ```yaml
//! pipeline:
//!   name: ai-pipeline              # optional; default: the file's name without extension
//!   trigger: on_push               # or a native `trigger:` mapping (schedule, repositories)
//!   env: { KEY: value }            # optional, as the native `env:`
//!   stages:                        # run in order: a stage without `depends_on` follows the one before
//!     - name: analyze              # the step id (a lowercase letter, then a-z 0-9 _ -)
//!       agent: orchestrator        # orchestrator | test_agent | build_agent | deploy_agent | …
//!     - name: test
//!       agent: test_agent          # after an orchestrator stage: runs at medium and high risk
//!       timeout: 10m
//!       on_failure: "Generate fix suggestions, retry once"   # retry once (N times), continue, abort
//!     - name: compile
//!       action: make build         # a shell command instead of an agent
//!     - name: deploy
//!       agent: deploy_agent
//!       depends_on: build          # one stage name or a list
//!       strategy: "AI-selected based on risk score"           # or rolling | blue_green | canary
//!       with: { service: app, listen: 127.0.0.1:8080 }        # the agent's own configuration
//!     - name: monitor
//!       agent: deploy_agent        # with `duration`/`on_anomaly`: the monitor agent
//!       duration: 10m
//!       on_anomaly: auto_rollback
//! ```
//!
//! Stages also take the native step keys `when`, `env`, `retries`, `llm`, `sandbox`,
//! `network` and `limits`. "Generate fix suggestions" in `on_failure` turns on a
//! `test_agent` stage's `with: fix: true` (the test agent proposes a validated patch when
//! tests fail for real, `agents/test/fix/`); on any other stage it is kept as a note that
//! `cairn convert` prints, never dropped silently.

use std::collections::BTreeMap;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::condition::Condition;
use super::model::{Action, CommitSelection, OnFailure, RetryPolicy, Step, Trigger, Workflow};
use super::parse::{ParseContext, Spans, parse_env, parse_trigger};
use super::step::{StepSpans, duration_field, parse_retries, parse_when};
use super::suggest::did_you_mean;
use super::yaml::{
    check_keys, describe, entry, location, non_empty_string, scalar_location, span_location,
    string, string_or_list, to_json,
};

const TOP_LEVEL_KEYS: &[&str] = &["pipeline"];
const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "trigger",
    "env",
    "concurrency",
    "stages",
];
const STAGE_KEYS: &[&str] = &[
    "name",
    "agent",
    "action",
    "with",
    "timeout",
    "on_failure",
    "depends_on",
    "strategy",
    "duration",
    "on_anomaly",
    "when",
    "env",
    "retries",
    "llm",
    "sandbox",
    "network",
    "limits",
    "secrets",
];
const TRIGGERS: &[&str] = &["on_push"];
const STRATEGIES: &[&str] = &["rolling", "blue_green", "canary", "hotfix"];

/// How often `trigger: on_push` asks the watched repositories for new commits: pushes are
/// seen by polling (the cheap `git ls-remote`), so a minute is the delay of a push.
pub const ON_PUSH_SCHEDULE: &str = "* * * * *";

/// Whether the top level is the brief's form (a `pipeline:` key and no native `steps:`).
pub(crate) fn is_brief(root: &MarkedMappingNode) -> bool {
    entry(root, "pipeline").is_some() && entry(root, "steps").is_none()
}

/// Reads the brief's form; `file_name` gives the default workflow name.
pub(crate) fn parse_brief(
    root: &MarkedMappingNode,
    file_name: &str,
    context: &mut ParseContext<'_>,
) -> (Workflow, Spans) {
    let mut spans = Spans::default();
    let mut notes = Vec::new();
    let workflow = parse_pipeline(root, file_name, context, &mut spans, &mut notes);
    spans.notes = notes;
    (workflow, spans)
}

fn parse_pipeline(
    root: &MarkedMappingNode,
    file_name: &str,
    context: &mut ParseContext<'_>,
    spans: &mut Spans,
    notes: &mut Vec<String>,
) -> Workflow {
    check_keys(
        root,
        TOP_LEVEL_KEYS,
        "at the top level of a `pipeline:` file",
        &mut context.diagnostics,
    );
    let default_name = std::path::Path::new(file_name)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty())
        .unwrap_or("pipeline")
        .to_owned();
    let mut workflow = Workflow {
        name: default_name,
        description: None,
        trigger: None,
        concurrency: None,
        env: BTreeMap::new(),
        steps: Vec::new(),
        sandbox: Default::default(),
        llm: Default::default(),
    };
    let Some((_, node)) = entry(root, "pipeline") else {
        return workflow;
    };
    let Some(pipeline) = node.as_mapping() else {
        context.diagnostics.report(
            location(node),
            format!(
                "`pipeline` must be a mapping with `trigger` and `stages`, not {}",
                describe(node)
            ),
        );
        return workflow;
    };
    let diagnostics = &mut context.diagnostics;
    check_keys(pipeline, PIPELINE_KEYS, "in `pipeline`", diagnostics);
    if let Some(name) = entry(pipeline, "name")
        .and_then(|(_, node)| non_empty_string(node, "`pipeline.name`", diagnostics))
    {
        workflow.name = name.as_str().trim().to_owned();
    }
    workflow.description = entry(pipeline, "description")
        .and_then(|(_, node)| string(node, "`pipeline.description`", diagnostics))
        .map(|scalar| scalar.as_str().to_owned());
    workflow.env = entry(pipeline, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, "`pipeline.env`", diagnostics)
    });
    workflow.concurrency =
        entry(pipeline, "concurrency").and_then(|(_, node)| match super::yaml::integer(node) {
            Some(value) if value >= 1 => usize::try_from(value).ok(),
            _ => {
                diagnostics.report(
                    location(node),
                    format!(
                        "`pipeline.concurrency` must be a whole number of at least 1, not {}",
                        describe(node)
                    ),
                );
                None
            }
        });
    workflow.trigger = entry(pipeline, "trigger").and_then(|(_, node)| match node {
        Node::Scalar(scalar) if scalar.as_str().trim() == "on_push" => Some(Trigger {
            schedule: Some(ON_PUSH_SCHEDULE.to_owned()),
            repositories: Vec::new(),
            commits: CommitSelection::Each,
        }),
        Node::Scalar(scalar) => {
            diagnostics.report(
                location(node),
                format!(
                    "unknown trigger `{}` in `pipeline`; expected `on_push` or a mapping with `schedule` and `repositories`{}",
                    scalar.as_str(),
                    did_you_mean(scalar.as_str(), TRIGGERS.iter().copied())
                ),
            );
            None
        }
        _ => parse_trigger(node, diagnostics),
    });
    if workflow
        .trigger
        .as_ref()
        .is_some_and(|trigger| trigger.repositories.is_empty())
    {
        notes.push(
            "`trigger: on_push` watches no repository until `trigger.repositories` names some"
                .to_owned(),
        );
    }

    let stages = match entry(pipeline, "stages") {
        None => {
            context.diagnostics.report(
                span_location(pipeline.span()),
                "missing required key `stages` in `pipeline` (the list of stages to run)",
            );
            return workflow;
        }
        Some((key, Node::Sequence(items))) => {
            if items.is_empty() {
                context.diagnostics.report(
                    scalar_location(key),
                    "`stages` must not be empty; a pipeline needs at least one stage",
                );
            }
            items
        }
        Some((_, node)) => {
            context.diagnostics.report(
                location(node),
                format!("`stages` must be a list of stages, not {}", describe(node)),
            );
            return workflow;
        }
    };
    let has_orchestrator = stages.iter().any(|stage| {
        stage
            .as_mapping()
            .and_then(|mapping| entry(mapping, "agent"))
            .and_then(|(_, node)| node.as_scalar())
            .is_some_and(|agent| agent.as_str().trim() == "orchestrator")
    });
    let mut previous: Option<String> = None;
    for (index, node) in stages.iter().enumerate() {
        if let Some((step, step_spans)) = parse_stage(
            node,
            index,
            previous.as_deref(),
            has_orchestrator,
            context,
            notes,
        ) {
            previous = Some(step.id.clone());
            workflow.steps.push(step);
            spans.steps.push(step_spans);
        }
    }
    workflow
}

fn parse_stage(
    node: &Node,
    index: usize,
    previous: Option<&str>,
    has_orchestrator: bool,
    context: &mut ParseContext<'_>,
    notes: &mut Vec<String>,
) -> Option<(Step, StepSpans)> {
    let diagnostics = &mut context.diagnostics;
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "stage {} must be a mapping with `name` and `agent` or `action`, not {}",
                index + 1,
                describe(node)
            ),
        );
        return None;
    };
    let stage_location = location(node);
    let mut spans = StepSpans {
        id: stage_location,
        ..StepSpans::default()
    };
    let id = match entry(mapping, "name") {
        None => {
            diagnostics.report(stage_location, format!("stage {} is missing required key `name`", index + 1));
            None
        }
        Some((_, node)) => non_empty_string(node, &format!("`name` of stage {}", index + 1), diagnostics)
            .and_then(|scalar| {
                spans.id = scalar_location(scalar);
                let name = scalar.as_str().trim();
                let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
                if !valid {
                    diagnostics.report(
                        scalar_location(scalar),
                        format!("invalid stage name `{name}`: a stage name is its step id, so it starts with a lowercase letter and contains only a-z, 0-9, `_` and `-`"),
                    );
                    return None;
                }
                Some(name.to_owned())
            }),
    };
    let label = match &id {
        Some(id) => format!("stage `{id}`"),
        None => format!("stage {}", index + 1),
    };
    check_keys(mapping, STAGE_KEYS, &format!("in {label}"), diagnostics);

    let monitor_keys =
        entry(mapping, "duration").is_some() || entry(mapping, "on_anomaly").is_some();
    let mut with = match entry(mapping, "with").map(|(_, node)| (node, to_json(node))) {
        None | Some((_, serde_json::Value::Null)) => serde_json::Map::new(),
        Some((_, serde_json::Value::Object(map))) => map,
        Some((node, _)) => {
            diagnostics.report(
                location(node),
                format!(
                    "`with` of {label} must be a mapping, not {}",
                    describe(node)
                ),
            );
            serde_json::Map::new()
        }
    };
    let action = match (entry(mapping, "agent"), entry(mapping, "action")) {
        (Some((agent_key, _)), Some((action_key, _))) => {
            let second = std::cmp::max_by_key(
                scalar_location(agent_key),
                scalar_location(action_key),
                |l| (l.line, l.column),
            );
            diagnostics.report(second, format!("{label} has both `agent` and `action`; a stage runs either a built-in agent or a shell command"));
            None
        }
        (None, None) => {
            diagnostics.report(
                stage_location,
                format!(
                    "{label} needs either `agent` (a built-in agent) or `action` (a shell command)"
                ),
            );
            None
        }
        (None, Some((_, node))) => {
            if let Some((with_key, _)) = entry(mapping, "with") {
                diagnostics.report(
                    scalar_location(with_key),
                    format!("`with` in {label} is only allowed together with `agent`"),
                );
            }
            non_empty_string(node, &format!("`action` of {label}"), diagnostics).map(|command| {
                Action::Run {
                    command: command.as_str().to_owned(),
                }
            })
        }
        (Some((_, node)), None) => {
            non_empty_string(node, &format!("`agent` of {label}"), diagnostics)
                .map(|agent| {
                    let mut name = agent.as_str().trim().to_owned();
                    // The brief's monitor stage is the deploy agent watching what it deployed.
                    if name == "deploy_agent" && monitor_keys {
                        name = "monitor_agent".to_owned();
                    }
                    let known = context.known_agents;
                    if !known.is_empty() && !known.contains(&name.as_str()) {
                        let mut sorted: Vec<&str> = known.to_vec();
                        sorted.sort_unstable();
                        diagnostics.report(
                            location(node),
                            format!(
                                "unknown agent `{name}` in {label}; known agents: {}{}",
                                sorted.join(", "),
                                did_you_mean(&name, sorted.iter().copied())
                            ),
                        );
                    }
                    name
                })
                .map(|name| Action::Agent {
                    name,
                    with: serde_json::Value::Null,
                })
        }
    };
    let agent_name = match &action {
        Some(Action::Agent { name, .. }) => Some(name.clone()),
        _ => None,
    };

    if let Some((_, node)) = entry(mapping, "strategy")
        && let Some(text) = string(node, &format!("`strategy` of {label}"), diagnostics)
    {
        let text = text.as_str().trim();
        let fixed = text.replace('-', "_").to_ascii_lowercase();
        if agent_name.as_deref() != Some("deploy_agent") {
            diagnostics.report(
                location(node),
                format!("`strategy` of {label} is only for a `deploy_agent` stage"),
            );
        } else if STRATEGIES.contains(&fixed.as_str()) {
            with.insert("strategy".into(), serde_json::Value::String(fixed));
        } else if !(text.starts_with("AI") || text.to_ascii_lowercase().contains("risk")) {
            diagnostics.report(
                location(node),
                format!(
                    "invalid `strategy` `{text}` in {label}; expected one of: {}, or \"AI-selected based on risk score\" (the deploy agent's choice by risk){}",
                    STRATEGIES.join(", "),
                    did_you_mean(&fixed, STRATEGIES.iter().copied())
                ),
            );
        }
        // "AI-selected …": nothing fixed, so the deploy agent chooses from the risk (rules
        // floor, a model may only make it more careful).
    }
    if let Some((_, node)) = entry(mapping, "duration") {
        if agent_name.as_deref() != Some("monitor_agent") {
            diagnostics.report(location(node), format!("`duration` of {label} is only for a monitoring stage (`deploy_agent` or `monitor_agent`)"));
        } else if let Some(duration) =
            duration_field(node, &format!("`duration` of {label}"), diagnostics)
        {
            with.insert(
                "window".into(),
                serde_json::Value::String(super::duration::format_duration(duration)),
            );
        }
    }
    if let Some((_, node)) = entry(mapping, "on_anomaly")
        && let Some(value) = string(node, &format!("`on_anomaly` of {label}"), diagnostics)
        && value.as_str().trim() != "auto_rollback"
    {
        diagnostics.report(
            location(node),
            format!(
                "invalid `on_anomaly` value `{}` in {label}; expected `auto_rollback` (the monitor rolls back on its own){}",
                value.as_str(),
                did_you_mean(value.as_str(), ["auto_rollback"])
            ),
        );
    }
    let action = match action {
        Some(Action::Agent { name, .. }) => Action::Agent {
            name,
            with: serde_json::Value::Object(with),
        },
        Some(run) => run,
        None => Action::Run {
            command: String::new(),
        },
    };
    if let (Some(check), Action::Agent { name, with }) = (context.check_with, &action)
        && let Err(message) = check(name, with)
    {
        let at = entry(mapping, "with").map_or(stage_location, |(key, _)| scalar_location(key));
        diagnostics.report(
            at,
            format!("invalid configuration of {label} (agent `{name}`): {message}"),
        );
    }

    let mut depends_on = Vec::new();
    match entry(mapping, "depends_on") {
        Some((_, node)) => {
            if let Some(entries) =
                string_or_list(node, &format!("`depends_on` of {label}"), diagnostics)
            {
                for dependency in entries {
                    let name = dependency.as_str().trim().to_owned();
                    if depends_on.contains(&name) {
                        diagnostics.report(
                            scalar_location(dependency),
                            format!("{label} lists `{name}` more than once in `depends_on`"),
                        );
                        continue;
                    }
                    depends_on.push(name);
                    spans.depends_on.push(scalar_location(dependency));
                }
            }
        }
        // Stages run in order: without `depends_on` a stage follows the one before it.
        None => {
            if let Some(previous) = previous {
                depends_on.push(previous.to_owned());
                spans.depends_on.push(spans.id);
            }
        }
    }

    let timeout = entry(mapping, "timeout").and_then(|(_, node)| {
        let timeout = duration_field(node, &format!("`timeout` of {label}"), diagnostics)?;
        if timeout.is_zero() {
            diagnostics.report(
                location(node),
                format!("`timeout` of {label} must be longer than zero"),
            );
            return None;
        }
        Some(timeout)
    });
    let mut retry = entry(mapping, "retries")
        .map(|(_, node)| parse_retries(node, &label, diagnostics))
        .unwrap_or_default();
    let mut fix_suggestions = false;
    let on_failure = entry(mapping, "on_failure").map_or(OnFailure::Abort, |(_, node)| {
        let Some(text) = string(node, &format!("`on_failure` of {label}"), diagnostics) else {
            return OnFailure::Abort;
        };
        match read_on_failure(text.as_str()) {
            Ok(policy) => {
                fix_suggestions = policy.fix_suggestions;
                if let Some(count) = policy.retries {
                    retry = RetryPolicy {
                        retries: Some(count),
                        ..retry
                    };
                }
                policy.then
            }
            Err(message) => {
                diagnostics.report(
                    location(node),
                    format!("invalid `on_failure` of {label}: {message}"),
                );
                OnFailure::Abort
            }
        }
    });
    // The test agent makes fix suggestions; a `with: fix:` of the stage's own wins.
    let mut action = action;
    if fix_suggestions {
        match &mut action {
            Action::Agent {
                name,
                with: serde_json::Value::Object(with),
            } if name == "test_agent" => {
                with.entry("fix").or_insert(serde_json::Value::Bool(true));
            }
            _ => notes.push(format!(
                "{label}: fix suggestions are made by a `test_agent` stage only; the rest of `on_failure` applies"
            )),
        }
    }
    let mut when = entry(mapping, "when").and_then(|(_, node)| {
        parse_when(
            node,
            &label,
            context.source,
            &mut spans,
            &mut context.diagnostics,
        )
    });
    let diagnostics = &mut context.diagnostics;
    // The brief's routing: low risk (typo, docs) skips the tests.
    if when.is_none()
        && entry(mapping, "when").is_none()
        && has_orchestrator
        && agent_name.as_deref() == Some("test_agent")
    {
        when = Condition::parse("risk >= medium").ok();
    }
    let mut env = entry(mapping, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, &format!("`env` of {label}"), diagnostics)
    });
    let secrets = super::step::parse_secrets(mapping, &label, &mut action, &mut env, diagnostics);
    let sandbox = super::sandbox::parse_step_sandbox(mapping, &label, diagnostics);
    let llm = entry(mapping, "llm").map_or_else(Default::default, |(_, node)| {
        super::llm::parse_model_use(node, &label, diagnostics)
    });
    let id = id.unwrap_or_default();
    Some((
        Step {
            name: id.clone(),
            id,
            action,
            depends_on,
            timeout,
            retry,
            on_failure,
            when,
            env,
            secrets,
            sandbox,
            llm,
            runs_on: Vec::new(),
            location: stage_location,
        },
        spans,
    ))
}

/// What an `on_failure:` sentence asks for.
#[derive(Debug, PartialEq)]
struct FailurePolicy {
    retries: Option<u32>,
    then: OnFailure,
    fix_suggestions: bool,
}

/// Reads `abort`, `continue`, `retry`, or a sentence of comma-separated parts: "retry once",
/// "retry twice", "retry 3 times", "generate fix suggestions", "continue".
fn read_on_failure(text: &str) -> Result<FailurePolicy, String> {
    let mut policy = FailurePolicy {
        retries: None,
        then: OnFailure::Abort,
        fix_suggestions: false,
    };
    let lowered = text.to_ascii_lowercase();
    for part in lowered
        .split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let part = part
            .trim_start_matches("then ")
            .trim_start_matches("and ")
            .trim();
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            ["abort"] | ["fail"] | ["stop"] => policy.then = OnFailure::Abort,
            ["continue"] | ["ignore"] => policy.then = OnFailure::Continue,
            ["retry"] => {
                policy.then = OnFailure::Retry;
            }
            ["retry", count @ ..] => {
                let count = match count {
                    ["once"] => 1,
                    ["twice"] => 2,
                    [n] | [n, "times" | "time"] => n
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("`{part}`: the retry count must be 1 to 100"))?,
                    _ => {
                        return Err(format!(
                            "`{part}` is not understood; write `retry once`, `retry twice` or `retry N times`"
                        ));
                    }
                };
                policy.then = OnFailure::Retry;
                policy.retries = Some(count);
            }
            _ if part.contains("fix suggestion")
                || part.contains("suggest") && part.contains("fix") =>
            {
                policy.fix_suggestions = true;
            }
            _ => {
                return Err(format!(
                    "`{part}` is not understood; expected abort, continue, retry (once, twice, N times) or generate fix suggestions, separated by commas"
                ));
            }
        }
    }
    Ok(policy)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn reads_failure_sentences() {
        let policy = read_on_failure("Generate fix suggestions, retry once").unwrap();
        assert_eq!(
            policy,
            FailurePolicy {
                retries: Some(1),
                then: OnFailure::Retry,
                fix_suggestions: true
            }
        );
        assert_eq!(read_on_failure("retry 3 times").unwrap().retries, Some(3));
        assert_eq!(
            read_on_failure("continue").unwrap().then,
            OnFailure::Continue
        );
        let error = read_on_failure("retry forever").unwrap_err();
        assert!(
            error.contains("the retry count must be 1 to 100"),
            "{error}"
        );
        assert!(read_on_failure("page someone").is_err());
    }

    #[test]
    fn fix_suggestions_turn_on_the_test_agents_fix() {
        let text = "pipeline:\n  stages:\n    - name: test\n      agent: test_agent\n      on_failure: \"Generate fix suggestions, retry once\"\n    - name: off\n      agent: test_agent\n      with: { fix: false }\n      on_failure: generate fix suggestions\n    - name: build\n      agent: build_agent\n      on_failure: generate fix suggestions\n";
        let options = crate::pipeline::LoadOptions {
            known_agents: &[],
            check_with: None,
        };
        let loaded = crate::pipeline::load_str_detailed("p.yaml", text, &options).unwrap();
        let with = |id: &str| match &loaded
            .workflow
            .steps
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .action
        {
            Action::Agent { with, .. } => with.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(with("test")["fix"], serde_json::Value::Bool(true));
        assert_eq!(
            with("off")["fix"],
            serde_json::Value::Bool(false),
            "the stage's own with wins"
        );
        let test = loaded
            .workflow
            .steps
            .iter()
            .find(|s| s.id == "test")
            .unwrap();
        assert_eq!(test.retry.retries, Some(1), "the retry is kept");
        assert_eq!(
            loaded.notes,
            [
                "stage `build`: fix suggestions are made by a `test_agent` stage only; the rest of `on_failure` applies"
            ]
        );
    }
}
