//! Manual rollback (`cairn rollback RUN`): the release a run deployed gives way to the one it
//! replaced, which was kept running out of rotation for `keep_previous`. Traffic moves the same
//! way as in an automatic rollback: the previous servers ready first, then the current ones
//! drained and put in maintenance, so no request is cut.
//!
//! A canary of the run held for a person (`inconclusive: hold`) is answered instead: `cairn
//! rollback RUN` or `cairn promote RUN` records the decision in the service's state, and the
//! deploy step, which holds the service's traffic lock, acts on it; the command waits until it
//! has.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::Error;
use super::probe;
use super::proxy::{Proxy, WEIGHT_SCALE};
use super::state::{self, Decision, Record};
use crate::store::Store;

/// Rolls back every deploy step of run `run_id` whose release is still the active one.
/// Returns one report per step rolled back; none when the run deployed nothing still active.
pub async fn rollback_run(store: &Store, run_id: i64, reason: &str) -> Result<Vec<Value>, Error> {
    let decided = decide_held(store, run_id, Decision::Rollback, reason).await?;
    if !decided.is_empty() {
        return Ok(decided);
    }
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

/// Promotes every canary of run `run_id` held for a person. Returns one report per canary;
/// none when the run has no canary waiting.
pub async fn promote_run(store: &Store, run_id: i64, reason: &str) -> Result<Vec<Value>, Error> {
    decide_held(store, run_id, Decision::Promote, reason).await
}

/// Records `decision` on the run's held canaries and waits (up to a minute) for their deploy
/// steps to act on it and record the outcome.
async fn decide_held(
    store: &Store,
    run_id: i64,
    decision: Decision,
    reason: &str,
) -> Result<Vec<Value>, Error> {
    let prefix = format!("{run_id}/");
    let mut decided = Vec::new();
    for (service, current) in state::all(store)? {
        let Some(held) = current.held.filter(|h| h.key.starts_with(&prefix)) else {
            continue;
        };
        let recorded = state::update(store, &service, |s| match &mut s.held {
            Some(now) if now.key == held.key => {
                now.decision = Some(decision);
                now.decided_because = Some(reason.to_string());
                true
            }
            _ => false,
        })?;
        if recorded {
            decided.push((service, held));
        }
    }
    let mut reports = Vec::new();
    for (service, held) in decided {
        let deadline = Instant::now() + Duration::from_secs(60);
        let acted = loop {
            // The deploy step records its outcome when it has moved the traffic.
            let state = state::load(store, &service)?;
            if let Some(record) = state.history.iter().rev().find(|r| r.key == held.key) {
                break Some(json!({ "outcome": record.outcome, "reason": record.reason }));
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        reports.push(json!({
            "service": service,
            "version": held.version,
            "decision": decision,
            "reason": reason,
            // Null while the deploy step has not acted yet (it polls at its analysis interval).
            "result": acted,
        }));
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
