//! What the notifier accepted and sent, so aggregation holds across the steps of a run (deploy
//! and monitor each notify) and across runs: an alert key seen within the window is a
//! duplicate wherever it was seen, and a run's message cap counts every step's messages.

use rusqlite::{OptionalExtension, params};

use super::error::Result;
use super::sqlite::{Store, now_ms};

impl Store {
    /// When `service`'s alert `key` was last accepted (ms since the epoch).
    pub fn last_alert(&self, service: &str, key: &str) -> Result<Option<i64>> {
        let conn = self.lock()?;
        Ok(conn
            .prepare_cached("SELECT MAX(at) FROM notifications WHERE service = ?1 AND kind = 'alert' AND key = ?2")?
            .query_row(params![service, key], |row| row.get::<_, Option<i64>>(0))
            .optional()?
            .flatten())
    }

    /// Messages run `run_id` has sent, from every step.
    pub fn messages_sent(&self, run_id: i64) -> Result<usize> {
        let conn = self.lock()?;
        let count: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM notifications WHERE run_id = ?1 AND kind = 'message'",
            )?
            .query_row([run_id], |row| row.get(0))?;
        Ok(count as usize)
    }

    /// Messages `service` sent since `since_ms`, from every run (the daily noise budget).
    pub fn messages_since(&self, service: &str, since_ms: i64) -> Result<usize> {
        let conn = self.lock()?;
        let count: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM notifications WHERE service = ?1 AND kind = 'message' AND at >= ?2",
            )?
            .query_row(params![service, since_ms], |row| row.get(0))?;
        Ok(count as usize)
    }

    /// Records an accepted alert (`kind` = `alert`) or a sent message (`message`).
    pub fn record_notification(
        &self,
        run_id: i64,
        service: &str,
        kind: &str,
        key: &str,
    ) -> Result<()> {
        self.write(|txn| {
            txn.sqlite()?
                .prepare_cached("INSERT INTO notifications (run_id, service, kind, key, at) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![run_id, service, kind, key, now_ms()])?;
            Ok(())
        })
    }
}
