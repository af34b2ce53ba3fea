//! `cairn rollback --drill SERVICE`: proves the rollback path before it is needed. Under load
//! (its own clients sending requests through the service's proxy the whole time) the service
//! rolls back to the release kept out of rotation and then forward again to the one that
//! served, by the same [`rollback`] a monitor or a person uses. For each way it reports the
//! time to full traffic — from the start of the switch to the last request the proxy gave the
//! release being left (HAProxy's per-server session counters, polled every 25 ms) — and, over
//! the whole drill, the requests sent and those that failed (a transport error or a 5xx).
//! Goal: under 10 s each way, no failed request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::Error;
use super::proxy::Proxy;
use super::rollback::rollback;
use super::state;
use crate::store::Store;

/// How many clients send requests during the drill, each pausing this long between requests.
const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(5);
/// The release left must have had no new session for this long to count as out of traffic.
const QUIET: Duration = Duration::from_millis(300);

/// Requests sent and failed by the drill's clients.
struct Clients {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_failure: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(url: &str) -> Clients {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let (stop, sent, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let first_failure = Arc::new(std::sync::Mutex::new(None));
        let tasks = (0..CLIENTS)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_string());
                let (stop, sent, failed, first_failure) = (
                    stop.clone(),
                    sent.clone(),
                    failed.clone(),
                    first_failure.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = match client.get(&url).send().await {
                            Ok(response) if response.status().is_server_error() => {
                                Err(format!("answered {}", response.status()))
                            }
                            Ok(response) => response
                                .bytes()
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string()),
                            Err(error) => Err(error.to_string()),
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        if let Err(why) = outcome {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut first) = first_failure.lock() {
                                first.get_or_insert(why);
                            }
                        }
                        tokio::time::sleep(PAUSE).await;
                    }
                })
            })
            .collect();
        Clients {
            stop,
            sent,
            failed,
            first_failure,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let first = self.first_failure.lock().ok().and_then(|f| f.clone());
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            first,
        )
    }
}

/// Runs the drill on `service`; `url` overrides where the clients send their requests (needed
/// when Cairn does not run the service's proxy itself).
pub async fn drill(store: &Store, service: &str, url: Option<&str>) -> Result<Value, Error> {
    let not_possible = |why: String| Error::Config(format!("cannot drill {service}: {why}"));
    let _traffic = state::lock(
        store,
        service,
        "cairn rollback --drill",
        state::Wait::No,
        |_| {},
    )
    .await?;
    let current = state::load(store, service)?;
    let address = current.proxy.clone().ok_or_else(|| {
        not_possible(
            "its deploy state names no proxy (deploy it once with this version of Cairn)".into(),
        )
    })?;
    let url = match (url, &address.listen) {
        (Some(url), _) => url.to_string(),
        (None, Some(listen)) => format!("http://{listen}/"),
        (None, None) => {
            return Err(not_possible(
                "Cairn does not run its proxy, so it does not know where clients reach it: pass --url".into(),
            ));
        }
    };
    let proxy = Proxy::new(Path::new(&address.socket), &address.backend);
    let clients = Clients::start(&url);
    // Traffic must flow before the drill can say anything about it.
    let warm = Instant::now();
    while clients.sent.load(Ordering::Relaxed) < 20 {
        if warm.elapsed() > Duration::from_secs(10) {
            let (_, _, why) = clients.stop().await;
            return Err(not_possible(format!(
                "no traffic reaches {url} ({})",
                why.unwrap_or_else(|| "no answer".into())
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ways = Vec::new();
    for (way, reason) in [
        ("back", "drill: back to the previous release"),
        ("forward", "drill: forward again"),
    ] {
        let leaving: Vec<String> = state::load(store, service)?
            .active
            .map(|a| a.replicas.into_iter().map(|r| r.name).collect())
            .unwrap_or_default();
        match switch(store, service, &proxy, reason, &leaving).await {
            Ok(mut report) => {
                report["way"] = json!(way);
                ways.push(report);
            }
            Err(error) => {
                clients.stop().await;
                return Err(error);
            }
        }
    }
    // A little traffic after the last switch, so a failure right after it is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failed, first_failure) = clients.stop().await;
    let full: Vec<u64> = ways
        .iter()
        .filter_map(|w| w["full_traffic_ms"].as_u64())
        .collect();
    let met = failed == 0 && full.len() == 2 && full.iter().all(|ms| *ms < 10_000);
    Ok(json!({
        "service": service,
        "url": url,
        "ways": ways,
        "requests": sent,
        "failed_requests": failed,
        "first_failure": first_failure,
        "goal": "full traffic within 10 s each way, no failed request",
        "met": met,
    }))
}

/// One way: the switch, then the wait until the servers in `leaving` get no new session.
async fn switch(
    store: &Store,
    service: &str,
    proxy: &Proxy,
    reason: &str,
    leaving: &[String],
) -> Result<Value, Error> {
    let sessions = |totals: &HashMap<String, u64>| -> u64 {
        leaving.iter().filter_map(|name| totals.get(name)).sum()
    };
    let started = Instant::now();
    let mut last_seen = sessions(&proxy.session_totals().await?);
    let mut last_change = started;
    // The switch itself runs beside the counting: its drain waits must not hide when the
    // traffic actually moved.
    let moving = rollback(store, service, proxy, reason);
    tokio::pin!(moving);
    let mut report: Option<Value> = None;
    let mut switched_ms = 0;
    loop {
        tokio::select! {
            done = &mut moving, if report.is_none() => {
                report = Some(done?);
                switched_ms = started.elapsed().as_millis() as u64;
            }
            _ = tokio::time::sleep(Duration::from_millis(25)) => {
                let now = sessions(&proxy.session_totals().await?);
                if now != last_seen {
                    last_seen = now;
                    last_change = Instant::now();
                }
                if report.is_some() && last_change.elapsed() >= QUIET {
                    break;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    return Err(Error::Config(format!(
                        "drill of {service}: the release left still got requests 60 s after the switch began"
                    )));
                }
            }
        }
    }
    let report = report.unwrap_or(Value::Null);
    Ok(json!({
        "from": report["from"],
        "to": report["to"],
        "full_traffic_ms": last_change.duration_since(started).as_millis() as u64,
        "switch_done_ms": switched_ms,
    }))
}
