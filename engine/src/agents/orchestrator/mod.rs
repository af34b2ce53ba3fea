//! `agent: orchestrator`: reads what the commit changed, scores its risk with explainable
//! rules, and publishes `risk`, `change` and `route` for the rest of the pipeline's `when:`.
//!
//! The local model's summary and the remote tier's `assess_risk` join here once the LLM router
//! exists; they may raise the level, never lower it below this rule floor.

mod classify;
mod consult;
mod diff;
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
    let commit = crate::exec::git(
        repo,
        &["rev-parse", "--verify", &format!("{commit}^{{commit}}")],
    )
    .map_err(|e| format!("no commit `{commit}` in {}: {e}", repo.display()))?
    .trim()
    .to_string();
    let files = changed_files(repo, &commit)?;
    let (per_file, change) = classify::summarize(&files);
    let risk = assess(&files, &per_file, &change);
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
    Ok(Analysis {
        commit,
        files,
        change,
        risk,
        summary,
        decided_by: "rules",
        route,
        subject,
        models: None,
    })
}

/// The commit's patch against its first parent, renames detected.
pub fn patch(repo: &Path, commit: &str) -> Result<String, String> {
    crate::exec::git(
        repo,
        &[
            "diff-tree",
            "-p",
            "-r",
            "--root",
            "-M",
            "--no-commit-id",
            "-m",
            "--first-parent",
            commit,
        ],
    )
}

/// The rules' analysis, then the models' contribution when a router is given.
pub async fn analyze_with_models(
    repo: &Path,
    commit: &str,
    router: Option<&Router>,
    scope: Option<&CallScope>,
) -> Result<Analysis, String> {
    let (repo_owned, commit_owned) = (repo.to_path_buf(), commit.to_string());
    let (mut analysis, patch_text) = tokio::task::spawn_blocking(move || {
        let analysis = analyze(&repo_owned, &commit_owned)?;
        let patch_text = patch(&repo_owned, &analysis.commit)?;
        Ok::<_, String>((analysis, patch_text))
    })
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

    fn run(&self, context: AgentContext) -> AgentFuture {
        let llm = self.llm.clone();
        Box::pin(async move {
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
            let scope = CallScope::new(context.run_id, context.step_id.clone())
                .with_deadline(context.deadline);
            let analysis = analyze_with_models(&workspace, &commit, llm.as_deref(), Some(&scope))
                .await
                .map_err(AgentError::new)?;
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
            }))
        })
    }
}
