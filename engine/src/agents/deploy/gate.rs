//! The deploy step's wait for its window (`window.rs`): before anything is started or any
//! traffic moves, a deploy the calendar refuses records itself as waiting in the service's
//! state (shown by `cairn status`) and waits for the window, the end of the freeze, or `cairn
//! approve RUN`, whichever comes first; the step's `timeout:` bounds the wait. The entry is keyed
//! by the step's idempotency key, so a re-attempt after a crash waits on (or goes on with the
//! approval already given) rather than starting over.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::DeployConfig;
use super::error::Error;
use super::state::{self, Waiting};
use super::window::Gate;
use crate::exec::LogSink;
use crate::store::Store;

/// How often a waiting deploy looks at the clock and for an approval.
const POLL: Duration = Duration::from_secs(1);

/// Returns once the deploy may go, with what let it go (for the step's outputs); `None` when
/// no window or freeze applies.
pub async fn wait_for_window(
    store: &Store,
    config: &DeployConfig,
    key: &str,
    hotfix: bool,
    logs: &LogSink,
) -> Result<Option<Value>, Error> {
    if config.calendar.is_empty() {
        return Ok(None);
    }
    let started = tokio::time::Instant::now();
    let mut told = String::new();
    loop {
        let approved = state::load(store, &config.service)?
            .waiting
            .iter()
            .find(|w| w.key == key)
            .and_then(|w| w.approved.clone());
        let gate = config
            .calendar
            .gate(&config.risk, hotfix, chrono::Utc::now());
        let passed = match (&gate, approved) {
            (_, Some(reason)) => Some(format!("approved by a person: {reason}")),
            (Gate::Open(note), None) if note.is_empty() => Some(if told.is_empty() {
                "allowed at once (no freeze, and inside its window if its risk needs one)"
                    .to_string()
            } else {
                "its window opened or its freeze ended".to_string()
            }),
            (Gate::Open(note), None) => Some(note.clone()),
            (Gate::Closed { .. }, None) => None,
        };
        if let Some(how) = passed {
            state::update(store, &config.service, |s| {
                s.waiting.retain(|w| w.key != key)
            })?;
            let waited_ms = started.elapsed().as_millis() as u64;
            if !told.is_empty() {
                logs.line(
                    "stdout",
                    format!("deploy window: goes after {} s: {how}", waited_ms / 1000),
                );
            }
            return Ok(Some(json!({ "passed": how, "waited_ms": waited_ms })));
        }
        if let Gate::Closed { reason, opens } = gate
            && reason != told
        {
            let until = opens.map_or("no window within two weeks".to_string(), |at| {
                format!("opens {}", config.calendar.show(at))
            });
            let run = key.split('/').next().unwrap_or(key);
            logs.line(
                "stdout",
                format!("waiting: {reason}; {until}; or `cairn approve {run}`"),
            );
            let entry = Waiting {
                key: key.to_string(),
                version: config.version.clone(),
                risk: config.risk.clone(),
                reason: reason.clone(),
                opens_ms: opens.map(|at| at.timestamp_millis()),
                since_ms: crate::store::now_ms(),
                approved: None,
            };
            state::update(store, &config.service, |s| {
                match s.waiting.iter_mut().find(|w| w.key == entry.key) {
                    // A re-attempt, or a reason that changed: the wait began earlier.
                    Some(existing) => {
                        existing.reason = entry.reason.clone();
                        existing.opens_ms = entry.opens_ms;
                    }
                    None => s.waiting.push(entry.clone()),
                }
            })?;
            told = reason;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `cairn approve RUN`: lets every waiting deploy of run `run_id` go now. Returns one report per
/// deploy, once its step has seen the approval (up to a minute); none when nothing waits.
pub async fn approve_run(store: &Store, run_id: i64, reason: &str) -> Result<Vec<Value>, Error> {
    let prefix = format!("{run_id}/");
    let mut approved = Vec::new();
    for (service, current) in state::all(store)? {
        for waiting in current
            .waiting
            .iter()
            .filter(|w| w.key.starts_with(&prefix))
        {
            let recorded = state::update(store, &service, |s| {
                match s.waiting.iter_mut().find(|w| w.key == waiting.key) {
                    Some(entry) => {
                        entry.approved = Some(reason.to_string());
                        true
                    }
                    None => false,
                }
            })?;
            if recorded {
                approved.push((service.clone(), waiting.clone()));
            }
        }
    }
    let mut reports = Vec::new();
    for (service, waiting) in approved {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let gone = !state::load(store, &service)?
                .waiting
                .iter()
                .any(|w| w.key == waiting.key);
            if gone || tokio::time::Instant::now() >= deadline {
                break gone;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        reports.push(json!({
            "service": service,
            "version": waiting.version,
            "risk": waiting.risk,
            "was_waiting_for": waiting.reason,
            "approved": reason,
            // False when the step has not looked yet (its engine is not running: `cairn resume`).
            "deploying": seen,
        }));
    }
    Ok(reports)
}
