//! Notifications routed by severity to Slack-compatible incoming webhooks, a generic JSON
//! webhook, PagerDuty's Events API v2 and Alertmanager's webhook format (`alert_format.rs`),
//! with aggregation so people read them: the same alert (same key) within the window is sent
//! once (and carries a dedup key, so PagerDuty and Alertmanager fold repeats too); warnings and
//! info are batched into one message per window; routine success is suppressed unless asked
//! for; critical alerts (failures, rollbacks) go out at once; no run sends more than
//! `max_per_run` messages; and a service sends at most `daily_budget` non-critical messages a
//! day (UTC), counted in the store — a critical alert is never held back by the noise of
//! others. With the store, all of it holds across the steps of a run and across runs
//! (`store/notifications.rs`).
//!
//! ```yaml
//! notify:
//!   routes:                       # each gets the alerts at or above its severity
//!     - { min_severity: critical, pagerduty: { routing_key: R0…, url: https://events.pagerduty.com/v2/enqueue } }
//!     - { min_severity: warning, alertmanager: http://127.0.0.1:5001/hook }
//!     - { slack: https://hooks.slack.com/… }          # min_severity: info
//!   slack: http://…               # shorthands: a route for every severity
//!   webhook: http://…
//!   window: 60s                   # de-duplication and batching window
//!   success: false                # routine success messages
//!   max_per_run: 20
//!   daily_budget: 30              # non-critical messages per service per day
//! ```
//!
//! A destination that fails is logged and counted, never a reason to fail or undo a deploy.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::alert_format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub severity: Severity,
    /// What makes two alerts "the same" for deduplication.
    pub key: String,
    pub title: String,
    pub text: String,
    /// Routine success ("deployed v2"): suppressed unless `success: true`.
    pub success: bool,
}

/// Where one route's messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Slack(String),
    Webhook(String),
    PagerDuty { url: String, routing_key: String },
    Alertmanager(String),
}

/// A destination for the alerts at or above a severity.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub min_severity: Severity,
    pub destination: Destination,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotifyConfig {
    /// Shorthand: a Slack-compatible route for every severity.
    pub slack: Option<String>,
    /// Shorthand: a generic JSON webhook route for every severity.
    pub webhook: Option<String>,
    pub routes: Vec<Route>,
    pub window: Duration,
    pub success: bool,
    pub max_per_run: usize,
    /// Non-critical messages a service may send a day; `None`: no budget.
    pub daily_budget: Option<usize>,
}

impl NotifyConfig {
    pub fn from_value(value: Option<&Value>) -> Result<NotifyConfig, String> {
        let mut config = NotifyConfig {
            window: Duration::from_secs(60),
            max_per_run: 20,
            ..Default::default()
        };
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Ok(config);
        };
        let map = value.as_object().ok_or("notify must be a mapping")?;
        for (key, item) in map {
            match key.as_str() {
                "slack" => {
                    config.slack = Some(
                        item.as_str()
                            .ok_or("notify.slack must be a URL")?
                            .to_string(),
                    )
                }
                "webhook" => {
                    config.webhook = Some(
                        item.as_str()
                            .ok_or("notify.webhook must be a URL")?
                            .to_string(),
                    )
                }
                "routes" => {
                    config.routes = item
                        .as_array()
                        .ok_or("notify.routes must be a list of routes")?
                        .iter()
                        .enumerate()
                        .map(|(i, route)| parse_route(route, &format!("notify.routes[{i}]")))
                        .collect::<Result<_, _>>()?
                }
                "window" => {
                    config.window = crate::agents::with::duration(Some(item), "notify.window")?
                        .ok_or("notify.window must be a duration such as 60s")?
                }
                "success" => {
                    config.success = item
                        .as_bool()
                        .ok_or("notify.success must be true or false")?
                }
                "max_per_run" => {
                    config.max_per_run = item
                        .as_u64()
                        .ok_or("notify.max_per_run must be a whole number")?
                        as usize
                }
                "daily_budget" => {
                    config.daily_budget = Some(
                        item.as_u64()
                            .ok_or("notify.daily_budget must be a whole number")?
                            as usize,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown key `notify.{other}` (known: routes, slack, webhook, window, success, max_per_run, daily_budget)"
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Every route, the shorthands included.
    fn all_routes(&self) -> Vec<Route> {
        let every = |destination| Route {
            min_severity: Severity::Info,
            destination,
        };
        self.slack
            .iter()
            .map(|url| every(Destination::Slack(url.clone())))
            .chain(
                self.webhook
                    .iter()
                    .map(|url| every(Destination::Webhook(url.clone()))),
            )
            .chain(self.routes.iter().cloned())
            .collect()
    }
}

fn parse_route(value: &Value, at: &str) -> Result<Route, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("{at} must be a mapping"))?;
    let min_severity = match map.get("min_severity").map(|v| v.as_str()) {
        None => Severity::Info,
        Some(Some("info")) => Severity::Info,
        Some(Some("warning")) => Severity::Warning,
        Some(Some("critical")) => Severity::Critical,
        Some(_) => {
            return Err(format!(
                "{at}.min_severity must be one of info, warning, critical"
            ));
        }
    };
    let url = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{at}.{key} must be a URL"))
    };
    let mut destinations = Vec::new();
    for key in map.keys() {
        match key.as_str() {
            "min_severity" => {}
            "slack" => destinations.push(Destination::Slack(url("slack")?)),
            "webhook" => destinations.push(Destination::Webhook(url("webhook")?)),
            "alertmanager" => destinations.push(Destination::Alertmanager(url("alertmanager")?)),
            "pagerduty" => {
                let pd = map
                    .get("pagerduty")
                    .and_then(Value::as_object)
                    .ok_or_else(|| format!("{at}.pagerduty must be a mapping with routing_key"))?;
                if let Some(unknown) = pd
                    .keys()
                    .find(|k| !matches!(k.as_str(), "routing_key" | "url"))
                {
                    return Err(format!(
                        "unknown key `{at}.pagerduty.{unknown}` (known: routing_key, url)"
                    ));
                }
                let routing_key = pd
                    .get("routing_key")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        format!("{at}.pagerduty.routing_key is required (the integration key of a PagerDuty service)")
                    })?
                    .to_string();
                let url = match pd.get("url") {
                    None => super::alert_format::PAGERDUTY_EVENTS_URL.to_string(),
                    Some(v) => v
                        .as_str()
                        .ok_or_else(|| format!("{at}.pagerduty.url must be a URL"))?
                        .to_string(),
                };
                destinations.push(Destination::PagerDuty { url, routing_key });
            }
            other => {
                return Err(format!(
                    "unknown key `{at}.{other}` (known: min_severity, slack, webhook, pagerduty, alertmanager)"
                ));
            }
        }
    }
    match destinations.len() {
        1 => Ok(Route {
            min_severity,
            destination: destinations.remove(0),
        }),
        0 => Err(format!(
            "{at} needs a destination: slack, webhook, pagerduty or alertmanager"
        )),
        _ => Err(format!(
            "{at} has several destinations: one route, one destination"
        )),
    }
}

/// Counts of what aggregation did, for the step's outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifyReport {
    pub sent: usize,
    pub deduplicated: usize,
    pub batched: usize,
    pub success_suppressed: usize,
    pub over_cap: usize,
    /// Non-critical alerts held back because the service spent its daily budget.
    pub over_budget: usize,
    pub failed_deliveries: usize,
}

pub struct Notifier {
    config: NotifyConfig,
    client: reqwest::Client,
    run_id: i64,
    service: String,
    seen: HashMap<String, Instant>,
    batch: Vec<Alert>,
    batch_started: Option<Instant>,
    report: NotifyReport,
    store: Option<crate::store::Store>,
}

impl Notifier {
    /// `store` shares de-duplication and the run's cap with other steps and runs.
    pub fn new(
        config: NotifyConfig,
        run_id: i64,
        service: &str,
        store: Option<crate::store::Store>,
    ) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Notifier {
            config,
            client,
            run_id,
            service: service.to_string(),
            seen: HashMap::new(),
            batch: Vec::new(),
            batch_started: None,
            report: NotifyReport::default(),
            store,
        }
    }

    /// Seen within the window by this notifier, or (through the store) by another step or run.
    fn duplicate(&self, key: &str, now: Instant) -> bool {
        if self
            .seen
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < self.config.window)
        {
            return true;
        }
        let window_ms = self.config.window.as_millis() as i64;
        self.store
            .as_ref()
            .and_then(|store| store.last_alert(&self.service, key).ok().flatten())
            .is_some_and(|at| crate::store::now_ms() - at < window_ms)
    }

    fn record(&self, kind: &str, key: &str) {
        if let Some(store) = &self.store
            && let Err(error) = store.record_notification(self.run_id, &self.service, kind, key)
        {
            tracing::warn!(%error, "failed to record a notification");
        }
    }

    pub fn report(&self) -> &NotifyReport {
        &self.report
    }

    fn enabled(&self) -> bool {
        self.config.slack.is_some()
            || self.config.webhook.is_some()
            || !self.config.routes.is_empty()
    }

    /// Messages `service` sent today (UTC), from every run and step.
    fn sent_today(&self) -> usize {
        let day_start = crate::store::now_ms() / 86_400_000 * 86_400_000;
        match &self.store {
            Some(store) => store
                .messages_since(&self.service, day_start)
                .unwrap_or(self.report.sent),
            None => self.report.sent,
        }
    }

    pub async fn notify(&mut self, alert: Alert) {
        if !self.enabled() {
            return;
        }
        if alert.success && !self.config.success {
            self.report.success_suppressed += 1;
            return;
        }
        let now = Instant::now();
        if self.duplicate(&alert.key, now) {
            self.report.deduplicated += 1;
            return;
        }
        self.seen.insert(alert.key.clone(), now);
        self.record("alert", &alert.key);
        if alert.severity == Severity::Critical {
            self.send(vec![alert]).await;
            return;
        }
        self.report.batched += 1;
        self.batch.push(alert);
        let started = *self.batch_started.get_or_insert(now);
        if now.duration_since(started) >= self.config.window {
            self.flush().await;
        }
    }

    /// Sends what is batched (at the end of the step, or when the window is full).
    pub async fn flush(&mut self) {
        self.batch_started = None;
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            self.send(batch).await;
        }
    }

    async fn send(&mut self, alerts: Vec<Alert>) {
        let sent_by_run = match &self.store {
            Some(store) => store.messages_sent(self.run_id).unwrap_or(self.report.sent),
            None => self.report.sent,
        };
        if sent_by_run >= self.config.max_per_run {
            self.report.over_cap += alerts.len();
            return;
        }
        let critical = alerts.iter().any(|a| a.severity == Severity::Critical);
        if !critical
            && let Some(budget) = self.config.daily_budget
            && self.sent_today() >= budget
        {
            self.report.over_budget += alerts.len();
            return;
        }
        self.report.sent += 1;
        self.record("message", "");
        let mut deliveries = Vec::new();
        for route in self.config.all_routes() {
            let chosen: Vec<Alert> = alerts
                .iter()
                .filter(|a| a.severity >= route.min_severity)
                .cloned()
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let lines: Vec<String> = chosen
                .iter()
                .map(|a| format!("[{:?}] {}: {}", a.severity, a.title, a.text))
                .collect();
            let text = format!(
                "cairn run {} · {}\n{}",
                self.run_id,
                self.service,
                lines.join("\n")
            );
            match route.destination {
                Destination::Slack(url) => deliveries.push((url, alert_format::slack(&text))),
                Destination::Webhook(url) => deliveries.push((
                    url,
                    alert_format::webhook(self.run_id, &self.service, &chosen, &text),
                )),
                Destination::Alertmanager(url) => deliveries.push((
                    url,
                    alert_format::alertmanager(
                        self.run_id,
                        &self.service,
                        &chosen,
                        chrono::Utc::now(),
                    ),
                )),
                // PagerDuty takes one event per alert.
                Destination::PagerDuty { url, routing_key } => {
                    for alert in &chosen {
                        deliveries.push((
                            url.clone(),
                            alert_format::pagerduty_event(
                                &routing_key,
                                self.run_id,
                                &self.service,
                                alert,
                            ),
                        ));
                    }
                }
            }
        }
        for (url, body) in deliveries {
            let delivered = self
                .client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().is_success());
            if !matches!(delivered, Ok(true)) {
                self.report.failed_deliveries += 1;
                tracing::warn!(%url, ?delivered, "failed to deliver a notification");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_defaults_and_typos() {
        let config = NotifyConfig::from_value(None).expect("defaults");
        assert_eq!(
            (config.window, config.max_per_run, config.success),
            (Duration::from_secs(60), 20, false)
        );
        let config = NotifyConfig::from_value(Some(
            &json!({ "slack": "http://127.0.0.1:1/x", "window": "5s" }),
        ))
        .expect("valid");
        assert_eq!(config.window, Duration::from_secs(5));
        assert!(
            NotifyConfig::from_value(Some(&json!({ "slak": "x" })))
                .is_err_and(|e| e.contains("notify.slak"))
        );
        let routed = NotifyConfig::from_value(Some(&json!({
            "routes": [
                { "min_severity": "critical", "pagerduty": { "routing_key": "k" } },
                { "alertmanager": "http://127.0.0.1:1/hook" },
            ],
            "daily_budget": 5,
        })))
        .expect("routes");
        assert_eq!(routed.daily_budget, Some(5));
        assert_eq!(
            routed.routes[0],
            Route {
                min_severity: Severity::Critical,
                destination: Destination::PagerDuty {
                    url: alert_format::PAGERDUTY_EVENTS_URL.into(),
                    routing_key: "k".into()
                }
            }
        );
        for (bad, expected) in [
            (
                json!({ "routes": [{ "min_severity": "page" , "slack": "x" }] }),
                "routes[0].min_severity",
            ),
            (
                json!({ "routes": [{ "pagerduty": {} }] }),
                "routes[0].pagerduty.routing_key",
            ),
            (
                json!({ "routes": [{ "min_severity": "info" }] }),
                "needs a destination",
            ),
            (
                json!({ "routes": [{ "slack": "x", "webhook": "y" }] }),
                "several destinations",
            ),
        ] {
            let error = NotifyConfig::from_value(Some(&bad)).expect_err("invalid route");
            assert!(error.contains(expected), "{error}");
        }
    }
}
