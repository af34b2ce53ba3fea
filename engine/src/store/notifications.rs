//! What the notifier accepted and sent, so aggregation holds across the steps of a run (deploy
//! and monitor each notify) and across runs: an alert key seen within the window is a
//! duplicate wherever it was seen, and a run's message cap counts every step's messages.

use super::error::Result;
use super::sql::{Conn, ToValue};
use super::sqlite::{Store, now_ms};

impl Store {
    /// When `service`'s alert `key` was last accepted (ms since the epoch).
    pub fn last_alert(&self, service: &str, key: &str) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .query_opt(
                    "SELECT MAX(at) FROM notifications
                     WHERE service = ?1 AND kind = 'alert' AND key = ?2",
                    &[&service, &key],
                )?
                .map(|row| row.get::<Option<i64>>(0))
                .transpose()?
                .flatten())
        })
    }

    /// Messages run `run_id` has sent, from every step.
    pub fn messages_sent(&self, run_id: i64) -> Result<usize> {
        self.read(|conn| {
            count(
                conn,
                "SELECT COUNT(*) FROM notifications WHERE run_id = ?1 AND kind = 'message'",
                &[&run_id],
            )
        })
    }

    /// Messages `service` sent since `since_ms`, from every run (the daily noise budget).
    pub fn messages_since(&self, service: &str, since_ms: i64) -> Result<usize> {
        self.read(|conn| {
            count(
                conn,
                "SELECT COUNT(*) FROM notifications
                 WHERE service = ?1 AND kind = 'message' AND at >= ?2",
                &[&service, &since_ms],
            )
        })
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
            txn.conn.execute(
                "INSERT INTO notifications (run_id, service, kind, key, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                &[&run_id, &service, &kind, &key, &now_ms()],
            )?;
            Ok(())
        })
    }
}

fn count(conn: &dyn Conn, sql: &str, params: &[&dyn ToValue]) -> Result<usize> {
    let count: i64 = conn
        .query_opt(sql, params)?
        .map_or(Ok(0), |row| row.get(0))?;
    Ok(usize::try_from(count).unwrap_or(0))
}
