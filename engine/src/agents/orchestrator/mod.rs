//! `agent: orchestrator`: reads what the commit changed, scores its risk with explainable
//! rules, and publishes `risk`, `change` and `route` for the rest of the pipeline's `when:`.
//!
//! The local model's summary and the remote tier's `assess_risk` join here once the LLM router
//! exists; they may raise the level, never lower it below this rule floor.

mod classify;
mod diff;
mod risk;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

pub use classify::{Category, ChangeSummary, categorize};
pub use diff::{ChangedFile, changed_files};
pub use risk::{Assessment, Level, Reason, assess};

use super::registry::{Agent, AgentContext, AgentError, AgentFuture};

/// The full analysis of one commit, as `cairn analyze` prints it and the agent outputs it.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub commit: String,
    pub files: Vec<AnalyzedFile>,
    pub change: ChangeSummary,
    pub risk: Assessment,
    pub summary: String,
    /// Which tier decided the level: `rules` until a model is consulted.
    pub decided_by: &'static str,
    pub route: Route,
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
            Level::Low => Route { tests: "skip", build: "fast", deploy: "rolling", monitor_minutes: 10 },
            Level::Medium => Route { tests: "selected", build: "standard", deploy: "rolling", monitor_minutes: 10 },
            Level::High => Route { tests: "full", build: "standard", deploy: "canary", monitor_minutes: 30 },
        }
    }
}

/// Analyzes `commit` (any revision git understands) in the repository at `repo`.
pub fn analyze(repo: &Path, commit: &str) -> Result<Analysis, String> {
    let commit = crate::exec::git(repo, &["rev-parse", "--verify", &format!("{commit}^{{commit}}")])
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
    Ok(Analysis { commit, files, change, risk, summary, decided_by: "rules", route })
}

/// A one-line factual description; the local model writes a prose one when available.
fn describe(files: &[ChangedFile], per_file: &[Category], change: &ChangeSummary) -> String {
    let kinds: Vec<&str> = change.categories.iter().map(|c| c.as_str()).collect();
    let mut biggest: Vec<(&ChangedFile, &Category)> = files.iter().zip(per_file).collect();
    biggest.sort_by_key(|(f, _)| std::cmp::Reverse(f.additions + f.deletions));
    let top: Vec<String> = biggest.iter().take(3).map(|(f, _)| f.path.clone()).collect();
    format!(
        "{} file(s) changed (+{} -{}), kinds: {}; largest: {}",
        change.files,
        change.additions,
        change.deletions,
        if kinds.is_empty() { "none".into() } else { kinds.join(", ") },
        if top.is_empty() { "none".into() } else { top.join(", ") },
    )
}

pub struct Orchestrator;

impl Agent for Orchestrator {
    fn name(&self) -> &'static str {
        "orchestrator"
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        Box::pin(async move {
            let commit = context.context.get("commit").and_then(Value::as_str).map(str::to_string);
            let Some(commit) = commit else {
                context.logs.line("engine", "no commit in the run context: nothing to analyze, risk is high by default");
                return Ok(json!({
                    "risk": "high",
                    "score": 100,
                    "reasons": ["the run has no commit to analyze (start it with --repo and --commit)"],
                    "change": {},
                    "decided_by": "rules",
                }));
            };
            let workspace: PathBuf = context.workspace.clone();
            let analysis = tokio::task::spawn_blocking(move || analyze(&workspace, &commit))
                .await
                .map_err(|e| AgentError::new(format!("analysis task failed: {e}")))?
                .map_err(AgentError::new)?;
            context.logs.line(
                "stdout",
                format!("risk {} (score {}) by {}: {}", analysis.risk.level.as_str(), analysis.risk.score, analysis.decided_by, analysis.summary),
            );
            for reason in &analysis.risk.reasons {
                context.logs.line("stdout", format!("  {:>3} {}: {}", reason.score, reason.rule, reason.detail));
            }
            Ok(json!({
                "risk": analysis.risk.level.as_str(),
                "score": analysis.risk.score,
                "reasons": analysis.risk.reasons.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
                "summary": analysis.summary,
                "decided_by": analysis.decided_by,
                "change": analysis.change,
                "route": analysis.route,
            }))
        })
    }
}
