//! The test agent's memory: per-test outcomes of every run, and the quarantine of flaky tests.

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::Result;
use super::runs::WriteTxn;
use super::sqlite::{Store, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedTest {
    pub repo: String,
    pub test_id: String,
    pub since: i64,
    pub reason: String,
    pub passes_in_row: u32,
}

impl Store {
    /// The last `limit` outcomes of a test in a repository, oldest first.
    pub fn test_history(&self, repo: &str, test_id: &str, limit: usize) -> Result<Vec<String>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut outcomes: Vec<String> = self.read(|conn| {
            conn.query(
                "SELECT outcome FROM test_results
                 WHERE repo = ?1 AND test_id = ?2 AND outcome != 'ignored'
                 ORDER BY id DESC LIMIT ?3",
                &[&repo, &test_id, &limit],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
        })?;
        outcomes.reverse();
        Ok(outcomes)
    }

    /// Tests of `repo` that have ever failed or flaked (the candidates for `cairn tests flaky`).
    pub fn unsteady_tests(&self, repo: Option<&str>) -> Result<Vec<(String, String)>> {
        self.read(|conn| {
            conn.query(
                "SELECT DISTINCT repo, test_id FROM test_results
                 WHERE outcome IN ('failed', 'flaky') AND (?1 IS NULL OR repo = ?1)
                 ORDER BY repo, test_id",
                &[&repo],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
        })
    }

    pub fn quarantined(&self, repo: &str) -> Result<BTreeMap<String, QuarantinedTest>> {
        self.read(|conn| {
            conn.query(
                "SELECT repo, test_id, since, reason, passes_in_row FROM test_quarantine
                 WHERE repo = ?1",
                &[&repo],
            )?
            .iter()
            .map(|row| {
                let test = QuarantinedTest {
                    repo: row.get(0)?,
                    test_id: row.get(1)?,
                    since: row.get(2)?,
                    reason: row.get(3)?,
                    passes_in_row: row.get(4)?,
                };
                Ok((test.test_id.clone(), test))
            })
            .collect()
        })
    }
}

impl WriteTxn<'_> {
    #[allow(clippy::too_many_arguments)]
    pub fn record_test_result(
        &self,
        run_id: i64,
        step_id: &str,
        repo: &str,
        commit: &str,
        test_id: &str,
        outcome: &str,
        duration_ms: Option<u64>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO test_results
                 (run_id, step_id, repo, commit_id, test_id, outcome, duration_ms, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                &run_id,
                &step_id,
                &repo,
                &commit,
                &test_id,
                &outcome,
                &duration_ms,
                &now_ms(),
            ],
        )?;
        Ok(())
    }

    pub fn quarantine(&self, repo: &str, test_id: &str, reason: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO test_quarantine (repo, test_id, since, reason) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (repo, test_id) DO UPDATE SET reason = excluded.reason, passes_in_row = 0",
            &[&repo, &test_id, &now_ms(), &reason],
        )?;
        Ok(())
    }

    pub fn set_quarantine_passes(
        &self,
        repo: &str,
        test_id: &str,
        passes_in_row: u32,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE test_quarantine SET passes_in_row = ?3 WHERE repo = ?1 AND test_id = ?2",
            &[&repo, &test_id, &passes_in_row],
        )?;
        Ok(())
    }

    pub fn release_quarantine(&self, repo: &str, test_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM test_quarantine WHERE repo = ?1 AND test_id = ?2",
            &[&repo, &test_id],
        )?;
        Ok(())
    }
}
