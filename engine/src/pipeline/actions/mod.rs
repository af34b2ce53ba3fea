//! GitHub, Gitea and Forgejo Actions workflows (`on:`/`jobs:`), read into Cairn's own
//! [`Workflow`] so they run locally with no runner and no marketplace.
//!
//! The mapping, job by job:
//! - `on.push.branches` / `branches-ignore` → a `trigger` polling for pushes
//!   (`brief::ON_PUSH_SCHEDULE`) on the branches the patterns match (`*`, `**`, `?`, `[…]`,
//!   `!` to leave out; see `pipeline/branches.rs`); other events are noted and ignored (a
//!   manual `cairn run` is always possible).
//! - a job → one step running its `steps[]` in order in one script ([`script`]); a step's
//!   `if:` is evaluated by that script between steps ([`step_if`]); `uses: actions/checkout@*`
//!   is built in (the run's workspace is a checkout of the commit), `upload-artifact` and
//!   `cache` become the job's `artifacts:` and `cache:`, `download-artifact` is implied
//!   ([`uses`]); any other `uses:` is an error naming the step.
//! - `strategy.matrix` → one step per combination (`job-v1-v2`), `include`/`exclude` applied
//!   ([`matrix`]); `needs: job` then waits for every combination.
//! - `needs` → `depends_on`; `if` → `when` (`needs.X.outputs.Y` → `steps.X.outputs.Y`,
//!   `success()` → every need succeeded, `failure()` → one failed, `always()`); a job without
//!   `if` runs only when its needs succeeded, as on GitHub ([`expressions`]).
//! - `outputs` (`${{ steps.S.outputs.K }}` from `$GITHUB_OUTPUT`, one line or a
//!   `K<<EOF` block) → the step's outputs; `$GITHUB_ENV` and `$GITHUB_PATH` reach later steps
//!   of the job.
//! - `timeout-minutes` → `timeout`; `continue-on-error: true` → `on_failure: continue`; every
//!   other job fails the run at its end but lets independent jobs finish (`on_failure: finish`).
//! - In `run:`, `${{ matrix.K }}`, `${{ env.K }}`, `${{ secrets.K }}`, `${{ github.sha |
//!   ref_name | workspace | run_id }}`, `${{ needs.X.outputs.Y }}` (the engine's
//!   `CAIRN_STEP_X_Y`) and `${{ steps.S.outputs.K }}` are understood; anything else is an
//!   error at its position.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::condition::Condition;
use super::error::Diagnostics;
use super::model::{
    Action, CommitSelection, OnFailure, Repository, Step, StepFiles, StepSandbox, Trigger, Workflow,
};
use super::parse::{ParseContext, Spans, parse_env};
use super::step::StepSpans;
use super::yaml::{
    check_keys, describe, entry, is_null, location, non_empty_string, scalar_location,
    span_location, string, string_or_list,
};

mod expressions;
mod matrix;
mod script;
mod step_if;
mod uses;

use expressions::{Scope, success, translate_if};
use matrix::{expand_matrix, substitute_matrix};
use script::job_script;

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
    "if",
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
    if !super::step::is_step_id(&id) {
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
            let mut ignore = Vec::new();
            for (key, value) in push.iter() {
                let target = match key.as_str() {
                    "branches" => &mut branches,
                    "branches-ignore" => &mut ignore,
                    other => {
                        notes.push(format!("`on.push.{other}` is ignored"));
                        continue;
                    }
                };
                let what = format!("`on.push.{}`", key.as_str());
                if let Some(list) = string_or_list(value, &what, diagnostics) {
                    target.extend(list.iter().map(|b| b.as_str().trim().to_owned()));
                }
            }
            if !ignore.is_empty() {
                if !branches.is_empty() {
                    diagnostics.report(
                        span_location(push.span()),
                        "`on.push` has both `branches` and `branches-ignore`; GitHub refuses that too: use `!` patterns in `branches`",
                    );
                }
                // Every branch but the ignored ones.
                branches = std::iter::once("**".to_owned())
                    .chain(ignore.into_iter().map(|b| format!("!{b}")))
                    .collect();
            }
            if let Err(error) = super::BranchFilter::new(&branches) {
                diagnostics.report(span_location(push.span()), format!("in `on.push`: {error}"));
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
    let mut files = StepFiles::default();
    let script = job_script(
        mapping,
        &label,
        job_location,
        &scope,
        &mut secret_names,
        &mut files,
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
            sandbox: StepSandbox {
                files,
                ..Default::default()
            },
            llm: Default::default(),
            runs_on: Vec::new(),
            location: job_location,
        },
        spans,
    ))
}

pub(super) fn minutes(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Option<Duration> {
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
