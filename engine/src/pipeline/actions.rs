//! GitHub, Gitea and Forgejo Actions workflows (`on:`/`jobs:`), read into Cairn's own
//! [`Workflow`] so they run locally with no runner and no marketplace.
//!
//! The mapping, job by job:
//! - `on.push.branches` → a `trigger` polling for pushes (`brief::ON_PUSH_SCHEDULE`); other
//!   events are noted and ignored (a manual `cairn run` is always possible).
//! - a job → one step running its `steps[]` in order in one script (`run:` through `bash -eo
//!   pipefail`, or `shell: sh`/`python`); `uses: actions/checkout@*` is built in (the run's
//!   workspace is a checkout of the commit); any other `uses:` is an error naming the step.
//! - `strategy.matrix` → one step per combination (`job-v1-v2`), `include`/`exclude` applied;
//!   `needs: job` then waits for every combination.
//! - `needs` → `depends_on`; `if` → `when` (`needs.X.outputs.Y` → `steps.X.outputs.Y`,
//!   `success()` → every need succeeded, `failure()` → one failed, `always()`); a job without
//!   `if` runs only when its needs succeeded, as on GitHub.
//! - `outputs` (`${{ steps.S.outputs.K }}` from `$GITHUB_OUTPUT` lines) → the step's outputs;
//!   `$GITHUB_ENV` lines reach later steps of the job.
//! - `timeout-minutes` → `timeout`; `continue-on-error: true` → `on_failure: continue`; every
//!   other job fails the run at its end but lets independent jobs finish (`on_failure: finish`).
//! - In `run:`, `${{ matrix.K }}`, `${{ env.K }}`, `${{ github.sha | ref_name | workspace |
//!   run_id }}`, `${{ needs.X.outputs.Y }}` (the engine's `CAIRN_STEP_X_Y`) and
//!   `${{ steps.S.outputs.K }}` are understood; anything else is an error at its position.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::condition::Condition;
use super::error::Diagnostics;
use super::model::{
    Action, CommitSelection, Location, OnFailure, Repository, Step, Trigger, Workflow,
};
use super::parse::{ParseContext, Spans, parse_env};
use super::step::StepSpans;
use super::yaml::{
    check_keys, describe, entry, is_null, location, non_empty_string, scalar_location,
    span_location, string, string_or_list,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "run-name",
    "on",
    "env",
    "jobs",
    "permissions",
    "concurrency",
    "defaults",
];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "if",
    "runs-on",
    "steps",
    "env",
    "outputs",
    "timeout-minutes",
    "continue-on-error",
    "strategy",
    "permissions",
    "environment",
    "defaults",
    "concurrency",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "run",
    "uses",
    "with",
    "env",
    "shell",
    "working-directory",
    "continue-on-error",
    "timeout-minutes",
];
const STRATEGY_KEYS: &[&str] = &["matrix", "fail-fast", "max-parallel"];

/// More matrix combinations than this is refused: each one is a step.
const MAX_COMBINATIONS: usize = 256;

/// Whether the top level is an Actions workflow (`jobs:` and no native `steps:`).
pub(crate) fn is_actions(root: &MarkedMappingNode) -> bool {
    entry(root, "jobs").is_some() && entry(root, "steps").is_none()
}

/// One job as read, before its matrix is expanded.
struct Job<'a> {
    key: &'a MarkedScalarNode,
    mapping: &'a MarkedMappingNode,
    /// Step ids of its matrix combinations (one when there is no matrix).
    expansions: Vec<(String, BTreeMap<String, String>)>,
}

pub(crate) fn parse_actions(
    root: &MarkedMappingNode,
    file_name: &str,
    context: &mut ParseContext<'_>,
) -> (Workflow, Spans) {
    let mut spans = Spans::default();
    let diagnostics = &mut context.diagnostics;
    check_keys(
        root,
        TOP_LEVEL_KEYS,
        "at the top level of an Actions workflow",
        diagnostics,
    );
    let name = entry(root, "name")
        .and_then(|(_, node)| non_empty_string(node, "`name`", diagnostics))
        .map(|scalar| scalar.as_str().trim().to_owned())
        .unwrap_or_else(|| {
            std::path::Path::new(file_name)
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or("workflow")
                .to_owned()
        });
    let env = entry(root, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, "`env`", diagnostics)
    });
    let trigger =
        entry(root, "on").and_then(|(_, node)| parse_on(node, diagnostics, &mut spans.notes));
    if entry(root, "on").is_none() {
        diagnostics.report(
            span_location(root.span()),
            "missing required key `on` (the events that start the workflow, e.g. `on: push`)",
        );
    }
    let mut workflow = Workflow {
        name,
        description: None,
        trigger,
        concurrency: None,
        env,
        steps: Vec::new(),
        sandbox: Default::default(),
        llm: Default::default(),
    };
    let jobs = match entry(root, "jobs") {
        Some((_, Node::Mapping(jobs))) if !jobs.is_empty() => jobs,
        Some((key, Node::Mapping(_))) => {
            diagnostics.report(
                scalar_location(key),
                "`jobs` must not be empty; a workflow needs at least one job",
            );
            return (workflow, spans);
        }
        Some((_, node)) => {
            diagnostics.report(
                location(node),
                format!(
                    "`jobs` must be a mapping of job ids to jobs, not {}",
                    describe(node)
                ),
            );
            return (workflow, spans);
        }
        None => return (workflow, spans),
    };

    // First pass: ids and matrix expansions, so `needs:` can name any job in any order.
    let mut read: Vec<Job<'_>> = Vec::new();
    for (key, node) in jobs.iter() {
        let Some(mapping) = node.as_mapping() else {
            diagnostics.report(
                location(node),
                format!(
                    "job `{}` must be a mapping with `steps`, not {}",
                    key.as_str(),
                    describe(node)
                ),
            );
            continue;
        };
        let Some(base) = job_id(key, diagnostics) else {
            continue;
        };
        let expansions = expand_matrix(mapping, &base, key.as_str(), diagnostics);
        read.push(Job {
            key,
            mapping,
            expansions,
        });
    }
    let ids: BTreeMap<&str, Vec<String>> = read
        .iter()
        .map(|job| {
            (
                job.key.as_str(),
                job.expansions.iter().map(|(id, _)| id.clone()).collect(),
            )
        })
        .collect();
    let mut ignored_runs_on = false;
    for job in &read {
        ignored_runs_on |= entry(job.mapping, "runs-on").is_some();
        for (id, matrix) in &job.expansions {
            if let Some((step, step_spans)) = job_step(job, id, matrix, &ids, context) {
                workflow.steps.push(step);
                spans.steps.push(step_spans);
            }
        }
    }
    if ignored_runs_on {
        spans.notes.push(
            "`runs-on` is ignored: every job runs on this machine, in Cairn's sandbox".to_owned(),
        );
    }
    (workflow, spans)
}

/// A job id as a Cairn step id (lowercase; GitHub allows capitals).
fn job_id(key: &MarkedScalarNode, diagnostics: &mut Diagnostics) -> Option<String> {
    let id = key.as_str().to_ascii_lowercase();
    let valid = id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        diagnostics.report(
            scalar_location(key),
            format!(
                "invalid job id `{}`: use a letter first, then letters, digits, `_` and `-`",
                key.as_str()
            ),
        );
        return None;
    }
    Some(id)
}

/// `on: push`, `on: [push, pull_request]`, or `on: { push: { branches: [main] }, … }`.
fn parse_on(
    node: &Node,
    diagnostics: &mut Diagnostics,
    notes: &mut Vec<String>,
) -> Option<Trigger> {
    let mut events: Vec<(String, Option<&Node>)> = Vec::new();
    match node {
        Node::Scalar(scalar) if !is_null(scalar) => {
            events.push((scalar.as_str().trim().to_owned(), None))
        }
        Node::Sequence(_) => {
            for event in string_or_list(node, "`on`", diagnostics)? {
                events.push((event.as_str().trim().to_owned(), None));
            }
        }
        Node::Mapping(mapping) => {
            for (key, value) in mapping.iter() {
                events.push((key.as_str().to_owned(), Some(value)));
            }
        }
        Node::Scalar(_) => {
            diagnostics.report(
                location(node),
                "`on` has no value; expected an event such as `push`",
            );
            return None;
        }
    }
    let mut trigger = None;
    for (event, value) in events {
        if event != "push" {
            notes.push(format!("`on: {event}` is ignored: Cairn starts runs for pushes it polls, and by `cairn run`"));
            continue;
        }
        let mut branches = Vec::new();
        if let Some(Node::Mapping(push)) = value {
            for (key, value) in push.iter() {
                match key.as_str() {
                    "branches" => {
                        if let Some(list) = string_or_list(value, "`on.push.branches`", diagnostics)
                        {
                            for branch in list {
                                let branch = branch.as_str().trim();
                                if branch.contains(['*', '?', '[', '!']) {
                                    diagnostics.report(
                                        scalar_location(branch_node(value, branch).unwrap_or(key)),
                                        format!("branch pattern `{branch}` in `on.push.branches` is not supported; name the branches"),
                                    );
                                } else {
                                    branches.push(branch.to_owned());
                                }
                            }
                        }
                    }
                    other => notes.push(format!("`on.push.{other}` is ignored")),
                }
            }
        }
        trigger = Some(Trigger {
            schedule: Some(super::brief::ON_PUSH_SCHEDULE.to_owned()),
            // The repository the workflow lives in; `cairn serve` resolves `.` from where it runs.
            repositories: vec![Repository {
                url: ".".to_owned(),
                branches,
                webhook_secret_env: None,
            }],
            commits: CommitSelection::Each,
        });
    }
    trigger
}

fn branch_node<'a>(node: &'a Node, branch: &str) -> Option<&'a MarkedScalarNode> {
    match node {
        Node::Sequence(items) => items
            .iter()
            .filter_map(Node::as_scalar)
            .find(|s| s.as_str().trim() == branch),
        Node::Scalar(scalar) => Some(scalar),
        Node::Mapping(_) => None,
    }
}

/// The job's matrix combinations as (step id, values); one entry with no values without one.
fn expand_matrix(
    mapping: &MarkedMappingNode,
    base: &str,
    job: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<(String, BTreeMap<String, String>)> {
    let single = vec![(base.to_owned(), BTreeMap::new())];
    let Some((_, strategy)) = entry(mapping, "strategy") else {
        return single;
    };
    let Some(strategy) = strategy.as_mapping() else {
        diagnostics.report(
            location(strategy),
            format!("`strategy` of job `{job}` must be a mapping with `matrix`"),
        );
        return single;
    };
    check_keys(
        strategy,
        STRATEGY_KEYS,
        &format!("in `strategy` of job `{job}`"),
        diagnostics,
    );
    let Some((_, matrix)) = entry(strategy, "matrix") else {
        return single;
    };
    let Some(matrix) = matrix.as_mapping() else {
        diagnostics.report(
            location(matrix),
            format!(
                "`strategy.matrix` of job `{job}` must be a mapping of names to lists of values"
            ),
        );
        return single;
    };
    let mut combinations: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for (key, value) in matrix.iter() {
        match key.as_str() {
            "include" | "exclude" => {
                let Some(items) = value.as_sequence() else {
                    diagnostics.report(
                        location(value),
                        format!(
                            "`matrix.{}` of job `{job}` must be a list of mappings",
                            key.as_str()
                        ),
                    );
                    continue;
                };
                for item in items.iter() {
                    let Some(values) = matrix_values(item, job, diagnostics) else {
                        continue;
                    };
                    if key.as_str() == "include" {
                        include.push(values)
                    } else {
                        exclude.push(values)
                    }
                }
            }
            name => {
                let Some(items) = value.as_sequence() else {
                    diagnostics.report(
                        location(value),
                        format!(
                            "`matrix.{name}` of job `{job}` must be a list of values, not {}",
                            describe(value)
                        ),
                    );
                    continue;
                };
                let mut values = Vec::new();
                for item in items.iter() {
                    match item.as_scalar() {
                        Some(scalar) if !is_null(scalar) => values.push(scalar.as_str().to_owned()),
                        _ => diagnostics.report(location(item), format!("values of `matrix.{name}` of job `{job}` must be strings or numbers, not {}", describe(item))),
                    }
                }
                combinations = combinations
                    .into_iter()
                    .flat_map(|combination| {
                        values.iter().map(move |value| {
                            let mut next = combination.clone();
                            next.insert(name.to_owned(), value.clone());
                            next
                        })
                    })
                    .collect();
                if combinations.len() > MAX_COMBINATIONS {
                    diagnostics.report(location(value), format!("the matrix of job `{job}` has more than {MAX_COMBINATIONS} combinations"));
                    return single;
                }
            }
        }
    }
    combinations.retain(|combination| {
        !exclude
            .iter()
            .any(|excluded| excluded.iter().all(|(k, v)| combination.get(k) == Some(v)))
    });
    for extra in include {
        // An `include` entry extends the combinations it matches on their own keys, else adds one.
        let mut matched = false;
        for combination in &mut combinations {
            let agrees = extra
                .iter()
                .all(|(k, v)| combination.get(k).is_none_or(|own| own == v));
            let extends = extra.keys().any(|k| !combination.contains_key(k));
            if agrees && extends {
                combination.extend(extra.clone());
                matched = true;
            }
        }
        if !matched {
            combinations.push(extra);
        }
    }
    if combinations.len() == 1 && combinations[0].is_empty() {
        return single;
    }
    combinations
        .into_iter()
        .map(|values| {
            let suffix: Vec<String> = values.values().map(|v| slug(v)).collect();
            (format!("{base}-{}", suffix.join("-")), values)
        })
        .collect()
}

fn matrix_values(
    node: &Node,
    job: &str,
    diagnostics: &mut Diagnostics,
) -> Option<BTreeMap<String, String>> {
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!("each `include`/`exclude` entry of job `{job}` must be a mapping"),
        );
        return None;
    };
    let mut values = BTreeMap::new();
    for (key, value) in mapping.iter() {
        match value.as_scalar() {
            Some(scalar) if !is_null(scalar) => {
                values.insert(key.as_str().to_owned(), scalar.as_str().to_owned());
            }
            _ => diagnostics.report(
                location(value),
                format!(
                    "`{}` in the matrix of job `{job}` must be a string or number",
                    key.as_str()
                ),
            ),
        }
    }
    Some(values)
}

/// A matrix value as part of a step id: lowercase letters and digits, `-` for the rest.
fn slug(value: &str) -> String {
    let mut slug: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "x".to_owned()
    } else {
        slug
    }
}

/// What one expression of `${{ … }}` or `if:` may read besides the needs.
struct Scope<'a> {
    job: &'a str,
    matrix: &'a BTreeMap<String, String>,
    /// Job id → its step ids (a matrix job has several; outputs come from the last).
    ids: &'a BTreeMap<&'a str, Vec<String>>,
    needs: &'a [String],
}

fn job_step(
    job: &Job<'_>,
    id: &str,
    matrix: &BTreeMap<String, String>,
    ids: &BTreeMap<&str, Vec<String>>,
    context: &mut ParseContext<'_>,
) -> Option<(Step, StepSpans)> {
    let diagnostics = &mut context.diagnostics;
    let job_name = job.key.as_str();
    let mapping = job.mapping;
    let label = format!("job `{job_name}`");
    check_keys(mapping, JOB_KEYS, &format!("in {label}"), diagnostics);
    let mut spans = StepSpans {
        id: scalar_location(job.key),
        ..StepSpans::default()
    };
    let job_location = scalar_location(job.key);

    let mut needs: Vec<String> = Vec::new();
    let mut depends_on = Vec::new();
    if let Some((_, node)) = entry(mapping, "needs")
        && let Some(list) = string_or_list(node, &format!("`needs` of {label}"), diagnostics)
    {
        for need in list {
            let name = need.as_str().trim();
            match ids.get(name) {
                Some(expansions) => {
                    needs.push(name.to_owned());
                    for expansion in expansions {
                        depends_on.push(expansion.clone());
                        spans.depends_on.push(scalar_location(need));
                    }
                }
                None => {
                    // Reported by the cross-step check, with a "did you mean".
                    depends_on.push(name.to_ascii_lowercase());
                    spans.depends_on.push(scalar_location(need));
                }
            }
        }
    }
    let scope = Scope {
        job: job_name,
        matrix,
        ids,
        needs: &needs,
    };

    let name = entry(mapping, "name")
        .and_then(|(_, node)| non_empty_string(node, &format!("`name` of {label}"), diagnostics))
        .map(|scalar| substitute_matrix(scalar.as_str(), matrix))
        .unwrap_or_else(|| id.to_owned());
    let timeout = entry(mapping, "timeout-minutes")
        .and_then(|(_, node)| minutes(node, &format!("`timeout-minutes` of {label}"), diagnostics));
    let on_failure = match entry(mapping, "continue-on-error") {
        Some((_, node)) => match node.as_scalar().map(|s| s.as_str().trim()) {
            Some("true") => OnFailure::Continue,
            Some("false") => OnFailure::Finish,
            _ => {
                diagnostics.report(
                    location(node),
                    format!("`continue-on-error` of {label} must be true or false"),
                );
                OnFailure::Finish
            }
        },
        None => OnFailure::Finish,
    };
    let env = entry(mapping, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, &format!("`env` of {label}"), diagnostics)
            .into_iter()
            .map(|(k, v)| (k, substitute_matrix(&v, matrix)))
            .collect()
    });

    let when_text = match entry(mapping, "if") {
        Some((_, node)) => string(node, &format!("`if` of {label}"), diagnostics).map(|scalar| {
            (
                translate_if(scalar.as_str(), &scope),
                scalar_location(scalar),
            )
        }),
        None => Some((Ok(success(&scope)), job_location)),
    };
    let when = match when_text {
        // `always()` with needs must stay a condition: a failed need lets only a step with a
        // `when:` run (`on_failure: finish`).
        Some((Ok(text), _)) if text == "true" && needs.is_empty() => None,
        Some((Ok(text), at)) => match Condition::parse(&text) {
            Ok(condition) => {
                for (_, segments) in condition.paths() {
                    if let [root, step_id, ..] = segments
                        && root == "steps"
                    {
                        spans.when_step_references.push((at, step_id.clone()));
                    }
                }
                Some(condition)
            }
            Err(error) => {
                diagnostics.report(
                    at,
                    format!(
                        "`if` of {label} cannot be read as a condition (`{text}`): {}",
                        error.message
                    ),
                );
                None
            }
        },
        Some((Err(message), at)) => {
            diagnostics.report(at, format!("in `if` of {label}: {message}"));
            None
        }
        None => None,
    };

    let mut secret_names = Vec::new();
    let script = job_script(
        mapping,
        &label,
        job_location,
        &scope,
        context.source,
        &mut secret_names,
        diagnostics,
    );
    let mut secrets: BTreeMap<String, String> = secret_names
        .into_iter()
        .map(|name| (name.clone(), name))
        .collect();
    // A job `env:` value that is a whole secret reference: given as that variable.
    let mut env = env;
    for (key, value) in env.clone() {
        match super::secret_refs::whole_reference(&value) {
            Ok(Some(name)) => {
                env.remove(&key);
                secrets.insert(key, name);
            }
            Ok(None) => {}
            Err(message) => diagnostics.report(
                job_location,
                format!("`{key}` in `env` of {label}: {message}"),
            ),
        }
    }
    Some((
        Step {
            id: id.to_owned(),
            name,
            action: Action::Run { command: script },
            depends_on,
            timeout,
            retry: Default::default(),
            on_failure,
            when,
            env,
            secrets,
            sandbox: Default::default(),
            llm: Default::default(),
            location: job_location,
        },
        spans,
    ))
}

fn minutes(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Option<Duration> {
    let value = node
        .as_scalar()
        .and_then(|s| s.as_str().trim().parse::<f64>().ok());
    match value {
        Some(minutes) if minutes > 0.0 && minutes <= 60.0 * 24.0 * 7.0 => {
            Some(Duration::from_secs_f64(minutes * 60.0))
        }
        _ => {
            diagnostics.report(
                location(node),
                format!(
                    "{what} must be a number of minutes above zero, not {}",
                    describe(node)
                ),
            );
            None
        }
    }
}

/// Every need succeeded (GitHub's implicit `success()`); `true` without needs.
fn success(scope: &Scope<'_>) -> String {
    let terms: Vec<String> = dependency_ids(scope)
        .map(|id| format!("steps.{id}.state == 'succeeded'"))
        .collect();
    if terms.is_empty() {
        "true".to_owned()
    } else {
        terms.join(" && ")
    }
}

fn failure(scope: &Scope<'_>) -> String {
    let terms: Vec<String> = dependency_ids(scope)
        .map(|id| format!("steps.{id}.state == 'failed'"))
        .collect();
    if terms.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", terms.join(" || "))
    }
}

fn dependency_ids<'a>(scope: &'a Scope<'a>) -> impl Iterator<Item = &'a String> + 'a {
    scope
        .needs
        .iter()
        .flat_map(|need| scope.ids.get(need.as_str()).into_iter().flatten())
}

/// The step id whose outputs `needs.<job>` means: the last combination of a matrix job.
fn output_id<'a>(scope: &'a Scope<'a>, job: &str) -> Result<&'a str, String> {
    if !scope.needs.iter().any(|need| need == job) {
        return Err(format!(
            "`needs.{job}` names a job that is not in `needs` of job `{}`",
            scope.job
        ));
    }
    scope
        .ids
        .get(job)
        .and_then(|ids| ids.last())
        .map(String::as_str)
        .ok_or_else(|| format!("unknown job `{job}`"))
}

/// An Actions `if:` as a Cairn condition.
fn translate_if(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    let inner = unwrap_expression(text.trim());
    let mut out = String::new();
    let mut status_function = false;
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A string literal, copied whole ('' is a quote inside it).
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.extend(&chars[start..i.min(chars.len())]);
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let call = chars.get(i) == Some(&'(') && chars.get(i + 1) == Some(&')');
            if call {
                i += 2;
                status_function = true;
                out.push_str(&match word.as_str() {
                    "success" => format!("({})", success(scope)),
                    "failure" => failure(scope),
                    "always" => "true".to_owned(),
                    "cancelled" => "false".to_owned(),
                    other => return Err(format!("function `{other}()` is not supported (supported: success(), failure(), always(), cancelled())")),
                });
                continue;
            }
            if chars.get(i) == Some(&'(') {
                return Err(format!("function `{word}(…)` is not supported"));
            }
            out.push_str(&translate_path(&word, scope, true)?);
            continue;
        }
        out.push(c);
        i += 1;
    }
    if status_function {
        Ok(out)
    } else {
        let guard = success(scope);
        Ok(if guard == "true" {
            out
        } else {
            format!("{guard} && ({out})")
        })
    }
}

fn unwrap_expression(text: &str) -> &str {
    text.strip_prefix("${{")
        .and_then(|rest| rest.strip_suffix("}}"))
        .map_or(text, str::trim)
}

/// A dotted name of the Actions expression language as a Cairn condition path or value.
fn translate_path(word: &str, scope: &Scope<'_>, in_condition: bool) -> Result<String, String> {
    let parts: Vec<&str> = word.split('.').collect();
    let quote = |value: &str| format!("'{}'", value.replace('\'', "''"));
    match parts.as_slice() {
        ["true" | "false" | "null"] => Ok(word.to_owned()),
        ["needs", job, "outputs", key] => {
            Ok(format!("steps.{}.outputs.{key}", output_id(scope, job)?))
        }
        ["needs", job, "result"] => Ok(format!("steps.{}.state", output_id(scope, job)?)),
        ["matrix", key] => scope
            .matrix
            .get(*key)
            .map(|value| {
                if in_condition {
                    quote(value)
                } else {
                    value.clone()
                }
            })
            .ok_or_else(|| format!("`matrix.{key}` is not in the matrix of job `{}`", scope.job)),
        ["github", "ref_name"] => Ok("branch".to_owned()),
        ["github", "sha"] => Ok("commit".to_owned()),
        _ => Err(format!(
            "`{word}` is not supported here (supported: needs.<job>.outputs.<name>, needs.<job>.result, matrix.<name>, github.sha, github.ref_name)"
        )),
    }
}

fn substitute_matrix(text: &str, matrix: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (key, value) in matrix {
        for pattern in [
            format!("${{{{ matrix.{key} }}}}"),
            format!("${{{{matrix.{key}}}}}"),
        ] {
            out = out.replace(&pattern, value);
        }
    }
    out
}

/// `${{ … }}` in `run:` text, replaced by what the step's shell can read.
fn substitute_run(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    substitute_run_collecting(text, scope, &mut Vec::new())
}

/// [`substitute_run`], adding the names of the secrets it reads to `secrets`.
fn substitute_run_collecting(
    text: &str,
    scope: &Scope<'_>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err("`${{` without its closing `}}`".to_owned());
        };
        let expression = after[..end].trim();
        let parts: Vec<&str> = expression.split('.').collect();
        let value = match parts.as_slice() {
            ["matrix", _] => translate_path(expression, scope, false)?,
            ["env", name] => format!("${{{name}}}"),
            ["github", "sha"] => "${CAIRN_COMMIT:-}".to_owned(),
            ["github", "ref_name"] => "${CAIRN_BRANCH:-}".to_owned(),
            ["github", "workspace"] => "${CAIRN_WORKSPACE}".to_owned(),
            ["github", "run_id"] => "${CAIRN_RUN_ID}".to_owned(),
            ["needs", job, "outputs", key] => {
                let id = output_id(scope, job)?;
                format!(
                    "${{{}}}",
                    crate::pipeline::dependency_output_variable(id, key)
                )
            }
            ["steps", step, "outputs", key] => output_reader(step, key),
            ["secrets", name] => {
                crate::secrets::check_name(name).map_err(|error| error.to_string())?;
                secrets.push((*name).to_owned());
                format!("${{{name}}}")
            }
            _ => {
                return Err(format!(
                    "`${{{{ {expression} }}}}` is not supported in `run` (supported: matrix.*, env.*, secrets.*, github.sha, github.ref_name, github.workspace, github.run_id, needs.<job>.outputs.*, steps.<id>.outputs.*)"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Shell text giving the last `key=` line a step of this job wrote to its `$GITHUB_OUTPUT`.
fn output_reader(step: &str, key: &str) -> String {
    // No double quotes: the text goes inside a double-quoted value, and `mktemp -d` paths
    // have no blanks.
    format!(
        "$(sed -n 's/^{key}=//p' $CAIRN_GHA/out.{} 2>/dev/null | tail -n 1)",
        slug(step)
    )
}

/// `'text'` for `sh`: nothing inside single quotes is special but the quote itself.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The job's steps as one `sh` script: each `run:` in its own shell with its env, outputs and
/// the environment `$GITHUB_ENV` collected so far; then the job's `outputs:`.
fn job_script(
    mapping: &MarkedMappingNode,
    label: &str,
    job_location: Location,
    scope: &Scope<'_>,
    source: &super::yaml::Source<'_>,
    secrets: &mut Vec<String>,
    diagnostics: &mut Diagnostics,
) -> String {
    let _ = source;
    let mut script = String::from(
        "set -e\n\
         CAIRN_GHA=$(mktemp -d); export CAIRN_GHA; trap 'rm -rf \"$CAIRN_GHA\"' EXIT\n\
         : > \"$CAIRN_GHA/env\"\n\
         export CI=true GITHUB_WORKSPACE=\"$CAIRN_WORKSPACE\" GITHUB_SHA=\"${CAIRN_COMMIT:-}\" GITHUB_REF_NAME=\"${CAIRN_BRANCH:-}\" GITHUB_ENV=\"$CAIRN_GHA/env\" RUNNER_TEMP=\"$CAIRN_GHA/tmp\"\n\
         mkdir -p \"$RUNNER_TEMP\"\n",
    );
    let steps = match entry(mapping, "steps") {
        Some((_, Node::Sequence(items))) if !items.is_empty() => items,
        Some((key, _)) => {
            diagnostics.report(
                scalar_location(key),
                format!("`steps` of {label} must be a non-empty list of steps"),
            );
            return script;
        }
        None => {
            diagnostics.report(
                job_location,
                format!("{label} is missing required key `steps`"),
            );
            return script;
        }
    };
    for (index, node) in steps.iter().enumerate() {
        let Some(step) = node.as_mapping() else {
            diagnostics.report(
                location(node),
                format!(
                    "step {} of {label} must be a mapping with `run` or `uses`",
                    index + 1
                ),
            );
            continue;
        };
        let step_id = entry(step, "id")
            .and_then(|(_, n)| n.as_scalar())
            .map(|s| s.as_str().trim().to_owned());
        let step_label = match (
            &step_id,
            entry(step, "name").and_then(|(_, n)| n.as_scalar()),
        ) {
            (Some(id), _) => format!("step `{id}` of {label}"),
            (None, Some(name)) => format!("step {} (`{}`) of {label}", index + 1, name.as_str()),
            (None, None) => format!("step {} of {label}", index + 1),
        };
        check_keys(step, STEP_KEYS, &format!("in {step_label}"), diagnostics);
        if let Some((key, _)) = entry(step, "if") {
            diagnostics.report(
                scalar_location(key),
                format!(
                    "`if` on {step_label} is not supported; put the condition on a job of its own"
                ),
            );
        }
        match (entry(step, "uses"), entry(step, "run")) {
            (Some((_, uses)), None) => {
                let action = uses
                    .as_scalar()
                    .map(|s| s.as_str().trim())
                    .unwrap_or_default();
                if action.starts_with("actions/checkout@") || action == "actions/checkout" {
                    script.push_str("# actions/checkout: the run's workspace is already a checkout of the commit\n");
                } else {
                    diagnostics.report(
                        location(uses),
                        format!("{step_label} uses `{action}`: only `actions/checkout` is built in (no marketplace actions in an air gap); replace it with a `run:` step"),
                    );
                }
            }
            (None, Some((_, run))) => {
                let Some(text) =
                    non_empty_string(run, &format!("`run` of {step_label}"), diagnostics)
                else {
                    continue;
                };
                let text = match substitute_run_collecting(text.as_str(), scope, secrets) {
                    Ok(text) => text,
                    Err(message) => {
                        diagnostics.report(
                            scalar_location(text),
                            format!("in `run` of {step_label}: {message}"),
                        );
                        continue;
                    }
                };
                let shell = match entry(step, "shell")
                    .and_then(|(_, n)| n.as_scalar())
                    .map(|s| s.as_str().trim())
                {
                    None | Some("bash") => "bash --noprofile --norc -eo pipefail -c",
                    Some("sh") => "sh -e -c",
                    Some("python") => "python3 -c",
                    Some(other) => {
                        let at =
                            entry(step, "shell").map_or(job_location, |(k, _)| scalar_location(k));
                        diagnostics.report(at, format!("`shell: {other}` of {step_label} is not supported (bash, sh, python)"));
                        continue;
                    }
                };
                let mut env = String::new();
                if let Some((_, node)) = entry(step, "env") {
                    for (key, value) in
                        parse_env(node, &format!("`env` of {step_label}"), diagnostics)
                    {
                        let value = substitute_run_collecting(
                            &substitute_matrix(&value, scope.matrix),
                            scope,
                            secrets,
                        )
                        .unwrap_or(value);
                        env.push_str(&format!(
                            "export {key}=\"{}\"; ",
                            value.replace('"', "\\\"")
                        ));
                    }
                }
                if let Some((_, dir)) = entry(step, "working-directory")
                    && let Some(dir) = non_empty_string(
                        dir,
                        &format!("`working-directory` of {step_label}"),
                        diagnostics,
                    )
                {
                    env.push_str(&format!("cd {}; ", shell_quote(dir.as_str())));
                }
                let timeout = entry(step, "timeout-minutes")
                    .and_then(|(_, node)| {
                        minutes(
                            node,
                            &format!("`timeout-minutes` of {step_label}"),
                            diagnostics,
                        )
                    })
                    .map(|t| format!("timeout {} ", t.as_secs().max(1)))
                    .unwrap_or_default();
                let continue_on_error = entry(step, "continue-on-error")
                    .and_then(|(_, n)| n.as_scalar())
                    .is_some_and(|s| s.as_str().trim() == "true");
                let output = format!(
                    "$CAIRN_GHA/out.{}",
                    slug(step_id.as_deref().unwrap_or(&format!("step{}", index + 1)))
                );
                script.push_str(&format!("# {step_label}\n"));
                script.push_str(&format!(
                    "(: > \"{output}\"; export GITHUB_OUTPUT=\"{output}\"; while IFS= read -r cairn_line; do if [ -n \"$cairn_line\" ]; then export \"$cairn_line\"; fi; done < \"$CAIRN_GHA/env\"; {env}{timeout}{shell} {})",
                    shell_quote(&text)
                ));
                if continue_on_error {
                    script.push_str(" || echo \"(continue-on-error: the step failed)\"");
                }
                script.push('\n');
            }
            (Some((key, _)), Some(_)) => diagnostics.report(
                scalar_location(key),
                format!("{step_label} has both `uses` and `run`"),
            ),
            (None, None) => diagnostics.report(
                location(node),
                format!("{step_label} needs `run` (a shell command) or `uses: actions/checkout@…`"),
            ),
        }
    }
    if let Some((_, outputs)) = entry(mapping, "outputs") {
        let Some(outputs) = outputs.as_mapping() else {
            diagnostics.report(
                location(outputs),
                format!("`outputs` of {label} must be a mapping of names to values"),
            );
            return script;
        };
        for (key, value) in outputs.iter() {
            let Some(text) = string(
                value,
                &format!("output `{}` of {label}", key.as_str()),
                diagnostics,
            ) else {
                continue;
            };
            match substitute_run(text.as_str(), scope) {
                Ok(text) => script.push_str(&format!(
                    "printf '%s=%s\\n' {} \"{}\" >> \"$CAIRN_OUTPUT\"\n",
                    shell_quote(key.as_str()),
                    text.replace('"', "\\\"")
                )),
                Err(message) => diagnostics.report(
                    scalar_location(text),
                    format!("in output `{}` of {label}: {message}", key.as_str()),
                ),
            }
        }
    }
    script
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    /// A job's matrix values, the step ids of every job, and the job's needs.
    type ScopeParts = (
        BTreeMap<String, String>,
        BTreeMap<&'static str, Vec<String>>,
        Vec<String>,
    );

    fn scope_parts() -> ScopeParts {
        let matrix = BTreeMap::from([("os".to_owned(), "linux".to_owned())]);
        let ids = BTreeMap::from([
            ("analyze", vec!["analyze".to_owned()]),
            ("test", vec!["test-1".to_owned(), "test-2".to_owned()]),
        ]);
        (matrix, ids, vec!["analyze".to_owned(), "test".to_owned()])
    }

    #[test]
    fn translates_conditions() {
        let (matrix, ids, needs) = scope_parts();
        let scope = Scope {
            job: "deploy",
            matrix: &matrix,
            ids: &ids,
            needs: &needs,
        };
        assert_eq!(
            translate_if("${{ needs.analyze.outputs.risk != 'low' }}", &scope).unwrap(),
            "steps.analyze.state == 'succeeded' && steps.test-1.state == 'succeeded' && steps.test-2.state == 'succeeded' && (steps.analyze.outputs.risk != 'low')"
        );
        assert_eq!(translate_if("always()", &scope).unwrap(), "true");
        assert_eq!(
            translate_if("failure() && matrix.os == 'linux'", &scope).unwrap(),
            "(steps.analyze.state == 'failed' || steps.test-1.state == 'failed' || steps.test-2.state == 'failed') && 'linux' == 'linux'"
        );
        let error = translate_if("contains(github.ref, 'x')", &scope).unwrap_err();
        assert!(error.contains("`contains(…)` is not supported"), "{error}");
        let error = translate_if("needs.build.outputs.x", &scope).unwrap_err();
        assert!(error.contains("not in `needs`"), "{error}");
    }

    #[test]
    fn substitutes_run_text() {
        let (matrix, ids, needs) = scope_parts();
        let scope = Scope {
            job: "deploy",
            matrix: &matrix,
            ids: &ids,
            needs: &needs,
        };
        assert_eq!(
            substitute_run(
                "echo ${{ matrix.os }} ${{ needs.analyze.outputs.risk }} ${{ github.sha }}",
                &scope
            )
            .unwrap(),
            "echo linux ${CAIRN_STEP_ANALYZE_RISK} ${CAIRN_COMMIT:-}"
        );
        let mut secrets = Vec::new();
        assert_eq!(
            substitute_run_collecting("echo ${{ secrets.X }}", &scope, &mut secrets).unwrap(),
            "echo ${X}"
        );
        assert_eq!(secrets, ["X"]);
        assert!(substitute_run("echo ${{ inputs.x }}", &scope).is_err());
    }
}
