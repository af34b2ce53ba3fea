//! Reading a workflow file: YAML text → node tree with positions → [`Workflow`], reporting
//! every problem with the line and column of the key or value it is about.
//!
//! # Workflow file format
//!
//! ```yaml
//! name: ai-pipeline                 # required
//! description: Risk-routed delivery # optional
//! concurrency: 4                    # optional, at least 1: most steps running at once
//! env: { KEY: value }               # optional; numbers and booleans become strings
//! llm: { local: off }               # optional: which models agents may use (see `llm.rs`)
//! trigger:                          # optional: when `cairn serve` starts runs by itself
//!   schedule: "*/5 * * * *"         # cron, 5 fields (or 6 with leading seconds)
//!   commits: each                   # each (default: one run per new commit) | latest
//!   repositories:
//!     - url: /srv/git/app.git       # a path or any URL git can fetch;
//!       branches: [main, 'rel/**']  #   names or GitHub-style patterns (`branches.rs`); a plain string item means just the url;
//!       webhook_secret_env: APP_HOOK  #   optional: env var of `cairn serve` with the webhook secret
//!     - /srv/git/other.git          #   branches: one string or a list (default branch if absent)
//! steps:                            # required, a non-empty list; file order breaks ties
//!   - id: analyze                   # required, unique: a lowercase letter, then a-z 0-9 _ -
//!     name: Analyze the change      # optional, defaults to the id
//!     agent: orchestrator           # exactly one of `agent` (a built-in agent) ...
//!     with: { any: yaml }           #   ... with its configuration (only with `agent`)
//!   - id: test
//!     run: make test                # ... or `run` (a shell command, `sh -c`; block scalars ok)
//!     depends_on: analyze           # one id or a list of ids
//!     timeout: 10m                  # ms, s, m, h, d, combinable: 1h30m; must be > 0
//!     retries: 2                    # or { count: 2, backoff: 5s, max_backoff: 1m }
//!     on_failure: retry             # abort (default) | continue | retry
//!     when: risk >= medium          # a condition over the run context (see `condition.rs`)
//!     env: { KEY: value }           # added to the workflow's env, wins on conflicts
//!     sandbox: { write: [~/.cache] } # declared sandbox exceptions; `network:`, `limits:`
//!     llm: { remote: off }          # which models the step's agent may use (see `llm.rs`)
//!     artifacts: [dist/app]         # files handed to every step depending on this one
//!     cache: { key: "deps-{{ hash 'Cargo.lock' }}", paths: [target] }  # see `files.rs`
//! ```
//!
//! The sandbox keys (top-level `sandbox: required`, per-step `sandbox:`, `network:`,
//! `limits:`) are documented and parsed in `sandbox.rs`.
//!
//! Checks made here (all reported at once): YAML syntax, duplicate keys, unknown keys (with a
//! "did you mean" for near misses), value types, required keys, `run` xor `agent`, `with`
//! only with `agent`, step id syntax and uniqueness, durations, `concurrency >= 1`,
//! `on_failure` and `commits` values, cron syntax, condition syntax and variables, and known
//! agents. Checks across steps (dependencies, cycles) are in [`super::validate`].

use std::collections::{BTreeMap, HashMap};

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{LoadError, LoaderOptions, Node};

use super::error::{Diagnostics, Error};
use super::model::{CommitSelection, Location, Repository, Trigger, Workflow};
use super::schedule::parse_schedule;
use super::step::{StepSpans, parse_step};
use super::suggest::did_you_mean;
use super::yaml::{
    Source, check_keys, describe, entry, integer, is_null, location, non_empty_string,
    scalar_location, string, string_or_list,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "concurrency",
    "env",
    "trigger",
    "steps",
    "sandbox",
    "llm",
];
const TRIGGER_KEYS: &[&str] = &["schedule", "commits", "repositories"];
const REPOSITORY_KEYS: &[&str] = &["url", "branches", "webhook_secret_env"];

/// What the parse needs besides the text.
pub(crate) struct ParseContext<'a> {
    pub(crate) source: &'a Source<'a>,
    /// Empty means "do not check agent names".
    pub(crate) known_agents: &'a [&'a str],
    pub(crate) check_with: Option<super::load::WithCheck<'a>>,
    pub(crate) diagnostics: Diagnostics,
}

/// Positions kept beside the model for the cross-step checks of [`super::validate`].
#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Parallel to `Workflow::steps`.
    pub(crate) steps: Vec<StepSpans>,
    /// The form the file was written in.
    pub(crate) form: Form,
    /// What a conversion from another form could not honour, said rather than dropped.
    pub(crate) notes: Vec<String>,
}

/// The form a workflow file is written in; every form loads into the same [`Workflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// Cairn's own `name:`/`steps:` form.
    #[default]
    Native,
    /// The design brief's `pipeline:`/`stages:` form (`brief.rs`).
    Brief,
    /// A GitHub, Gitea or Forgejo Actions workflow (`actions.rs`).
    Actions,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Native => "cairn",
            Form::Brief => "design-brief pipeline",
            Form::Actions => "GitHub/Gitea Actions",
        }
    }
}

/// Parses `source` into a workflow whose every field is well formed on its own.
pub(crate) fn parse(
    file_name: &str,
    source: &str,
    options: &super::load::LoadOptions<'_>,
) -> Result<(Workflow, Spans), Error> {
    let mut diagnostics = Diagnostics::new(file_name);
    // Before any tree is built: a tree too deep to walk must never exist.
    if let Err(error) = super::limits::check(source) {
        diagnostics.report(error.location, error.message);
        return Err(diagnostics.into_error());
    }
    let indexed = Source::new(source);
    let mut context = ParseContext {
        source: &indexed,
        known_agents: options.known_agents,
        check_with: options.check_with,
        diagnostics,
    };
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        // Keeps quoted scalars distinguishable, so `retries: "2"` is a string and `"null"` is not null.
        .prevent_coercion(true);
    let mut root = match marked_yaml::parse_yaml_with_options(0, source, options) {
        Ok(root) => root,
        Err(error) => {
            let (location, message) = describe_load_error(&error);
            context.diagnostics.report(location, message);
            return Err(context.diagnostics.into_error());
        }
    };
    super::yaml::normalize_spans(&mut root, &indexed);
    let Some(root) = root.as_mapping() else {
        // The loader is asked for a top-level mapping, so this is only a safety net.
        context
            .diagnostics
            .report(location(&root), "a workflow file must be a YAML mapping");
        return Err(context.diagnostics.into_error());
    };
    let (workflow, spans) = if super::brief::is_brief(root) {
        let (workflow, mut spans) = super::brief::parse_brief(root, file_name, &mut context);
        spans.form = Form::Brief;
        (workflow, spans)
    } else if super::actions::is_actions(root) {
        let (workflow, mut spans) = super::actions::parse_actions(root, file_name, &mut context);
        spans.form = Form::Actions;
        (workflow, spans)
    } else {
        parse_workflow(root, &mut context)
    };
    context.diagnostics.finish((workflow, spans))
}

pub(crate) fn describe_load_error(error: &LoadError) -> (Location, String) {
    let at = |marker: &marked_yaml::Marker| Location {
        line: marker.line(),
        column: marker.column(),
    };
    match error {
        LoadError::TopLevelMustBeMapping(marker) => (
            at(marker),
            "a workflow file must be a YAML mapping with `name` and `steps` at the top level"
                .to_owned(),
        ),
        LoadError::TopLevelMustBeSequence(marker) => {
            (at(marker), "expected a YAML list".to_owned())
        }
        LoadError::UnexpectedAnchor(marker) => (
            at(marker),
            "YAML anchors and aliases (`&name`, `*name`) are not supported in workflow files"
                .to_owned(),
        ),
        LoadError::MappingKeyMustBeScalar(marker) => {
            (at(marker), "mapping keys must be plain strings".to_owned())
        }
        LoadError::UnexpectedTag(marker) => (
            at(marker),
            "YAML tags (`!name`) are not supported in workflow files".to_owned(),
        ),
        LoadError::ScanError(marker, scan_error) => {
            (at(marker), format!("invalid YAML: {}", scan_error.info()))
        }
        LoadError::DuplicateKey(duplicate) => (
            scalar_location(&duplicate.key),
            format!(
                "duplicate key `{}`; first defined at line {}",
                duplicate.key.as_str(),
                scalar_location(&duplicate.prev_key).line
            ),
        ),
    }
}

fn parse_workflow(root: &MarkedMappingNode, context: &mut ParseContext<'_>) -> (Workflow, Spans) {
    let diagnostics = &mut context.diagnostics;
    check_keys(root, TOP_LEVEL_KEYS, "at the top level", diagnostics);
    let root_location = super::yaml::span_location(root.span());

    let name = match entry(root, "name") {
        Some((_, node)) => non_empty_string(node, "`name`", diagnostics)
            .map(|scalar| scalar.as_str().trim().to_owned()),
        None => {
            diagnostics.report(
                root_location,
                "missing required key `name` (the workflow's name)",
            );
            None
        }
    };
    let description = entry(root, "description")
        .and_then(|(_, node)| string(node, "`description`", diagnostics))
        .map(|scalar| scalar.as_str().to_owned());
    let concurrency = entry(root, "concurrency").and_then(|(_, node)| match integer(node) {
        Some(value) if value >= 1 => usize::try_from(value).ok(),
        Some(value) => {
            diagnostics.report(
                location(node),
                format!("`concurrency` must be at least 1, found {value}"),
            );
            None
        }
        None => {
            diagnostics.report(
                location(node),
                format!(
                    "`concurrency` must be a whole number of at least 1, not {}",
                    describe(node)
                ),
            );
            None
        }
    });
    let env = entry(root, "env").map_or_else(BTreeMap::new, |(_, node)| {
        parse_env(node, "`env`", diagnostics)
    });
    let trigger = entry(root, "trigger").and_then(|(_, node)| parse_trigger(node, diagnostics));
    let sandbox = entry(root, "sandbox").map_or_else(Default::default, |(_, node)| {
        super::sandbox::parse_requirement(node, diagnostics)
    });

    let llm = entry(root, "llm").map_or_else(Default::default, |(_, node)| {
        super::llm::parse_model_use(node, "the workflow", diagnostics)
    });

    let mut steps = Vec::new();
    let mut spans = Spans::default();
    match entry(root, "steps") {
        None => context.diagnostics.report(
            root_location,
            "missing required key `steps` (the list of steps to run)",
        ),
        Some((key, Node::Sequence(items))) => {
            if items.is_empty() {
                context.diagnostics.report(
                    scalar_location(key),
                    "`steps` must not be empty; a workflow needs at least one step",
                );
            }
            for (index, item) in items.iter().enumerate() {
                if let Some((step, step_spans)) = parse_step(item, index, context) {
                    steps.push(step);
                    spans.steps.push(step_spans);
                }
            }
        }
        Some((_, node)) => context.diagnostics.report(
            location(node),
            format!("`steps` must be a list of steps, not {}", describe(node)),
        ),
    }
    report_duplicate_ids(&steps, &spans, &mut context.diagnostics);

    let workflow = Workflow {
        name: name.unwrap_or_default(),
        description,
        trigger,
        concurrency,
        env,
        steps,
        sandbox,
        llm,
    };
    (workflow, spans)
}

/// Points at the second definition and names the first's line.
fn report_duplicate_ids(
    steps: &[super::model::Step],
    spans: &Spans,
    diagnostics: &mut Diagnostics,
) {
    let mut first_seen: HashMap<&str, Location> = HashMap::new();
    for (step, step_spans) in steps.iter().zip(&spans.steps) {
        // A step without a valid id already has its own diagnostic.
        if step.id.is_empty() {
            continue;
        }
        match first_seen.get(step.id.as_str()) {
            Some(first) => diagnostics.report(
                step_spans.id,
                format!(
                    "duplicate step id `{}`; first defined at line {}",
                    step.id, first.line
                ),
            ),
            None => {
                first_seen.insert(&step.id, step_spans.id);
            }
        }
    }
}

/// An `env:` mapping; `what` names it in messages (`` `env` `` or `` `env` of step `x` ``).
pub(crate) fn parse_env(
    node: &Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "{what} must be a mapping of variable names to values, not {}",
                describe(node)
            ),
        );
        return env;
    };
    for (key, value) in mapping.iter() {
        let name = key.as_str();
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            diagnostics.report(
                scalar_location(key),
                format!(
                    "invalid environment variable name `{name}` in {what}: use letters, digits and `_`, not starting with a digit"
                ),
            );
            continue;
        }
        match value {
            // A process environment is C strings: a NUL would fail the step at run time.
            Node::Scalar(scalar) if scalar.as_str().contains('\0') => diagnostics.report(
                location(value),
                format!(
                    "`{name}` in {what} contains a NUL character (`\\0`), which an environment variable cannot hold"
                ),
            ),
            Node::Scalar(scalar) if !is_null(scalar) => {
                env.insert(name.to_owned(), scalar.as_str().to_owned());
            }
            _ => diagnostics.report(
                location(value),
                format!(
                    "`{name}` in {what} must be a string, number or boolean, not {}; write '' for an empty value",
                    describe(value)
                ),
            ),
        }
    }
    env
}

pub(crate) fn parse_trigger(node: &Node, diagnostics: &mut Diagnostics) -> Option<Trigger> {
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "`trigger` must be a mapping with `schedule`, `commits` and `repositories`, not {}",
                describe(node)
            ),
        );
        return None;
    };
    check_keys(mapping, TRIGGER_KEYS, "in `trigger`", diagnostics);
    let schedule = entry(mapping, "schedule")
        .and_then(|(_, node)| non_empty_string(node, "`trigger.schedule`", diagnostics))
        .and_then(|scalar| match check_schedule(scalar.as_str()) {
            Ok(_) => Some(scalar.as_str().trim().to_owned()),
            Err(reason) => {
                diagnostics.report(
                    scalar_location(scalar),
                    format!("invalid cron schedule `{}`: {reason}", scalar.as_str()),
                );
                None
            }
        });
    let commits = match entry(mapping, "commits") {
        None => CommitSelection::default(),
        Some((_, node)) => {
            match string(node, "`trigger.commits`", diagnostics).map(|scalar| scalar.as_str()) {
                Some("each") => CommitSelection::Each,
                Some("latest") => CommitSelection::Latest,
                Some(other) => {
                    diagnostics.report(
                    location(node),
                    format!(
                        "invalid `commits` value `{other}` in `trigger`; expected one of: each, latest{}",
                        did_you_mean(other, ["each", "latest"])
                    ),
                );
                    CommitSelection::default()
                }
                None => CommitSelection::default(),
            }
        }
    };
    let mut repositories = Vec::new();
    match entry(mapping, "repositories") {
        None => {}
        Some((_, Node::Sequence(items))) => {
            for (index, item) in items.iter().enumerate() {
                if let Some(repository) = parse_repository(item, index, diagnostics) {
                    repositories.push(repository);
                }
            }
        }
        Some((_, node)) => diagnostics.report(
            location(node),
            format!(
                "`trigger.repositories` must be a list of repositories, not {}",
                describe(node)
            ),
        ),
    }
    Some(Trigger {
        schedule,
        repositories,
        commits,
    })
}

/// [`parse_schedule`], with a clearer message for the most common mistake (field count) than
/// the cron library gives.
fn check_schedule(text: &str) -> Result<(), String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with leading seconds, found {fields}"
        ));
    }
    let cron = parse_schedule(text).map_err(|reason| reason.trim_end_matches('.').to_owned())?;
    // A valid pattern can still match no date at all (`0 0 30 2 *`: February 30th); `serve`
    // would then never poll, silently. croner searches a bounded range of years.
    if cron
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(
            "it never fires: no date matches it (is a day of the month missing from \
                    every month it names?)"
                .to_owned(),
        );
    }
    Ok(())
}

fn parse_repository(
    node: &Node,
    index: usize,
    diagnostics: &mut Diagnostics,
) -> Option<Repository> {
    let what = format!("repository {} of `trigger.repositories`", index + 1);
    match node {
        Node::Scalar(_) => {
            let url = non_empty_string(node, &format!("the url of {what}"), diagnostics)?;
            Some(Repository {
                url: url.as_str().trim().to_owned(),
                branches: Vec::new(),
                webhook_secret_env: None,
            })
        }
        Node::Mapping(mapping) => {
            check_keys(mapping, REPOSITORY_KEYS, &format!("in {what}"), diagnostics);
            let url = match entry(mapping, "url") {
                Some((_, node)) => non_empty_string(node, &format!("`url` of {what}"), diagnostics),
                None => {
                    diagnostics.report(
                        location(node),
                        format!("{what} is missing required key `url`"),
                    );
                    None
                }
            };
            let branches = match entry(mapping, "branches") {
                Some((_, node)) => {
                    let list: Vec<String> =
                        string_or_list(node, &format!("`branches` of {what}"), diagnostics)?
                            .into_iter()
                            .map(|scalar| scalar.as_str().trim().to_owned())
                            .collect();
                    if let Err(error) = super::BranchFilter::new(&list) {
                        diagnostics
                            .report(location(node), format!("in `branches` of {what}: {error}"));
                    }
                    list
                }
                None => Vec::new(),
            };
            let webhook_secret_env = match entry(mapping, "webhook_secret_env") {
                Some((_, node)) => {
                    let what = format!("`webhook_secret_env` of {what}");
                    let name = non_empty_string(node, &what, diagnostics)?;
                    let name = name.as_str().trim();
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        diagnostics.report(
                            location(node),
                            format!("{what} must name an environment variable (letters, digits, _), not `{name}`"),
                        );
                        return None;
                    }
                    Some(name.to_owned())
                }
                None => None,
            };
            Some(Repository {
                url: url?.as_str().trim().to_owned(),
                branches,
                webhook_secret_env,
            })
        }
        Node::Sequence(_) => {
            diagnostics.report(
                location(node),
                format!("{what} must be a url or a mapping with `url` and `branches`, not a list"),
            );
            None
        }
    }
}
