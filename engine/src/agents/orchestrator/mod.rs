//! `agent: orchestrator`: reads what the commit changed, scores its risk with explainable
//! rules, and publishes `risk`, `change` and `route` for the rest of the pipeline's `when:`.
//!
//! The local model's summary and the remote tier's `assess_risk` join here once the LLM router
//! exists; they may raise the level, never lower it below this rule floor.

mod classify;
mod consult;
mod detect;
mod diff;
mod faithful;
pub mod history;
mod lines;
mod machine;
mod patterns;
mod refine;
mod risk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

pub use classify::{Category, ChangeSummary, categorize};
pub use consult::{ModelView, consult, split_patch};
pub use diff::{ChangedFile, changed_files};
pub use risk::{Assessment, Level, Reason, assess};

use super::registry::{Agent, AgentContext, AgentError, AgentFuture};
use crate::llm::{CallScope, Router};

/// The full analysis of one commit, as `cairn analyze` prints it and the agent outputs it.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub commit: String,
    pub files: Vec<AnalyzedFile>,
    pub change: ChangeSummary,
    pub risk: Assessment,
    pub summary: String,
    /// Which tier decided the level: `rules` unless a model raised it.
    pub decided_by: &'static str,
    pub route: Route,
    /// The commit's subject line (shown to models as data; the rules never read it).
    pub subject: String,
    /// What the language models contributed, when they were consulted.
    pub models: Option<ModelView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalyzedFile {
    #[serde(flatten)]
    pub file: ChangedFile,
    pub category: Category,
    pub language: Option<&'static str>,
}

/// What the rest of the pipeline does for this level (the defaults of DESIGN.md).
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub tests: &'static str,
    pub build: &'static str,
    pub deploy: &'static str,
    pub monitor_minutes: u32,
}

impl Route {
    pub fn for_level(level: Level) -> Route {
        match level {
            Level::Low => Route {
                tests: "skip",
                build: "fast",
                deploy: "rolling",
                monitor_minutes: 10,
            },
            Level::Medium => Route {
                tests: "selected",
                build: "standard",
                deploy: "rolling",
                monitor_minutes: 10,
            },
            Level::High => Route {
                tests: "full",
                build: "standard",
                deploy: "canary",
                monitor_minutes: 30,
            },
        }
    }
}

/// Analyzes `commit` (any revision git understands) in the repository at `repo`.
pub fn analyze(repo: &Path, commit: &str) -> Result<Analysis, String> {
    analyze_with_patch(repo, commit).map(|(analysis, _)| analysis)
}

/// The rules' analysis and the patch it read (models are shown parts of the same patch).
fn analyze_with_patch(repo: &Path, commit: &str) -> Result<(Analysis, String), String> {
    let commit = crate::exec::git(
        repo,
        &["rev-parse", "--verify", &format!("{commit}^{{commit}}")],
    )
    .map_err(|e| format!("no commit `{commit}` in {}: {e}", repo.display()))?
    .trim()
    .to_string();
    let files = changed_files(repo, &commit)?;
    let patch_text = patch(repo, &commit)?;
    let mut lines = lines::parse(&patch_text);
    read_whole_files(repo, &commit, &files, &mut lines)?;
    let (per_file, change) = classify::summarize(&files, &lines);
    let content = detect::detect(&files, &per_file, &lines);
    let risk = assess(&files, &per_file, &change, content);
    let summary = describe(&files, &per_file, &change);
    let route = Route::for_level(risk.level);
    let files = files
        .into_iter()
        .zip(per_file)
        .map(|(file, category)| AnalyzedFile {
            language: classify::language(&file.path),
            file,
            category,
        })
        .collect();
    let subject = crate::exec::git(repo, &["log", "-1", "--format=%s", &commit])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let analysis = Analysis {
        commit,
        files,
        change,
        risk,
        summary,
        decided_by: "rules",
        route,
        subject,
        models: None,
    };
    Ok((analysis, patch_text))
}

/// The rule floor from paths and line counts alone, without reading changed lines: what the
/// history model (`history`) takes as a feature for every past commit, where reading each
/// one's patch and whole files would cost too much. Content detectors only ever raise the full
/// analysis above this.
pub fn floor_from_paths(files: &[ChangedFile]) -> Assessment {
    let (per_file, change) = classify::summarize(files, &[]);
    assess(files, &per_file, &change, Vec::new())
}

/// Files whose comments only the whole text can place (docstrings, block comments) at most;
/// past it the hunk-level marks stand, which can only make lines count as code.
const MAX_WHOLE_FILES: usize = 200;

/// Re-marks the changed lines of hand-written files with block comments or docstrings from
/// their whole old and new texts (`lines::relex`).
fn read_whole_files(
    repo: &Path,
    commit: &str,
    files: &[ChangedFile],
    lines: &mut [lines::FileLines],
) -> Result<(), String> {
    let range = diff::diff_range(repo, commit)?;
    let parent = (range[0] != "--root").then(|| range[0].clone());
    let mut picked = Vec::new();
    let mut specs = Vec::new();
    for (index, file_lines) in lines.iter().enumerate() {
        if picked.len() >= MAX_WHOLE_FILES {
            break;
        }
        let Some(file) = files.iter().find(|f| f.path == file_lines.path) else {
            continue;
        };
        if file.binary
            || !lines::needs_whole_file(&file.path)
            || machine::machine_written(&file.path, Some(file_lines)).is_some()
        {
            continue;
        }
        let old_path = file.old_path.as_deref().unwrap_or(&file.path);
        specs.push(match (&parent, file.status) {
            (Some(parent), status) if status != "added" => format!("{parent}:{old_path}"),
            _ => String::new(),
        });
        specs.push(if file.status == "deleted" {
            String::new()
        } else {
            format!("{commit}:{}", file.path)
        });
        picked.push(index);
    }
    if picked.is_empty() {
        return Ok(());
    }
    let texts = diff::blobs(repo, &specs)?;
    for (slot, index) in picked.into_iter().enumerate() {
        let old = texts.get(2 * slot).and_then(Option::as_deref);
        let new = texts.get(2 * slot + 1).and_then(Option::as_deref);
        lines::relex(&mut lines[index], old, new);
    }
    Ok(())
}

/// The commit's patch against its first parent, renames detected.
pub fn patch(repo: &Path, commit: &str) -> Result<String, String> {
    let range = diff::diff_range(repo, commit)?;
    let mut args = vec!["diff-tree", "-p", "-r", "-M", "--no-commit-id"];
    args.extend(range.iter().map(String::as_str));
    crate::exec::git(repo, &args)
}

/// The rules' analysis, then the models' contribution when a router is given.
pub async fn analyze_with_models(
    repo: &Path,
    commit: &str,
    router: Option<&Router>,
    scope: Option<&CallScope>,
) -> Result<Analysis, String> {
    let (repo_owned, commit_owned) = (repo.to_path_buf(), commit.to_string());
    let (mut analysis, patch_text) =
        tokio::task::spawn_blocking(move || analyze_with_patch(&repo_owned, &commit_owned))
            .await
            .map_err(|e| format!("analysis task failed: {e}"))??;
    if let Some(router) = router {
        let subject = analysis.subject.clone();
        consult(router, scope, &mut analysis, &patch_text, &subject).await;
    }
    Ok(analysis)
}

/// A one-line factual description; the local model writes a prose one when available.
fn describe(files: &[ChangedFile], per_file: &[Category], change: &ChangeSummary) -> String {
    let kinds: Vec<&str> = change.categories.iter().map(|c| c.as_str()).collect();
    let mut biggest: Vec<(&ChangedFile, &Category)> = files.iter().zip(per_file).collect();
    biggest.sort_by_key(|(f, _)| std::cmp::Reverse(f.additions + f.deletions));
    let top: Vec<String> = biggest
        .iter()
        .take(3)
        .map(|(f, _)| f.path.clone())
        .collect();
    format!(
        "{} file(s) changed (+{} -{}), kinds: {}; largest: {}",
        change.files,
        change.additions,
        change.deletions,
        if kinds.is_empty() {
            "none".into()
        } else {
            kinds.join(", ")
        },
        if top.is_empty() {
            "none".into()
        } else {
            top.join(", ")
        },
    )
}

/// The step's `with: { model: on | off }` (default on); anything else is an error naming it.
fn models_wanted(with: &Value) -> Result<bool, String> {
    let map = super::with::mapping(with, &["model"]).map_err(|e| format!("with: {e}"))?;
    match map.get("model") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(true),
        Some(Value::Bool(false)) => Ok(false),
        Some(Value::String(s)) if matches!(s.as_str(), "on" | "true" | "yes") => Ok(true),
        Some(Value::String(s)) if matches!(s.as_str(), "off" | "false" | "no") => Ok(false),
        Some(other) => Err(format!("with: model must be on or off, found {other}")),
    }
}

pub struct Orchestrator {
    llm: Option<Arc<Router>>,
}

impl Orchestrator {
    pub fn new(llm: Option<Arc<Router>>) -> Self {
        Self { llm }
    }
}

impl Agent for Orchestrator {
    fn name(&self) -> &'static str {
        "orchestrator"
    }

    fn check_with(&self, with: &Value) -> Result<(), String> {
        models_wanted(with).map(|_| ())
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        let llm = self.llm.clone();
        Box::pin(async move {
            // `with: { model: off }` keeps this step to the rules: no local model, no remote.
            let llm = if models_wanted(&context.with).map_err(AgentError::new)? {
                llm
            } else {
                context.logs.line(
                    "engine",
                    "models off for this step (with: model: off): rules only",
                );
                None
            };
            let commit = context
                .context
                .get("commit")
                .and_then(Value::as_str)
                .map(str::to_string);
            let Some(commit) = commit else {
                context.logs.line(
                    "engine",
                    "no commit in the run context: nothing to analyze, risk is high by default",
                );
                return Ok(json!({
                    "risk": "high",
                    "score": 100,
                    "reasons": ["the run has no commit to analyze (start it with --repo and --commit)"],
                    "change": {},
                    "decided_by": "rules",
                }));
            };
            let workspace: PathBuf = context.workspace.clone();
            let scope = super::registry::call_scope(&context);
            let mut analysis =
                analyze_with_models(&workspace, &commit, llm.as_deref(), Some(&scope))
                    .await
                    .map_err(AgentError::new)?;
            // The repository's history model, when one was calibrated for it (`cairn risk
            // calibrate`): it may raise the level, never lower it; without one, rules decide.
            let (store, repo, id) = (context.store.clone(), workspace.clone(), commit.clone());
            let learned =
                tokio::task::spawn_blocking(move || history::from_store(&store, &repo, &id))
                    .await
                    .map_err(|e| AgentError::new(format!("history model task failed: {e}")))?;
            let learned = match learned {
                Ok(learned) => learned,
                Err(error) => {
                    context
                        .logs
                        .line("engine", format!("history model not applied: {error}"));
                    None
                }
            };
            if let Some(explanation) = &learned {
                history::raise(&mut analysis, explanation);
                context.logs.line(
                    "stdout",
                    format!(
                        "history model: {:.0}% chance of a defect (high at {:.0}%)",
                        explanation.probability * 100.0,
                        explanation.high_threshold * 100.0
                    ),
                );
            }
            for call in analysis.models.iter().flat_map(|m| m.calls.iter()) {
                context.logs.line("stdout", format!("model call {call}"));
            }
            context.logs.line(
                "stdout",
                format!(
                    "risk {} (score {}) by {}: {}",
                    analysis.risk.level.as_str(),
                    analysis.risk.score,
                    analysis.decided_by,
                    analysis.summary
                ),
            );
            for reason in &analysis.risk.reasons {
                context.logs.line(
                    "stdout",
                    format!("  {:>3} {}: {}", reason.score, reason.rule, reason.detail),
                );
            }
            Ok(json!({
                "risk": analysis.risk.level.as_str(),
                "score": analysis.risk.score,
                "reasons": analysis.risk.reasons.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
                "summary": analysis.summary,
                "decided_by": analysis.decided_by,
                "change": analysis.change,
                "route": analysis.route,
                "models": analysis.models,
                "history": learned,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_can_turn_the_models_off_and_a_wrong_value_is_an_error() {
        assert_eq!(models_wanted(&json!({})), Ok(true));
        assert_eq!(models_wanted(&Value::Null), Ok(true));
        assert_eq!(models_wanted(&json!({ "model": "off" })), Ok(false));
        assert_eq!(models_wanted(&json!({ "model": false })), Ok(false));
        assert_eq!(models_wanted(&json!({ "model": "on" })), Ok(true));
        let error = models_wanted(&json!({ "model": "sometimes" })).expect_err("refused");
        assert!(error.contains("model must be on or off"), "{error}");
        let error = models_wanted(&json!({ "modle": "off" })).expect_err("refused");
        assert!(error.contains("unknown key `modle`"), "{error}");
    }
}
