//! What the deploy and build agents remember between runs: each service's deployment state,
//! the lock that keeps two traffic changes of one service apart, and recent builds.
//!
//! The store keeps these as rows so that they change inside serialized write transactions
//! like everything else (a deploy, a monitor's rollback and `cairn rollback` at once cannot
//! overwrite each other). The store does not know the agents' types: a service's state and a
//! build record are JSON the agents (de)serialize.

use serde_json::Value;

use super::error::{Error, Result};
use super::runs::WriteTxn;
use super::sql::Conn;
use super::sqlite::{Store, now_ms};

/// Who holds a service's traffic lock, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLock {
    pub holder: String,
    pub purpose: String,
    pub acquired_at: i64,
}

impl Store {
    /// One service's deployment state, as the deploy agent last wrote it.
    pub fn deployment(&self, service: &str) -> Result<Option<Value>> {
        self.read(|conn| deployment(conn, service))
    }

    /// Every service's deployment state, by service name.
    pub fn deployments(&self) -> Result<Vec<(String, Value)>> {
        self.read(|conn| {
            conn.query(
                "SELECT service, state FROM deployments ORDER BY service",
                &[],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, parse(&row.get::<String>(1)?)?)))
            .collect()
        })
    }

    /// Recent builds of an image repository, oldest first.
    pub fn builds(&self, repository: &str) -> Result<Vec<Value>> {
        self.read(|conn| {
            conn.query(
                "SELECT record FROM builds WHERE repository = ?1 ORDER BY at_ms, key",
                &[&repository],
            )?
            .iter()
            .map(|row| parse(&row.get::<String>(0)?))
            .collect()
        })
    }
}

fn deployment(conn: &dyn Conn, service: &str) -> Result<Option<Value>> {
    conn.query_opt(
        "SELECT state FROM deployments WHERE service = ?1",
        &[&service],
    )?
    .map(|row| parse(&row.get::<String>(0)?))
    .transpose()
}

impl WriteTxn<'_> {
    /// A service's deployment state, read inside this transaction (for read-change-write).
    pub fn deployment(&self, service: &str) -> Result<Option<Value>> {
        deployment(self.conn, service)
    }

    pub fn put_deployment(&self, service: &str, state: &Value) -> Result<()> {
        self.conn.execute(
            "INSERT INTO deployments (service, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (service) DO UPDATE SET state = excluded.state,
                                                 updated_at = excluded.updated_at",
            &[&service, &state.to_string(), &now_ms()],
        )?;
        Ok(())
    }

    /// Takes `service`'s traffic lock for `holder` unless someone else holds it and
    /// `holder_alive` says they still exist. Returns the other holder when it is taken.
    pub fn lock_service(
        &self,
        service: &str,
        holder: &str,
        purpose: &str,
        holder_alive: &dyn Fn(&str) -> bool,
    ) -> Result<Option<ServiceLock>> {
        let current: Option<ServiceLock> = self
            .conn
            .query_opt(
                "SELECT holder, purpose, acquired_at FROM service_locks WHERE service = ?1",
                &[&service],
            )?
            .map(|row| {
                Ok::<_, Error>(ServiceLock {
                    holder: row.get(0)?,
                    purpose: row.get(1)?,
                    acquired_at: row.get(2)?,
                })
            })
            .transpose()?;
        if let Some(current) = current
            && current.holder != holder
            && holder_alive(&current.holder)
        {
            return Ok(Some(current));
        }
        self.conn.execute(
            "INSERT INTO service_locks (service, holder, purpose, acquired_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (service) DO UPDATE SET holder = excluded.holder,
                 purpose = excluded.purpose, acquired_at = excluded.acquired_at",
            &[&service, &holder, &purpose, &now_ms()],
        )?;
        Ok(None)
    }

    pub fn unlock_service(&self, service: &str, holder: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM service_locks WHERE service = ?1 AND holder = ?2",
            &[&service, &holder],
        )?;
        Ok(())
    }

    /// Records a build under its `key` (a re-run attempt replaces its own record) and keeps
    /// the newest `keep` builds of its repository.
    pub fn record_build(
        &self,
        key: &str,
        repository: &str,
        at_ms: i64,
        record: &Value,
        keep: usize,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO builds (key, repository, at_ms, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET repository = excluded.repository,
                 at_ms = excluded.at_ms, record = excluded.record",
            &[&key, &repository, &at_ms, &record.to_string()],
        )?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.conn.execute(
            "DELETE FROM builds WHERE repository = ?1 AND key NOT IN
                 (SELECT key FROM builds WHERE repository = ?1 ORDER BY at_ms DESC, key DESC
                  LIMIT ?2)",
            &[&repository, &keep],
        )?;
        Ok(())
    }
}

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|error| Error::BadValue {
        what: "deployment or build JSON",
        detail: error.to_string(),
    })
}
