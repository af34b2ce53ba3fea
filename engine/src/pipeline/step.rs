//! Reading one entry of `steps:` (the format is documented in [`super::parse`]).

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::condition::Condition;
use super::duration::{format_duration, parse_duration};
use super::error::Diagnostics;
use super::model::{Action, Location, OnFailure, RetryPolicy, Step};
use super::parse::{ParseContext, parse_env};
use super::suggest::did_you_mean;
use super::yaml::{
    Source, check_keys, describe, entry, integer, is_null, location, non_empty_string,
    position_inside, scalar_location, string, string_or_list, to_json,
};

const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "agent",
    "with",
    "run",
    "depends_on",
    "timeout",
    "retries",
    "on_failure",
    "when",
    "env",
    "sandbox",
    "network",
    "limits",
    "llm",
    "secrets",
    "artifacts",
    "cache",
    "runs_on",
];
const RETRY_KEYS: &[&str] = &["count", "backoff", "max_backoff"];
const ON_FAILURE_VALUES: &[&str] = &["abort", "continue", "retry", "finish"];

/// More retries than this is a typo or a loop in disguise.
const MAX_RETRIES: i64 = 100;

/// Positions inside one step, for the cross-step checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepSpans {
    pub(crate) id: Location,
    /// Parallel to `Step::depends_on`.
    pub(crate) depends_on: Vec<Location>,
    /// Every `steps.<id>` the `when:` condition reads, with the position of the id.
    pub(crate) when_step_references: Vec<(Location, String)>,
}

/// Parses one step; `None` only when the entry is not a mapping at all. The step returned may
/// hold defaults where a field was invalid: the diagnostics say whether it can be used.
/// A lowercase letter, then lowercase letters, digits, `_` and `-`.
pub(crate) fn is_step_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub(crate) fn parse_step(
    node: &Node,
    index: usize,
    context: &mut ParseContext<'_>,
) -> Option<(Step, StepSpans)> {
    let Some(mapping) = node.as_mapping() else {
        context.diagnostics.report(
            location(node),
            format!(
                "step {} must be a mapping with `id` and `run` or `agent`, not {}",
                index + 1,
                describe(node)
            ),
        );
        return None;
    };
    let step_location = location(node);
    let mut spans = StepSpans {
        id: step_location,
        ..StepSpans::default()
    };
    let id = parse_id(
        mapping,
        index,
        step_location,
        &mut spans,
        &mut context.diagnostics,
    );
    // Messages name the step by id when it has a usable one, by position otherwise.
    let label = match &id {
        Some(id) => format!("step `{id}`"),
        None => format!("step {}", index + 1),
    };
    let diagnostics = &mut context.diagnostics;
    check_keys(mapping, STEP_KEYS, &format!("in {label}"), diagnostics);

    let name = entry(mapping, "name")
        .and_then(|(_, node)| non_empty_string(node, &format!("`name` of {label}"), diagnostics))
        .map(|scalar| scalar.as_str().trim().to_owned());
    let action = parse_action(
        mapping,
        &label,
        step_location,
        context.known_agents,
        diagnostics,
    );
    if let (Some(check), Action::Agent { name, with }) = (context.check_with, &action) {
        check_agent_with(check, name, with, mapping, &label, diagnostics);
    }

    let mut depends_on = Vec::new();
    let mut listed = std::collections::HashSet::new();
    if let Some((_, node)) = entry(mapping, "depends_on")
        && let Some(entries) =
            string_or_list(node, &format!("`depends_on` of {label}"), diagnostics)
    {
        for dependency in entries {
            let dependency_id = dependency.as_str().trim();
            if !listed.insert(dependency_id) {
                diagnostics.report(
                    scalar_location(dependency),
                    format!("{label} lists `{dependency_id}` more than once in `depends_on`"),
                );
                continue;
            }
            depends_on.push(dependency_id.to_owned());
            spans.depends_on.push(scalar_location(dependency));
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
    let retry = entry(mapping, "retries")
        .map(|(_, node)| parse_retries(node, &label, diagnostics))
        .unwrap_or_default();
    let on_failure = entry(mapping, "on_failure")
        .map(|(_, node)| parse_on_failure(node, &label, diagnostics))
        .unwrap_or_default();
    let when = entry(mapping, "when")
        .and_then(|(_, node)| parse_when(node, &label, context.source, &mut spans, diagnostics));
    let mut env = entry(mapping, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, &format!("`env` of {label}"), diagnostics)
    });
    let mut action = action;
    let secrets = parse_secrets(mapping, &label, &mut action, &mut env, diagnostics);

    let mut sandbox = super::sandbox::parse_step_sandbox(mapping, &label, diagnostics);
    sandbox.files = super::files::parse_step_files(mapping, &label, context.source, diagnostics);
    let llm = entry(mapping, "llm").map_or_else(Default::default, |(_, node)| {
        super::llm::parse_model_use(node, &label, diagnostics)
    });

    let runs_on = parse_runs_on(mapping, &label, &action, diagnostics);

    let id = id.unwrap_or_default();
    let step = Step {
        name: name.unwrap_or_else(|| id.clone()),
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
        runs_on,
        location: step_location,
    };
    Some((step, spans))
}

/// `runs_on: [docker, linux]`: the labels a worker (`cairn worker --labels`) must all have to
/// run the step. Only `run:` steps go to workers, and not yet with files that would have to
/// travel with them (artifacts and caches). Secrets go by name: the worker opens them.
fn parse_runs_on(
    mapping: &MarkedMappingNode,
    label: &str,
    action: &Action,
    diagnostics: &mut Diagnostics,
) -> Vec<String> {
    let Some((key, node)) = entry(mapping, "runs_on") else {
        return Vec::new();
    };
    let at = scalar_location(key);
    let Some(names) = string_or_list(node, &format!("`runs_on` of {label}"), diagnostics) else {
        return Vec::new();
    };
    let mut labels = Vec::new();
    for name in names {
        let text = name.as_str().trim();
        if text.is_empty()
            || !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            diagnostics.report(
                scalar_location(name),
                format!(
                    "`runs_on` of {label}: worker label {text:?} may hold only letters, digits, \
                     `-`, `_` and `.`"
                ),
            );
            continue;
        }
        if !labels.iter().any(|l: &String| l == text) {
            labels.push(text.to_owned());
        }
    }
    let mut refuse = |why: &str| diagnostics.report(at, format!("{label} has `runs_on`: {why}"));
    if matches!(action, Action::Agent { .. }) {
        refuse("only `run:` steps run on workers; agents run in the engine");
    }
    for key in ["artifacts", "cache"] {
        if entry(mapping, key).is_some() {
            refuse(&format!(
                "a step with `{key}` cannot run on a worker yet (its files stay on the worker)"
            ));
        }
    }
    labels
}

/// `secrets: [NAME]` or `secrets: { ENV: NAME }`, `${{ secrets.NAME }}` in `run:` (rewritten to
/// `${NAME}`) and as whole `env:` values (moved out of `env`): env variable → secret name.
pub(crate) fn parse_secrets(
    mapping: &MarkedMappingNode,
    label: &str,
    action: &mut Action,
    env: &mut BTreeMap<String, String>,
    diagnostics: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut secrets = BTreeMap::new();
    if let Some((_, node)) = entry(mapping, "secrets") {
        let valid = |name: &str| crate::secrets::check_name(name).map_err(|e| e.to_string());
        match node {
            Node::Mapping(names) => {
                for (key, value) in names.iter() {
                    let Some(secret) = non_empty_string(
                        value,
                        &format!("secret of `{}` in {label}", key.as_str()),
                        diagnostics,
                    ) else {
                        continue;
                    };
                    for (name, at) in [
                        (key.as_str(), scalar_location(key)),
                        (secret.as_str().trim(), scalar_location(secret)),
                    ] {
                        if let Err(message) = valid(name) {
                            diagnostics.report(at, format!("in `secrets` of {label}: {message}"));
                        }
                    }
                    secrets.insert(key.as_str().to_owned(), secret.as_str().trim().to_owned());
                }
            }
            _ => {
                if let Some(names) =
                    string_or_list(node, &format!("`secrets` of {label}"), diagnostics)
                {
                    for name in names {
                        let text = name.as_str().trim();
                        match valid(text) {
                            Ok(()) => {
                                secrets.insert(text.to_owned(), text.to_owned());
                            }
                            Err(message) => diagnostics.report(
                                scalar_location(name),
                                format!("in `secrets` of {label}: {message}"),
                            ),
                        }
                    }
                }
            }
        }
    }
    if let Action::Run { command } = action {
        match super::secret_refs::rewrite_references(command) {
            Ok((rewritten, names)) => {
                *command = rewritten;
                for name in names {
                    secrets.insert(name.clone(), name);
                }
            }
            Err(message) => {
                let at = entry(mapping, "run")
                    .map_or(super::yaml::span_location(mapping.span()), |(_, node)| {
                        location(node)
                    });
                diagnostics.report(at, format!("in `run` of {label}: {message}"));
            }
        }
    }
    let env_node = entry(mapping, "env").and_then(|(_, node)| node.as_mapping());
    for (key, value) in env.clone() {
        match super::secret_refs::whole_reference(&value) {
            Ok(Some(name)) => {
                env.remove(&key);
                secrets.insert(key, name);
            }
            Ok(None) => {}
            Err(message) => {
                let at = env_node
                    .and_then(|node| entry(node, &key))
                    .map_or(super::yaml::span_location(mapping.span()), |(_, node)| {
                        location(node)
                    });
                diagnostics.report(at, format!("`{key}` in `env` of {label}: {message}"));
            }
        }
    }
    if !secrets.is_empty() && matches!(action, Action::Agent { .. }) {
        let at = entry(mapping, "secrets")
            .map_or(super::yaml::span_location(mapping.span()), |(key, _)| {
                scalar_location(key)
            });
        diagnostics.report(
            at,
            format!("{label} is an agent: secrets are given only to `run:` steps"),
        );
    }
    secrets
}

fn parse_id(
    mapping: &MarkedMappingNode,
    index: usize,
    step_location: Location,
    spans: &mut StepSpans,
    diagnostics: &mut Diagnostics,
) -> Option<String> {
    let Some((_, node)) = entry(mapping, "id") else {
        diagnostics.report(
            step_location,
            format!("step {} is missing required key `id`", index + 1),
        );
        return None;
    };
    let scalar = non_empty_string(node, &format!("`id` of step {}", index + 1), diagnostics)?;
    spans.id = scalar_location(scalar);
    let id = scalar.as_str();
    if !is_step_id(id) {
        diagnostics.report(
            scalar_location(scalar),
            format!(
                "invalid step id `{id}`: an id starts with a lowercase letter and contains only a-z, 0-9, `_` and `-`"
            ),
        );
        return None;
    }
    Some(id.to_owned())
}

/// `run` xor `agent`, and `with` only beside `agent`.
fn parse_action(
    mapping: &MarkedMappingNode,
    label: &str,
    step_location: Location,
    known_agents: &[&str],
    diagnostics: &mut Diagnostics,
) -> Action {
    let run = entry(mapping, "run");
    let agent = entry(mapping, "agent");
    let with = entry(mapping, "with");
    let placeholder = Action::Run {
        command: String::new(),
    };
    match (run, agent) {
        (Some((run_key, _)), Some((agent_key, _))) => {
            // Point at whichever came second: that is the line that made the step ambiguous.
            let second = std::cmp::max_by_key(
                scalar_location(run_key),
                scalar_location(agent_key),
                |location| (location.line, location.column),
            );
            diagnostics.report(
                second,
                format!("{label} has both `run` and `agent`; a step runs either a shell command or an agent"),
            );
            placeholder
        }
        (None, None) => {
            diagnostics.report(
                step_location,
                format!(
                    "{label} needs either `run` (a shell command) or `agent` (a built-in agent)"
                ),
            );
            placeholder
        }
        (Some((_, node)), None) => {
            if let Some((with_key, _)) = with {
                diagnostics.report(
                    scalar_location(with_key),
                    format!("`with` in {label} is only allowed together with `agent`"),
                );
            }
            match node {
                Node::Scalar(scalar) if is_null(scalar) || scalar.as_str().trim().is_empty() => {
                    diagnostics.report(location(node), format!("`run` of {label} is empty"));
                    placeholder
                }
                _ => match string(node, &format!("`run` of {label}"), diagnostics) {
                    Some(command) if command.as_str().contains('\0') => {
                        diagnostics.report(
                            location(node),
                            format!("`run` of {label} contains a NUL character (`\\0`), which a shell command cannot hold"),
                        );
                        placeholder
                    }
                    Some(command) => Action::Run {
                        command: command.as_str().to_owned(),
                    },
                    None => placeholder,
                },
            }
        }
        (None, Some((_, node))) => {
            let Some(name) = non_empty_string(node, &format!("`agent` of {label}"), diagnostics)
            else {
                return placeholder;
            };
            let name = name.as_str().trim();
            if !known_agents.is_empty() && !known_agents.contains(&name) {
                let mut known: Vec<&str> = known_agents.to_vec();
                known.sort_unstable();
                diagnostics.report(
                    location(node),
                    format!(
                        "unknown agent `{name}` in {label}; known agents: {}{}",
                        known.join(", "),
                        did_you_mean(name, known.iter().copied())
                    ),
                );
            }
            // An absent or empty `with` is an empty configuration, so agents read one shape.
            let with = match with.map(|(_, node)| to_json(node)) {
                None | Some(serde_json::Value::Null) => {
                    serde_json::Value::Object(serde_json::Map::new())
                }
                Some(with) => with,
            };
            Action::Agent {
                name: name.to_owned(),
                with,
            }
        }
    }
}

/// Runs the agent's own check of its `with:` and reports a refusal at the key it names (or at
/// `with:`, or the step when there is none).
fn check_agent_with(
    check: super::load::WithCheck<'_>,
    agent: &str,
    with: &serde_json::Value,
    mapping: &MarkedMappingNode,
    label: &str,
    diagnostics: &mut Diagnostics,
) {
    let Err(message) = check(agent, with) else {
        return;
    };
    let with_entry = entry(mapping, "with");
    let named_key = with_entry
        .and_then(|(_, node)| node.as_mapping())
        .and_then(|block| {
            block.keys().find(|key| {
                let key = key.as_str();
                message.starts_with(&format!("{key}:"))
                    || message.starts_with(&format!("{key} "))
                    || message.contains(&format!("`{key}`"))
            })
        });
    let location = match (named_key, with_entry) {
        (Some(key), _) => scalar_location(key),
        (None, Some((key, _))) => scalar_location(key),
        (None, None) => super::yaml::span_location(mapping.span()),
    };
    diagnostics.report(
        location,
        format!("invalid `with` of {label} (agent `{agent}`): {message}"),
    );
}

pub(crate) fn duration_field(
    node: &Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Duration> {
    let scalar = string(node, what, diagnostics)?;
    match parse_duration(scalar.as_str()) {
        Ok(duration) => Some(duration),
        Err(reason) => {
            diagnostics.report(location(node), format!("invalid {what}: {reason}"));
            None
        }
    }
}

fn retry_count(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Option<u32> {
    match integer(node) {
        Some(count) if (0..=MAX_RETRIES).contains(&count) => u32::try_from(count).ok(),
        Some(count) => {
            diagnostics.report(
                location(node),
                format!("{what} must be between 0 and {MAX_RETRIES}, found {count}"),
            );
            None
        }
        None => {
            diagnostics.report(
                location(node),
                format!("{what} must be a whole number, not {}", describe(node)),
            );
            None
        }
    }
}

/// `retries: 2` or `retries: { count: 2, backoff: 5s, max_backoff: 1m }`.
pub(crate) fn parse_retries(
    node: &Node,
    label: &str,
    diagnostics: &mut Diagnostics,
) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    match node {
        Node::Mapping(mapping) => {
            check_keys(mapping, RETRY_KEYS, &format!("in `retries` of {label}"), diagnostics);
            if let Some((_, count)) = entry(mapping, "count") {
                policy.retries = retry_count(count, &format!("`retries.count` of {label}"), diagnostics);
            }
            let backoff = entry(mapping, "backoff")
                .and_then(|(_, node)| duration_field(node, &format!("`retries.backoff` of {label}"), diagnostics));
            let max_backoff = entry(mapping, "max_backoff").and_then(|(_, node)| {
                duration_field(node, &format!("`retries.max_backoff` of {label}"), diagnostics).map(|value| (node, value))
            });
            if let Some(backoff) = backoff {
                policy.backoff = backoff;
                // A long first delay with the default cap would silently be cut short.
                policy.max_backoff = policy.max_backoff.max(backoff);
            }
            if let Some((max_node, max_backoff)) = max_backoff {
                if max_backoff < policy.backoff {
                    diagnostics.report(
                        location(max_node),
                        format!(
                            "`retries.max_backoff` of {label} ({}) is shorter than `backoff` ({})",
                            format_duration(max_backoff),
                            format_duration(policy.backoff)
                        ),
                    );
                }
                policy.max_backoff = max_backoff;
            }
        }
        Node::Scalar(_) if integer(node).is_some() => {
            policy.retries = retry_count(node, &format!("`retries` of {label}"), diagnostics);
        }
        _ => diagnostics.report(
            location(node),
            format!(
                "`retries` of {label} must be a whole number or a mapping with `count`, `backoff` and `max_backoff`, not {}",
                describe(node)
            ),
        ),
    }
    policy
}

fn parse_on_failure(node: &Node, label: &str, diagnostics: &mut Diagnostics) -> OnFailure {
    let Some(scalar) = string(node, &format!("`on_failure` of {label}"), diagnostics) else {
        return OnFailure::default();
    };
    match scalar.as_str() {
        "abort" => OnFailure::Abort,
        "continue" => OnFailure::Continue,
        "retry" => OnFailure::Retry,
        "finish" => OnFailure::Finish,
        other => {
            diagnostics.report(
                location(node),
                format!(
                    "invalid `on_failure` value `{other}` in {label}; expected one of: {}{}",
                    ON_FAILURE_VALUES.join(", "),
                    did_you_mean(other, ON_FAILURE_VALUES.iter().copied())
                ),
            );
            OnFailure::default()
        }
    }
}

pub(crate) fn parse_when(
    node: &Node,
    label: &str,
    source: &Source<'_>,
    spans: &mut StepSpans,
    diagnostics: &mut Diagnostics,
) -> Option<Condition> {
    let scalar: &MarkedScalarNode = match node {
        Node::Scalar(scalar) if is_null(scalar) || scalar.as_str().trim().is_empty() => {
            diagnostics.report(location(node), format!("`when` of {label} is empty"));
            return None;
        }
        _ => string(node, &format!("`when` of {label}"), diagnostics)?,
    };
    let condition = match Condition::parse(scalar.as_str()) {
        Ok(condition) => condition,
        Err(error) => {
            diagnostics.report(
                position_inside(source, scalar, error.offset),
                format!("invalid `when` condition in {label}: {}", error.message),
            );
            return None;
        }
    };
    let root_errors = condition.check_roots();
    for error in &root_errors {
        diagnostics.report(
            position_inside(source, scalar, error.offset),
            format!("in `when` of {label}: {}", error.message),
        );
    }
    for (offset, segments) in condition.paths() {
        if let [root, step_id, ..] = segments
            && root == "steps"
        {
            let id_offset = offset + root.len() + 1;
            spans
                .when_step_references
                .push((position_inside(source, scalar, id_offset), step_id.clone()));
        }
    }
    root_errors.is_empty().then_some(condition)
}
