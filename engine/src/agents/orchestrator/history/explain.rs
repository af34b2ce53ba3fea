//! The history model's word on one commit, shown by `cairn analyze` beside the rule floor:
//! its probability, the features that pushed it most, and whether it raises the level. It can
//! only raise: a rule floor is never lowered by a model (`ARCHITECTURE.md`, "Risk and routing").

use std::path::Path;

use serde::Serialize;

use super::error::{Error, Result};
use super::features;
use super::log;
use super::model::{Contribution, Model};
use crate::agents::orchestrator::{Analysis, Level, Reason, Route};
use crate::store::Store;

/// Features shown with a prediction.
const SHOWN: usize = 4;
/// The score a raise by the model carries among the reasons (the bottom of `high`).
const RAISE_SCORE: u32 = 70;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub probability: f64,
    pub high_threshold: f64,
    pub base_rate: f64,
    /// The model's probability reaches its threshold for `high`.
    pub says_high: bool,
    pub top: Vec<Contribution>,
}

/// The model's view of `commit`; `None` for a merge commit, which the model never saw.
pub fn explain(repo: &Path, commit: &str, model: &Model) -> Result<Option<Explanation>> {
    model.check()?;
    let id = log::resolve(repo, commit)?;
    let commits = log::read(repo, &id)?;
    if commits.last().map(|c| c.id.as_str()) != Some(id.as_str()) {
        return Ok(None);
    }
    let rows = features::rows(&commits);
    let Some(row) = rows.last() else {
        return Ok(None);
    };
    let probability = model.probability(row);
    Ok(Some(Explanation {
        probability,
        high_threshold: model.high_threshold,
        base_rate: model.base_rate,
        says_high: probability >= model.high_threshold,
        top: model.top_contributions(row, SHOWN),
    }))
}

/// The repository's first commit: the same in every clone, so a run's workspace finds the
/// model calibrated on the developer's checkout. The smallest id when there are several roots.
pub fn root_commit(repo: &Path) -> Result<String> {
    let git_error = |message: String| Error::Git {
        repo: repo.display().to_string(),
        message,
    };
    let roots =
        crate::exec::git(repo, &["rev-list", "--max-parents=0", "HEAD"]).map_err(git_error)?;
    roots
        .split_whitespace()
        .min()
        .map(str::to_string)
        .ok_or_else(|| git_error("it has no commits".into()))
}

/// The key a repository's model is stored under: its canonical path.
pub fn canonical(repo: &Path) -> String {
    std::fs::canonicalize(repo)
        .unwrap_or_else(|_| repo.to_path_buf())
        .display()
        .to_string()
}

/// The stored model's view of `commit` when one was calibrated for this repository or a clone
/// of it (same root commit); `None` without a model, or for a merge.
pub fn from_store(store: &Store, repo: &Path, commit: &str) -> Result<Option<Explanation>> {
    let root = root_commit(repo)?;
    let Some(stored) = store.risk_model(&canonical(repo), &root)? else {
        return Ok(None);
    };
    let model: Model =
        serde_json::from_value(stored.model).map_err(|e| Error::BadModel(e.to_string()))?;
    explain(repo, commit, &model)
}

/// Raises `analysis` to `high` when the model says so, with a reason naming the model; never
/// lowers it.
pub fn raise(analysis: &mut Analysis, explanation: &Explanation) {
    if !explanation.says_high || analysis.risk.level == Level::High {
        return;
    }
    analysis.risk.reasons.insert(
        0,
        Reason {
            rule: "history_model",
            score: RAISE_SCORE,
            detail: format!(
                "this repository's history gives a {:.0}% chance of introducing a defect (its \
                 threshold for high is {:.0}%)",
                explanation.probability * 100.0,
                explanation.high_threshold * 100.0
            ),
        },
    );
    analysis.risk.level = Level::High;
    analysis.risk.score = analysis.risk.score.max(RAISE_SCORE);
    analysis.risk.certain = false;
    analysis.decided_by = "history model";
    analysis.route = Route::for_level(Level::High);
}
