//! Manual rollback (`cairn rollback RUN`): the release a run deployed gives way to the one it
//! replaced, which was kept running out of rotation for `keep_previous`. Traffic moves the same
//! way as in an automatic rollback: the previous servers ready first, then the current ones
//! drained and put in maintenance, so no request is cut.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::Error;
use super::probe;
use super::proxy::{Proxy, WEIGHT_SCALE};
use super::state::{self, Record};
use crate::store::Store;

/// Rolls back every deploy step of run `run_id` whose release is still the active one.
/// Returns one report per step rolled back; none when the run deployed nothing still active.
pub async fn rollback_run(store: &Store, run_id: i64, reason: &str) -> Result<Vec<Value>, Error> {
    let steps = store.steps(run_id).map_err(|e| Error::State {
        path: format!("run {run_id}"),
        message: e.to_string(),
    })?;
    let mut reports = Vec::new();
    for step in steps {
        let Some(outputs) = step.outputs else {
            continue;
        };
        let (Some(service), Some(socket), Some(backend)) = (
            outputs["service"].as_str(),
            outputs["proxy_socket"].as_str(),
            outputs["backend"].as_str(),
        ) else {
            continue;
        };
        if outputs["outcome"] != "deployed" {
            continue;
        }
        let proxy = Proxy::new(Path::new(socket), backend);
        let _traffic =
            state::lock(store, service, "cairn rollback", state::Wait::No, |_| {}).await?;
        // Only the release this step deployed is rolled back: once something else serves
        // (an earlier rollback, a newer deploy), rolling back would undo that instead.
        let key = format!("{run_id}/{}", step.step_id);
        if state::load(store, service)?
            .active
            .is_none_or(|active| active.key != key)
        {
            continue;
        }
        reports.push(rollback(store, service, &proxy, reason).await?);
    }
    Ok(reports)
}

/// Makes the most recently retired release of `service` active again. The caller holds the
/// service's traffic lock ([`state::lock`]), so the state read here is what traffic shows.
pub async fn rollback(
    store: &Store,
    service: &str,
    proxy: &Proxy,
    reason: &str,
) -> Result<Value, Error> {
    let current = state::load(store, service)?;
    let not_possible = |why: String| Error::Config(format!("cannot roll back {service}: {why}"));
    let active = current
        .active
        .clone()
        .ok_or_else(|| not_possible("nothing is deployed".into()))?;
    let (_, previous) =
        current.retired.last().cloned().ok_or_else(|| {
            not_possible("no previous release is kept (see `keep_previous`)".into())
        })?;
    let client = probe::client();
    for replica in &previous.replicas {
        if !probe::healthy(&client, &replica.address, "/healthz").await {
            return Err(not_possible(format!(
                "the previous release {}'s replica {} is not healthy",
                previous.version, replica.name
            )));
        }
    }
    let started = Instant::now();
    for replica in &previous.replicas {
        proxy.set_weight(&replica.name, WEIGHT_SCALE / 2).await?;
        proxy.set_state(&replica.name, "ready").await?;
    }
    for replica in &active.replicas {
        proxy.retire(&replica.name, Duration::from_secs(5)).await?;
    }
    let rollback_ms = started.elapsed().as_millis() as u64;
    let now = crate::store::now_ms();
    state::update(store, service, |s| {
        s.retired.pop();
        s.retired.push((now, active.clone()));
        s.active = Some(previous.clone());
        s.history.push(Record {
            key: active.key.clone(),
            version: active.version.clone(),
            strategy: "manual".into(),
            outcome: "rolled_back".into(),
            reason: format!("manual rollback to {}: {reason}", previous.version),
            rollback_ms: Some(rollback_ms),
            at_ms: now,
            details: Value::Null,
        });
    })?;
    Ok(
        json!({ "service": service, "from": active.version, "to": previous.version, "rollback_ms": rollback_ms, "reason": reason }),
    )
}
