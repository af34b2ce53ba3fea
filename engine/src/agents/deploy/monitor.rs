//! `agent: monitor_agent`: watches the release a `deploy_agent` step just made active, for
//! the monitor window (10 minutes, 30 at high risk), and rolls it back on its own when it
//! misbehaves: a replica that exits (crash), fails its health check twice in a row, or whose
//! metrics over the window are worse than the previous release's, by the same statistical
//! analysis a canary gets (the previous release's replicas are kept running out of rotation,
//! so their counters are the baseline). That baseline was measured before the switch, so a
//! slower window may be the machine's: errors roll back at once, latency only when
//! [`LATENCY_CHECKS`] intervals in a row are each slower on their own (Flagger's `threshold`).
//!
//! ```yaml
//! - id: monitor
//!   agent: monitor_agent
//!   depends_on: deploy
//!   with:
//!     window: 10m        # default 10m, 30m at high risk
//!     interval: 5s       # scrape, probe and test this often
//!     min_samples: 100   # and alpha, max_error_rate_delta, max_latency_ratio, notify: as deploy_agent
//! ```
//!
//! Everything else — service, state file, proxy — comes from the deploy step's outputs in the
//! run context. Too little traffic over the window is reported as `inconclusive` with the
//! counts; the release stays (it passed its health checks), and the step says so.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::analysis::{Outcome, Thresholds, analyse};
use super::config::{duration, thresholds};
use super::error::Error;
use super::notify::{Alert, Notifier, NotifyConfig, Severity};
use super::probe;
use super::proxy::Proxy;
use super::rollback::rollback;
use super::source::MetricsSource;
use super::state;
use crate::agents::registry::{Agent, AgentContext, AgentFuture};

/// Consecutive checks whose own interval must be slower than the previous release before the
/// monitor rolls back for latency (Flagger's `threshold`): its baseline was measured earlier,
/// and one slow interval is as likely the machine's (a busy host, a cold replica) as the
/// release's.
const LATENCY_CHECKS: u32 = 3;

/// The run of consecutive checks whose own interval was slower than the previous release.
#[derive(Debug, Default)]
struct SlowIntervals(u32);

impl SlowIntervals {
    /// Counts one interval's verdict: true once [`LATENCY_CHECKS`] in a row were slower. An
    /// interval that passes ends the run; one with too little traffic to judge leaves it.
    fn observe(&mut self, interval: &super::analysis::Verdict) -> bool {
        if interval.latency_regressed {
            self.0 += 1;
        } else if interval.outcome == Outcome::Pass {
            self.0 = 0;
        }
        self.0 >= LATENCY_CHECKS
    }
}

const KEYS: &[&str] = &[
    "window",
    "interval",
    "min_samples",
    "alpha",
    "max_error_rate_delta",
    "max_latency_ratio",
    "notify",
    "docker_host",
];

pub struct MonitorAgent;

impl Agent for MonitorAgent {
    fn name(&self) -> &'static str {
        "monitor_agent"
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        Box::pin(async move { super::agent::step_result(&context, watch(&context).await) })
    }

    /// What does not depend on the deploy it watches: keys, durations, thresholds, notify.
    fn check_with(&self, with: &Value) -> Result<(), String> {
        let check = || -> Result<(), Error> {
            let map = crate::agents::with::mapping(with, KEYS).map_err(Error::Config)?;
            duration(map, "window")?;
            duration(map, "interval")?;
            thresholds(map)?;
            NotifyConfig::from_value(map.get("notify")).map_err(Error::Config)?;
            crate::agents::with::string(map, "docker_host").map_err(Error::Config)?;
            Ok(())
        };
        check().map_err(|error| match error {
            Error::Config(message) => message,
            other => other.to_string(),
        })
    }
}

struct Watch {
    service: String,
    proxy: Proxy,
    health_path: String,
    metrics: MetricsSource,
    window: Duration,
    interval: Duration,
    thresholds: Thresholds,
    notify: NotifyConfig,
    docker_host: String,
}

impl Watch {
    fn from(with: &Value, context: &Value) -> Result<Watch, Error> {
        let map = crate::agents::with::mapping(with, KEYS).map_err(Error::Config)?;
        let text = |key: &str| context.get(key).and_then(Value::as_str).map(str::to_string);
        let missing = |key: &str| {
            Error::Config(format!(
                "no `{key}` in the run context: monitor_agent watches what a deploy_agent step deployed (depends_on: the deploy step)"
            ))
        };
        let risk = text("risk").unwrap_or_else(|| "medium".into());
        let default_window = Duration::from_secs(if risk == "high" { 30 * 60 } else { 10 * 60 });
        Ok(Watch {
            service: text("service").ok_or_else(|| missing("service"))?,
            proxy: Proxy::new(
                &text("proxy_socket")
                    .map(PathBuf::from)
                    .ok_or_else(|| missing("proxy_socket"))?,
                &text("backend").ok_or_else(|| missing("backend"))?,
            ),
            health_path: text("health_path").unwrap_or_else(|| "/healthz".into()),
            metrics: context
                .as_object()
                .map_or(
                    Ok(MetricsSource::Endpoint {
                        path: "/metrics".into(),
                    }),
                    MetricsSource::from_map,
                )
                .map_err(Error::Config)?,
            window: duration(map, "window")?.unwrap_or(default_window),
            interval: duration(map, "interval")?
                .unwrap_or(Duration::from_secs(5))
                .max(Duration::from_millis(50)),
            thresholds: thresholds(map)?,
            notify: NotifyConfig::from_value(map.get("notify")).map_err(Error::Config)?,
            docker_host: crate::agents::with::string(map, "docker_host")
                .map_err(Error::Config)?
                .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
        })
    }
}

/// Outputs of a quiet window, or the message of a rollback.
async fn watch(call: &AgentContext) -> Result<Result<Value, String>, Error> {
    let watch = Watch::from(&call.with, &call.context)?;
    let logs = &call.logs;
    if call.context.get("outcome").and_then(Value::as_str) != Some("deployed") {
        return Err(Error::Config(
            "the deploy step did not deploy (outcome is not `deployed`): nothing to monitor".into(),
        ));
    }
    let current = state::load(&call.store, &watch.service)?;
    let active = current
        .active
        .clone()
        .ok_or_else(|| Error::Config(format!("{} has no active release", watch.service)))?;
    let previous = current.retired.last().map(|(_, release)| release.clone());
    let docker = crate::agents::build::docker::connect(&watch.docker_host, None).await?;
    let client = probe::client();
    let baseline = match &previous {
        Some(release) => Some(watch.metrics.total(&client, &release.replicas).await),
        None => None,
    };
    let start = watch.metrics.total(&client, &active.replicas).await;
    logs.line(
        "stdout",
        format!(
            "monitoring {} {} ({} replicas) for {:.0} s{}",
            watch.service,
            active.version,
            active.replicas.len(),
            watch.window.as_secs_f64(),
            match (&previous, &baseline) {
                (Some(release), Some(b)) => format!(", against {}'s {} requests", release.version, b.requests),
                _ => ": no previous release to compare with or roll back to (health and crashes are still watched)".into(),
            }
        ),
    );

    let began = Instant::now();
    let mut onset: Option<Instant> = None;
    let mut failed_probes: std::collections::BTreeMap<String, u32> = Default::default();
    let mut last_verdict = None;
    let mut checks = 0u64;
    let mut checked = start.clone();
    let mut slow_intervals = SlowIntervals::default();
    let problem: Option<String> = loop {
        tokio::time::sleep(
            watch
                .interval
                .min(watch.window.saturating_sub(began.elapsed()))
                .max(Duration::from_millis(50)),
        )
        .await;
        checks += 1;
        let mut problem = None;
        for replica in &active.replicas {
            if let Some(code) = super::docker::exited(&docker, &replica.name).await? {
                onset.get_or_insert_with(Instant::now);
                problem = Some(format!("{} crashed (exit code {code})", replica.name));
                break;
            }
            let failures = failed_probes.entry(replica.name.clone()).or_default();
            if probe::healthy(&client, &replica.address, &watch.health_path).await {
                *failures = 0;
            } else {
                *failures += 1;
                onset.get_or_insert_with(Instant::now);
                if *failures >= 2 {
                    problem = Some(format!(
                        "{} failed its health check {} twice in a row",
                        replica.name, watch.health_path
                    ));
                    break;
                }
            }
        }
        if problem.is_some() {
            break problem;
        }
        if let Some(baseline) = &baseline {
            let total = watch.metrics.total(&client, &active.replicas).await;
            let verdict = analyse(&total.since(&start), baseline, watch.thresholds);
            let recent = analyse(&total.since(&checked), baseline, watch.thresholds);
            checked = total;
            if verdict.anomalous() && onset.is_none() {
                onset = Some(Instant::now());
                logs.line(
                    "stdout",
                    format!("first anomalous sample: {}", verdict.summary()),
                );
            }
            // Errors fail at once; latency only when it persists (see `SlowIntervals`).
            let slow = slow_intervals.observe(&recent);
            if verdict.errors_regressed || slow {
                let failed = if verdict.errors_regressed {
                    &verdict
                } else {
                    &recent
                };
                let reason = format!(
                    "worse than {}: {}{}",
                    previous.as_ref().map_or("", |p| p.version.as_str()),
                    failed.reasons.join("; "),
                    if slow {
                        format!(" ({LATENCY_CHECKS} intervals in a row slower)")
                    } else {
                        String::new()
                    }
                );
                logs.line("stdout", format!("analysis failed: {}", failed.summary()));
                last_verdict = Some(failed.clone());
                break Some(reason);
            }
            if recent.latency_regressed {
                logs.line(
                    "stdout",
                    format!(
                        "slower than {} ({} of {LATENCY_CHECKS} intervals in a row): {}",
                        previous.as_ref().map_or("", |p| p.version.as_str()),
                        slow_intervals.0,
                        recent.reasons.join("; ")
                    ),
                );
            }
            last_verdict = Some(verdict);
        }
        if began.elapsed() >= watch.window {
            break None;
        }
    };

    let verdict_json = last_verdict
        .as_ref()
        .map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
    let Some(problem) = problem else {
        let summary = match &last_verdict {
            Some(v) if v.outcome == Outcome::Inconclusive => format!(
                "inconclusive: {} (the release stays: it passed every health check)",
                v.summary()
            ),
            Some(v) if v.outcome == Outcome::Fail => format!(
                "{} (never {LATENCY_CHECKS} intervals in a row: the release stays)",
                v.summary()
            ),
            Some(v) => v.summary(),
            None => format!(
                "healthy at all {checks} checks (no previous release: no metric comparison)"
            ),
        };
        logs.line("stdout", format!("monitor window over: {summary}"));
        return Ok(Ok(json!({
            "monitored": active.version,
            "window_s": watch.window.as_secs_f64(),
            "checks": checks,
            "outcome": "healthy",
            "verdict": verdict_json,
            "summary": summary,
        })));
    };

    logs.line("stdout", format!("{problem}: rolling back"));
    let mut notifier = Notifier::new(
        watch.notify.clone(),
        call.run_id,
        &watch.service,
        Some(call.store.clone()),
    );
    let Some(previous) = previous else {
        notifier
            .notify(Alert {
                severity: Severity::Critical,
                key: format!("monitor:{}", watch.service),
                title: format!("{} {} misbehaves", watch.service, active.version),
                text: format!("{problem}; no previous release to roll back to"),
                success: false,
            })
            .await;
        notifier.flush().await;
        return Ok(Err(format!(
            "{} {}: {problem}; there is no previous release to roll back to",
            watch.service, active.version
        )));
    };
    let traffic = state::lock(
        &call.store,
        &watch.service,
        &format!("monitor run {} step {}", call.run_id, call.step_id),
        state::Wait::Up(Duration::from_secs(60)),
        |other| {
            logs.line(
                "stdout",
                format!("waiting for {} before rolling back", other.purpose),
            );
        },
    )
    .await?;
    // Someone else (`cairn rollback`, a newer deploy) changed what serves while we waited:
    // rolling back now would undo their change, not the release this monitor watched.
    if state::load(&call.store, &watch.service)?
        .active
        .is_none_or(|now| now.key != active.key)
    {
        drop(traffic);
        return Ok(Err(format!(
            "{} {}: {problem}; it no longer serves (another rollback or deploy replaced it), so the monitor leaves traffic as it is",
            watch.service, active.version
        )));
    }
    let report = rollback(
        &call.store,
        &watch.service,
        &watch.proxy,
        &format!("monitor: {problem}"),
    )
    .await?;
    drop(traffic);
    let from_onset_ms = onset.map(|at| at.elapsed().as_millis() as u64);
    let message = format!(
        "{} {} rolled back to {} by the monitor: {problem} ({} ms from the first anomalous sample to the previous release serving all traffic)",
        watch.service,
        active.version,
        previous.version,
        from_onset_ms.unwrap_or(0)
    );
    notifier
        .notify(Alert {
            severity: Severity::Critical,
            key: format!("rollback:{}", watch.service),
            title: format!("{} {} rolled back", watch.service, active.version),
            text: message.clone(),
            success: false,
        })
        .await;
    notifier.flush().await;
    logs.line("stdout", format!("rollback: {report}"));
    Ok(Err(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::deploy::analysis::tests::{T, side};

    /// Error-free traffic: `fast` requests answered under 5 ms, `slow` from 5 to 250 ms.
    fn traffic(fast: f64, slow: f64) -> crate::agents::deploy::metrics::Snapshot {
        side(fast + slow, 0.0, fast, slow)
    }

    #[test]
    fn latency_fails_only_after_consecutive_slow_intervals() {
        let baseline = traffic(5000.0, 0.0);
        let slow = analyse(&traffic(0.0, 500.0), &baseline, T);
        let fine = analyse(&traffic(500.0, 0.0), &baseline, T);
        let thin = analyse(&traffic(0.0, 10.0), &baseline, T);
        assert!(slow.latency_regressed && !fine.latency_regressed && !thin.latency_regressed);
        assert_eq!(thin.outcome, Outcome::Inconclusive);

        let mut run = SlowIntervals::default();
        // A slow spike (a busy host, a cold replica) that passes is not a regression.
        assert!(!run.observe(&slow));
        assert!(!run.observe(&slow));
        assert!(!run.observe(&fine));
        assert!(!run.observe(&slow));
        // An interval too thin to judge neither counts nor breaks the run.
        assert!(!run.observe(&thin));
        assert!(!run.observe(&slow));
        assert!(run.observe(&slow), "three slow intervals in a row");
    }
}
