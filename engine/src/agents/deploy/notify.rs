//! Notifications to Slack-compatible incoming webhooks (`{"text": …}`) and to a generic JSON
//! webhook, with aggregation so people read them: the same alert (same key) within the window
//! is sent once; low-severity alerts are batched into one message per window; routine success
//! is suppressed unless asked for; failures and rollbacks go out at once; and no run sends more
//! than `max_per_run` messages (what was held back is counted in the report). With the store,
//! both hold across the steps of a run and across runs (`store/notifications.rs`).
//!
//! A webhook that fails is logged and counted, never a reason to fail or undo a deploy.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

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

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotifyConfig {
    pub slack: Option<String>,
    pub webhook: Option<String>,
    pub window: Duration,
    pub success: bool,
    pub max_per_run: usize,
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
                "window" => {
                    config.window = super::config::duration_value(Some(item), "notify.window")?
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
                other => {
                    return Err(format!(
                        "unknown key `notify.{other}` (known: slack, webhook, window, success, max_per_run)"
                    ));
                }
            }
        }
        Ok(config)
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
        self.config.slack.is_some() || self.config.webhook.is_some()
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
        self.report.sent += 1;
        self.record("message", "");
        let lines: Vec<String> = alerts
            .iter()
            .map(|a| format!("[{:?}] {}: {}", a.severity, a.title, a.text))
            .collect();
        let text = format!(
            "cairn run {} · {}\n{}",
            self.run_id,
            self.service,
            lines.join("\n")
        );
        let mut deliveries = Vec::new();
        if let Some(url) = &self.config.slack {
            deliveries.push((url.clone(), json!({ "text": text })));
        }
        if let Some(url) = &self.config.webhook {
            deliveries.push((url.clone(), json!({ "source": "cairn", "run_id": self.run_id, "service": self.service, "alerts": alerts, "text": text })));
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
    }
}
