//! What is deployed, kept in the store (table `deployments`, one row per service): the active
//! release, the retired ones kept for instant rollback, the deploy in progress with the
//! release it replaces, and the history of every deploy and rollback with its reason.
//!
//! The in-progress entry is written before any traffic moves, so a re-attempt after an engine
//! crash knows exactly which servers to restore. Every change is a read-change-write inside one
//! `BEGIN IMMEDIATE` transaction, and traffic changes of one service take its lock
//! ([`lock`]) first: a deploy, a monitor's rollback and `cairn rollback` never interleave.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::docker::Replica;
use super::error::Error;
use crate::exec::{Owner, owner_alive};
use crate::store::{self, ServiceLock, Store};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub key: String,
    pub version: String,
    pub image: String,
    pub replicas: Vec<Replica>,
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProgress {
    pub key: String,
    pub version: String,
    pub strategy: String,
    /// The release serving traffic before this deploy touched anything.
    pub replaces: Option<Release>,
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub version: String,
    pub strategy: String,
    /// `deployed`, `rolled_back` or `recovered` (rolled back on a re-attempt after a crash).
    pub outcome: String,
    pub reason: String,
    pub rollback_ms: Option<u64>,
    pub at_ms: i64,
    /// The canary verdicts (with the values they were based on) and traffic events.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// Where a service's proxy is, as its last deploy used it: what `cairn rollback --drill`
/// drives and sends its requests through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyAddress {
    pub socket: String,
    pub backend: String,
    /// The address the managed proxy serves, when Cairn runs it.
    pub listen: Option<String>,
    pub health_path: String,
}

/// A person's answer to a held canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Promote,
    Rollback,
}

/// A canary still inconclusive after `max_wait` under `inconclusive: hold`: its split stays
/// until a person decides. The deploy step polls this entry and acts on the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The deploy's idempotency key, `run_id/step_id`.
    pub key: String,
    pub version: String,
    pub share: f64,
    pub reason: String,
    pub since_ms: i64,
    pub decision: Option<Decision>,
    /// Why the person decided (the `--reason` of the command).
    pub decided_because: Option<String>,
}

/// A deploy waiting for its window or the end of a freeze (`window.rs`), until then or until
/// `cairn approve RUN`. Kept here so it survives the engine: a re-attempt of the step (same
/// key) finds it, approval included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub key: String,
    pub version: String,
    pub risk: String,
    pub reason: String,
    /// When it opens on its own, if it does within two weeks.
    pub opens_ms: Option<i64>,
    pub since_ms: i64,
    /// Set by `cairn approve`: the person's reason.
    pub approved: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub active: Option<Release>,
    /// Previous releases kept running (out of rotation) until `retired_ms + keep_previous`.
    pub retired: Vec<(i64, Release)>,
    pub in_progress: Option<InProgress>,
    pub history: Vec<Record>,
    /// The canary of `in_progress` waiting for a person, if it waits.
    #[serde(default)]
    pub held: Option<Held>,
    /// Deploys waiting for a window or the end of a freeze.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    #[serde(default)]
    pub proxy: Option<ProxyAddress>,
}

fn error(service: &str, message: impl std::fmt::Display) -> Error {
    Error::State {
        path: format!("deployment state of {service}"),
        message: message.to_string(),
    }
}

fn decode(service: &str, value: Option<serde_json::Value>) -> Result<ServiceState, Error> {
    value.map_or_else(
        || Ok(ServiceState::default()),
        |value| serde_json::from_value(value).map_err(|e| error(service, e)),
    )
}

/// One service's state (empty when it was never deployed).
pub fn load(store: &Store, service: &str) -> Result<ServiceState, Error> {
    decode(
        service,
        store.deployment(service).map_err(|e| error(service, e))?,
    )
}

/// Every service with a deployment state, by name.
pub fn all(store: &Store) -> Result<Vec<(String, ServiceState)>, Error> {
    store
        .deployments()
        .map_err(|e| error("every service", e))?
        .into_iter()
        .map(|(service, value)| {
            let state = decode(&service, Some(value))?;
            Ok((service, state))
        })
        .collect()
}

/// Reads, changes and writes back one service's state in one transaction.
pub fn update<T: Send>(
    store: &Store,
    service: &str,
    change: impl FnOnce(&mut ServiceState) -> T + Send,
) -> Result<T, Error> {
    store
        .write(|txn| {
            let mut state =
                decode(service, txn.deployment(service)?).map_err(|e| store::Error::BadValue {
                    what: "deployments.state",
                    detail: e.to_string(),
                })?;
            let result = change(&mut state);
            let value = serde_json::to_value(&state).map_err(|e| store::Error::BadValue {
                what: "deployments.state",
                detail: e.to_string(),
            })?;
            txn.put_deployment(service, &value)?;
            Ok(result)
        })
        .map_err(|e| error(service, e))
}

/// A service's traffic lock, released when dropped (or when its process dies).
pub struct ServiceGuard {
    store: Store,
    service: String,
    holder: String,
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        if let Err(e) = self
            .store
            .write(|txn| txn.unlock_service(&self.service, &self.holder))
        {
            tracing::warn!(service = %self.service, error = %e, "failed to release the service lock");
        }
    }
}

/// How long [`lock`] waits for another holder before giving up.
pub enum Wait {
    No,
    Up(Duration),
}

/// Takes `service`'s traffic lock for `purpose`. While another live holder has it, waits as
/// `wait` says (calling `waiting` once with the holder), then fails naming the holder.
pub async fn lock(
    store: &Store,
    service: &str,
    purpose: &str,
    wait: Wait,
    mut waiting: impl FnMut(&ServiceLock),
) -> Result<ServiceGuard, Error> {
    // Unique per acquisition: two steps of one engine process exclude each other too.
    let holder = format!("{}/{:016x}", Owner::current(), rand::random::<u64>());
    let alive = |holder: &str| owner_alive(holder.split('/').next().unwrap_or(holder));
    let deadline = match wait {
        Wait::No => tokio::time::Instant::now(),
        Wait::Up(limit) => tokio::time::Instant::now() + limit,
    };
    let mut told = false;
    loop {
        let taken = store
            .write(|txn| txn.lock_service(service, &holder, purpose, &alive))
            .map_err(|e| error(service, e))?;
        let Some(other) = taken else {
            return Ok(ServiceGuard {
                store: store.clone(),
                service: service.to_string(),
                holder,
            });
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Config(format!(
                "{service} is busy: {} holds its traffic since {} (wait for it to finish, or cancel its run)",
                other.purpose,
                chrono_ms(other.acquired_at)
            )));
        }
        if !told {
            waiting(&other);
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn chrono_ms(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_else(|| at_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("cairn.db")).expect("store");
        assert_eq!(
            load(&store, "shop").expect("never deployed is empty"),
            ServiceState::default()
        );
        let release = Release {
            key: "1/deploy".into(),
            version: "v1".into(),
            image: "shop:v1".into(),
            replicas: vec![Replica {
                name: "a".into(),
                address: "127.0.0.1:1".into(),
            }],
            since_ms: 5,
        };
        update(&store, "shop", |s| {
            s.active = Some(release.clone());
            s.in_progress = Some(InProgress {
                key: "2/deploy".into(),
                version: "v2".into(),
                strategy: "canary".into(),
                replaces: Some(release.clone()),
                started_ms: 6,
            });
        })
        .expect("update");
        let state = load(&store, "shop").expect("load");
        assert_eq!(state.active.as_ref(), Some(&release));
        assert_eq!(
            state.in_progress.as_ref().map(|p| p.key.as_str()),
            Some("2/deploy")
        );
    }

    #[tokio::test]
    async fn one_traffic_change_of_a_service_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("cairn.db")).expect("store");
        let first = lock(&store, "shop", "deploy run 1", Wait::No, |_| {})
            .await
            .expect("free");
        let busy = lock(&store, "shop", "rollback", Wait::No, |_| {}).await;
        assert!(
            busy.as_ref()
                .err()
                .is_some_and(|e| e.to_string().contains("deploy run 1")),
            "the holder is named"
        );
        let other = lock(&store, "cart", "deploy run 2", Wait::No, |_| {}).await;
        assert!(other.is_ok(), "other services are independent");
        drop(first);
        let mut waited = false;
        lock(
            &store,
            "shop",
            "rollback",
            Wait::Up(Duration::from_secs(1)),
            |_| waited = true,
        )
        .await
        .expect("free again once dropped");
        assert!(!waited);
    }
}
