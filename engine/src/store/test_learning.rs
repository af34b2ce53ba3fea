//! What the test agent learns and proposes: the file→test map (which test files changed
//! together with which source files, and which tests failed after which files changed), the
//! commits already learned from (so a commit is counted once however many runs see it), and
//! the proposals (generated tests, fixes for failing tests) with the gate's verdict.

use std::collections::HashSet;

use serde::Serialize;

use super::error::Result;
use super::runs::WriteTxn;
use super::sql::Row;
use super::sqlite::{Store, now_ms};

/// One learned association from a source file to a test file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestLink {
    pub source_path: String,
    pub test_file: String,
    /// `co_change` or `failure`.
    pub kind: String,
    /// Commits that changed both, or runs where the test failed after the file changed.
    pub count: u32,
}

/// A generated test or a proposed fix, and what the validation gate made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProposalRecord {
    /// `test` (a generated test: `source_path`/`function` is what it tests, `test_path` where
    /// it goes) or `fix` (a patch: `source_path` lists the files it edits, `function` the
    /// failing tests it is for, `test_path` their files, `code` the patch).
    pub kind: String,
    pub run_id: i64,
    pub step_id: String,
    pub repo: String,
    pub commit_id: String,
    pub source_path: String,
    pub function: String,
    pub test_path: String,
    /// `accepted` or `rejected`.
    pub status: String,
    /// Tests: `accepted`, `invalid`, `compile_error`, `fails_on_new`, `flaky`,
    /// `passes_on_parent`. Fixes: `accepted`, `no_answer`, `not_a_patch`, `partial_patch`,
    /// `malformed_patch`, `outside_repo`, `edits_tests`, `unsupported_change`, `no_change`,
    /// `does_not_apply`, `build_error`, `still_fails`, `breaks_tests`, `timed_out`.
    pub reason: String,
    pub detail: String,
    pub code: String,
    pub tier: String,
    pub at: i64,
}

impl Store {
    /// Commits of `repo` whose co-changes are already counted.
    pub fn learned_commits(&self, repo: &str) -> Result<HashSet<String>> {
        self.read(|conn| {
            conn.query(
                "SELECT commit_id FROM test_learned_commits WHERE repo = ?1",
                &[&repo],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
        })
    }

    /// Every learned link from any of `sources`, strongest first.
    pub fn test_links(&self, repo: &str, sources: &[String]) -> Result<Vec<TestLink>> {
        self.read(|conn| {
            let mut links = Vec::new();
            for source in sources {
                let rows = conn.query(
                    "SELECT source_path, test_file, kind, count FROM test_links
                     WHERE repo = ?1 AND source_path = ?2 ORDER BY count DESC, test_file",
                    &[&repo, source],
                )?;
                for row in rows {
                    links.push(TestLink {
                        source_path: row.get(0)?,
                        test_file: row.get(1)?,
                        kind: row.get(2)?,
                        count: row.get(3)?,
                    });
                }
            }
            Ok(links)
        })
    }

    /// Recorded proposals, newest first; `repo` narrows to one repository.
    pub fn test_proposals(&self, repo: Option<&str>, limit: usize) -> Result<Vec<ProposalRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.query(
                "SELECT run_id, step_id, repo, commit_id, source_path, function, test_path, status,
                        reason, detail, code, tier, at, kind
                 FROM test_proposals WHERE (?1 IS NULL OR repo = ?1) ORDER BY id DESC LIMIT ?2",
                &[&repo, &limit],
            )?
            .iter()
            .map(proposal_from_row)
            .collect()
        })
    }

    /// How many proposals of `kind` a step of a run has recorded (by any of its attempts).
    pub fn proposal_count(&self, run_id: i64, step_id: &str, kind: &str) -> Result<usize> {
        self.read(|conn| {
            let count: i64 = conn
                .query_opt(
                    "SELECT COUNT(*) FROM test_proposals
                     WHERE run_id = ?1 AND step_id = ?2 AND kind = ?3",
                    &[&run_id, &step_id, &kind],
                )?
                .map_or(Ok(0), |row| row.get(0))?;
            Ok(usize::try_from(count).unwrap_or(0))
        })
    }
}

fn proposal_from_row(row: &Row) -> Result<ProposalRecord> {
    Ok(ProposalRecord {
        kind: row.get(13)?,
        run_id: row.get(0)?,
        step_id: row.get(1)?,
        repo: row.get(2)?,
        commit_id: row.get(3)?,
        source_path: row.get(4)?,
        function: row.get(5)?,
        test_path: row.get(6)?,
        status: row.get(7)?,
        reason: row.get(8)?,
        detail: row.get(9)?,
        code: row.get(10)?,
        tier: row.get(11)?,
        at: row.get(12)?,
    })
}

impl WriteTxn<'_> {
    /// Counts one commit's co-changes (`pairs` of source file, test file) once: a commit
    /// already learned from is left alone. Returns whether it was new.
    pub fn learn_commit(
        &self,
        repo: &str,
        commit: &str,
        pairs: &[(String, String)],
    ) -> Result<bool> {
        let inserted = self.conn.execute(
            "INSERT INTO test_learned_commits (repo, commit_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            &[&repo, &commit],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        for (source, test) in pairs {
            self.add_link(repo, source, test, "co_change", commit)?;
        }
        Ok(true)
    }

    /// A test in `test_file` failed (for real, not flaky) in a run where `source` changed.
    pub fn link_failure(
        &self,
        repo: &str,
        source: &str,
        test_file: &str,
        commit: &str,
    ) -> Result<()> {
        self.add_link(repo, source, test_file, "failure", commit)
    }

    fn add_link(
        &self,
        repo: &str,
        source: &str,
        test: &str,
        kind: &str,
        commit: &str,
    ) -> Result<()> {
        // `test_links.count`, qualified: in PostgreSQL's upsert a bare column name is ambiguous
        // between the stored row and `excluded`.
        self.conn.execute(
            "INSERT INTO test_links
                 (repo, source_path, test_file, kind, count, last_commit, updated_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)
             ON CONFLICT (repo, source_path, test_file, kind)
             DO UPDATE SET count = test_links.count + 1, last_commit = excluded.last_commit,
                 updated_at = excluded.updated_at",
            &[&repo, &source, &test, &kind, &commit, &now_ms()],
        )?;
        Ok(())
    }

    /// A re-run attempt of a step judges its proposals of `kind` again; the verdicts of the
    /// attempt it replaces go, so each proposal is listed once.
    pub fn forget_proposals(&self, run_id: i64, step_id: &str, kind: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM test_proposals WHERE run_id = ?1 AND step_id = ?2 AND kind = ?3",
            &[&run_id, &step_id, &kind],
        )?;
        Ok(())
    }

    pub fn record_proposal(&self, record: &ProposalRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO test_proposals (run_id, step_id, repo, commit_id, source_path, function,
                                         test_path, status, reason, detail, code, tier, at, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            &[
                &record.run_id,
                &record.step_id,
                &record.repo,
                &record.commit_id,
                &record.source_path,
                &record.function,
                &record.test_path,
                &record.status,
                &record.reason,
                &record.detail,
                &record.code,
                &record.tier,
                &record.at,
                &record.kind,
            ],
        )?;
        Ok(())
    }
}
