//! The wire formats of the alert destinations (`notify.rs` routes to them): Slack-compatible
//! incoming webhooks (`{"text": …}`), Cairn's generic JSON webhook, PagerDuty's Events API v2
//! (one `trigger` event per alert, `dedup_key` so PagerDuty folds repeats into one incident)
//! and Alertmanager's webhook format (version 4, what Alertmanager itself posts to its webhook
//! receivers, so any tool that takes those takes Cairn's). Pure functions of the message.

use chrono::SecondsFormat;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::notify::{Alert, Severity};

/// Where PagerDuty's Events API v2 takes events.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The key that makes repeats of one alert one incident (PagerDuty) or one alert
/// (Alertmanager's `alertname`): the service and the alert's own key.
pub fn dedup_key(service: &str, alert: &Alert) -> String {
    format!("cairn/{service}/{}", alert.key)
}

pub fn slack(text: &str) -> Value {
    json!({ "text": text })
}

pub fn webhook(run_id: i64, service: &str, alerts: &[Alert], text: &str) -> Value {
    json!({ "source": "cairn", "run_id": run_id, "service": service, "alerts": alerts, "text": text })
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// One PagerDuty Events API v2 event: `trigger` for a problem, `resolve` for a success (it
/// closes the incident a problem with the same key opened).
pub fn pagerduty_event(routing_key: &str, run_id: i64, service: &str, alert: &Alert) -> Value {
    let summary: String = format!("{}: {}", alert.title, alert.text)
        .chars()
        .take(1024)
        .collect();
    json!({
        "routing_key": routing_key,
        "event_action": if alert.success { "resolve" } else { "trigger" },
        "dedup_key": dedup_key(service, alert),
        "payload": {
            "summary": summary,
            "source": format!("cairn/{service}"),
            "severity": severity_name(alert.severity),
            "component": service,
            "group": format!("run {run_id}"),
            "class": alert.key.split(':').next().unwrap_or(&alert.key),
            "custom_details": { "run_id": run_id, "title": alert.title, "text": alert.text },
        },
        "client": "cairn",
    })
}

/// One Alertmanager webhook message (version 4) for the alerts of one send.
pub fn alertmanager(
    run_id: i64,
    service: &str,
    alerts: &[Alert],
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let stamp = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let items: Vec<Value> = alerts
        .iter()
        .map(|alert| {
            let labels = json!({
                "alertname": dedup_key(service, alert),
                "service": service,
                "severity": severity_name(alert.severity),
            });
            let fingerprint = hex::encode(&Sha256::digest(labels.to_string().as_bytes())[..8]);
            json!({
                "status": if alert.success { "resolved" } else { "firing" },
                "labels": labels,
                "annotations": { "summary": alert.title, "description": alert.text, "run_id": run_id.to_string() },
                "startsAt": stamp,
                "endsAt": if alert.success { stamp.clone() } else { "0001-01-01T00:00:00Z".to_string() },
                "generatorURL": "",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    let firing = alerts.iter().any(|a| !a.success);
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{service=\"{service}\"}}"),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": "cairn",
        "groupLabels": { "service": service },
        "commonLabels": { "service": service },
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(severity: Severity, success: bool) -> Alert {
        Alert {
            severity,
            key: "rollback:shop".into(),
            title: "shop v2 rolled back".into(),
            text: "error rate 5%".into(),
            success,
        }
    }

    #[test]
    fn pagerduty_events_follow_the_v2_schema() {
        let event = pagerduty_event("k", 7, "shop", &alert(Severity::Critical, false));
        assert_eq!(event["event_action"], "trigger");
        assert_eq!(event["dedup_key"], "cairn/shop/rollback:shop");
        assert_eq!(event["payload"]["severity"], "critical");
        assert_eq!(
            event["payload"]["summary"],
            "shop v2 rolled back: error rate 5%"
        );
        assert_eq!(event["payload"]["source"], "cairn/shop");
        let resolved = pagerduty_event("k", 7, "shop", &alert(Severity::Info, true));
        assert_eq!(resolved["event_action"], "resolve");
    }

    #[test]
    fn alertmanager_messages_follow_the_webhook_format() {
        let now = chrono::DateTime::from_timestamp(1_764_720_000, 0).expect("instant");
        let body = alertmanager(7, "shop", &[alert(Severity::Warning, false)], now);
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        let first = &body["alerts"][0];
        assert_eq!(first["labels"]["severity"], "warning");
        assert_eq!(first["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(first["startsAt"], "2025-12-03T00:00:00.000Z");
        assert_eq!(first["fingerprint"].as_str().map(str::len), Some(16));
    }
}
