//! The history model's word on one commit, shown by `cairn analyze` beside the rule floor:
//! its probability, the features that pushed it most, and whether it raises the level. It can
//! only raise: a rule floor is never lowered by a model (`ARCHITECTURE.md`, "Risk and routing").

use std::path::Path;

use serde::Serialize;

use super::error::Result;
use super::features;
use super::history;
use super::model::{Contribution, Model};
use crate::agents::orchestrator::{Analysis, Level, Reason, Route};

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
    let id = history::resolve(repo, commit)?;
    let commits = history::read(repo, &id)?;
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
