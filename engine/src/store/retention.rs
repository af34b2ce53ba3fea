//! Retention: deleting what is old enough, so a long-lived `$CAIRN_HOME` stays bounded.
//!
//! Finished runs older than the retention period go with their steps, attempts, events, logs,
//! language-model call records, test results and artifact rows (the newest `keep_runs` stay
//! whatever their age; blobs no row names any more go in `retention/gc.rs`); logs alone go
//! sooner; expired cache entries and old budget and notification rows are dropped. The event log stays append-only for every run that exists (schema trigger):
//! a run's events can only be deleted once its row is gone, in the same transaction. Work is
//! done in small transactions so a `gc` never holds the write lock for long.

use std::time::Duration;

use super::error::Result;
use super::sqlite::Store;

/// Runs deleted per transaction: each is a handful of indexed deletes, so a batch takes
/// milliseconds and the writers of running steps wait no longer than that.
const RUNS_PER_TRANSACTION: usize = 50;

/// What to keep; see `retention::Retention` for the configuration it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Finished runs older than this are deleted entirely.
    pub runs: Duration,
    /// Step logs of finished runs older than this are deleted (the run's record stays).
    pub logs: Duration,
    /// The newest this-many finished runs are kept whatever their age.
    pub keep_runs: usize,
}

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Ids of the runs deleted (their directories can go too).
    pub runs: Vec<i64>,
    pub log_lines: u64,
    pub cache_entries: u64,
    pub other_rows: u64,
}

impl Store {
    /// Deletes what `policy` no longer keeps, as of `now` (milliseconds since the epoch).
    pub fn prune(&self, policy: &RetentionPolicy, now: i64) -> Result<Pruned> {
        let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let runs_before = now.saturating_sub(millis(policy.runs));
        let logs_before = now.saturating_sub(millis(policy.logs));
        let keep = i64::try_from(policy.keep_runs).unwrap_or(i64::MAX);
        let mut pruned = Pruned::default();

        let old_runs = self.finished_runs_before(runs_before, keep)?;
        for batch in old_runs.chunks(RUNS_PER_TRANSACTION) {
            let (logs, other) = self.write(|txn| {
                let mut logs = 0u64;
                let mut other = 0u64;
                for &run_id in batch {
                    logs += txn
                        .conn
                        .execute("DELETE FROM step_logs WHERE run_id = ?1", &[&run_id])?;
                    for table in [
                        "steps",
                        "attempts",
                        "llm_calls",
                        "test_results",
                        "notifications",
                        "artifacts",
                    ] {
                        other += txn.conn.execute(
                            &format!("DELETE FROM {table} WHERE run_id = ?1"),
                            &[&run_id],
                        )?;
                    }
                    txn.conn
                        .execute("DELETE FROM runs WHERE id = ?1", &[&run_id])?;
                    // Allowed by the trigger now that the run row is gone.
                    other += txn
                        .conn
                        .execute("DELETE FROM events WHERE run_id = ?1", &[&run_id])?;
                }
                Ok((logs, other))
            })?;
            pruned.log_lines += logs;
            pruned.other_rows += other;
            pruned.runs.extend_from_slice(batch);
        }

        for batch in self
            .finished_runs_before(logs_before, keep)?
            .chunks(RUNS_PER_TRANSACTION)
        {
            pruned.log_lines += self.write(|txn| {
                let mut deleted = 0u64;
                for &run_id in batch {
                    deleted += txn
                        .conn
                        .execute("DELETE FROM step_logs WHERE run_id = ?1", &[&run_id])?;
                }
                Ok(deleted)
            })?;
        }

        pruned.cache_entries = self.write(|txn| {
            txn.conn
                .execute("DELETE FROM llm_cache WHERE expires_at < ?1", &[&now])
        })?;
        // Budget rows only matter for the current day and month: two months is plenty.
        let budget_before = now.saturating_sub(62 * 24 * 3600 * 1000);
        pruned.other_rows += self.write(|txn| {
            let budget = txn
                .conn
                .execute("DELETE FROM llm_budget WHERE at < ?1", &[&budget_before])?;
            let notifications = txn
                .conn
                .execute("DELETE FROM notifications WHERE at < ?1", &[&runs_before])?;
            Ok(budget + notifications)
        })?;
        Ok(pruned)
    }

    /// Finished runs that ended before `before`, except the newest `keep` finished runs.
    fn finished_runs_before(&self, before: i64, keep: i64) -> Result<Vec<i64>> {
        self.read(|conn| {
            conn.query(
                "SELECT id FROM runs
                 WHERE state != 'running' AND finished_at IS NOT NULL AND finished_at < ?1
                   AND id NOT IN (SELECT id FROM runs WHERE state != 'running'
                                  ORDER BY id DESC LIMIT ?2)
                 ORDER BY id",
                &[&before, &keep],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
        })
    }

    /// Ids of every run the store knows, for finding run directories left without a run.
    pub fn run_ids(&self) -> Result<std::collections::BTreeSet<i64>> {
        self.read(|conn| {
            conn.query("SELECT id FROM runs", &[])?
                .iter()
                .map(|row| row.get(0))
                .collect()
        })
    }
}
