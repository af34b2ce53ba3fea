//! The history risk models (`cairn risk calibrate`), one per repository, and the outcomes Cairn
//! itself saw — commits whose tests failed, deployments rolled back — that label commits
//! defect-inducing beside SZZ. The store keeps the model and its evaluation as JSON that
//! `risk_model` (de)serialises.

use std::collections::BTreeSet;

use serde_json::Value;

use super::error::{Error, Result};
use super::runs::WriteTxn;
use super::sql::Row;
use super::sqlite::{Store, now_ms};

#[derive(Debug, Clone)]
pub struct StoredRiskModel {
    pub repo: String,
    pub root_commit: String,
    pub head: String,
    pub model: Value,
    pub evaluation: Value,
    pub calibrated_at: i64,
}

const COLUMNS: &str = "repo, root_commit, head, model, evaluation, calibrated_at";

fn parse(what: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::BadValue {
        what,
        detail: e.to_string(),
    })
}

fn row(row: &Row) -> Result<StoredRiskModel> {
    Ok(StoredRiskModel {
        repo: row.get(0)?,
        root_commit: row.get(1)?,
        head: row.get(2)?,
        model: parse("risk_models.model", &row.get::<String>(3)?)?,
        evaluation: parse("risk_models.evaluation", &row.get::<String>(4)?)?,
        calibrated_at: row.get(5)?,
    })
}

impl Store {
    /// The model calibrated for the repository at `repo` (its canonical path), or else the
    /// newest one calibrated for a clone of it (same root commit).
    pub fn risk_model(&self, repo: &str, root_commit: &str) -> Result<Option<StoredRiskModel>> {
        self.read(|conn| {
            let by_path = conn.query_opt(
                &format!("SELECT {COLUMNS} FROM risk_models WHERE repo = ?1"),
                &[&repo],
            )?;
            let found = match by_path {
                Some(found) => Some(found),
                None => conn.query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM risk_models WHERE root_commit = ?1
                         ORDER BY calibrated_at DESC LIMIT 1"
                    ),
                    &[&root_commit],
                )?,
            };
            found.map(|found| row(&found)).transpose()
        })
    }

    /// Every calibrated model, by repository.
    pub fn risk_models(&self) -> Result<Vec<StoredRiskModel>> {
        self.read(|conn| {
            conn.query(
                &format!("SELECT {COLUMNS} FROM risk_models ORDER BY repo"),
                &[],
            )?
            .iter()
            .map(row)
            .collect()
        })
    }

    /// Commits Cairn saw go wrong: a test failed on them, or a deployment of theirs was rolled
    /// back. Ids only: the caller keeps those of the repository it calibrates.
    pub fn failed_outcome_commits(&self) -> Result<BTreeSet<String>> {
        self.read(|conn| {
            let mut found: BTreeSet<String> = conn
                .query(
                    "SELECT DISTINCT commit_id FROM test_results WHERE outcome = 'failed'",
                    &[],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect::<Result<_>>()?;
            // A deployment's record names its run by key (`run_id/step_id`); the run's context
            // names the commit.
            let mut runs = BTreeSet::new();
            for state in conn.query("SELECT state FROM deployments", &[])? {
                let state = parse("deployments.state", &state.get::<String>(0)?)?;
                let history = state.get("history").and_then(Value::as_array);
                for record in history.into_iter().flatten() {
                    let outcome = record.get("outcome").and_then(Value::as_str);
                    if !matches!(outcome, Some("rolled_back" | "recovered")) {
                        continue;
                    }
                    let key = record.get("key").and_then(Value::as_str).unwrap_or("");
                    if let Some(Ok(run)) = key.split('/').next().map(str::parse::<i64>) {
                        runs.insert(run);
                    }
                }
            }
            for run in runs {
                let context: Option<String> = conn
                    .query_opt("SELECT context FROM runs WHERE id = ?1", &[&run])?
                    .map(|row| row.get(0))
                    .transpose()?;
                let commit = context
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .and_then(|v| v.get("commit").and_then(Value::as_str).map(str::to_string));
                found.extend(commit);
            }
            found.retain(|id| !id.is_empty());
            Ok(found)
        })
    }
}

impl WriteTxn<'_> {
    /// Keeps `model` as the repository's risk model, replacing an earlier one.
    pub fn put_risk_model(
        &self,
        repo: &str,
        root_commit: &str,
        head: &str,
        model: &Value,
        evaluation: &Value,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO risk_models (repo, root_commit, head, model, evaluation, calibrated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (repo) DO UPDATE SET root_commit = excluded.root_commit,
                 head = excluded.head, model = excluded.model,
                 evaluation = excluded.evaluation, calibrated_at = excluded.calibrated_at",
            &[
                &repo,
                &root_commit,
                &head,
                &model.to_string(),
                &evaluation.to_string(),
                &now_ms(),
            ],
        )?;
        Ok(())
    }
}
