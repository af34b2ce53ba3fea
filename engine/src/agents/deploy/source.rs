//! Where a replica's metrics come from: its own `/metrics` endpoint (the default: one scrape
//! per replica on its loopback address), or a Prometheus server's HTTP API when the platform
//! already runs one (`with: prometheus: { url: …, selector: 'instance="{address}"' }`).
//!
//! Through Prometheus the same counters and histogram buckets are read with one instant query
//! per replica, so the analysis is identical; what changes is freshness (one scrape interval,
//! plus service discovery's delay for a new replica). `targets_file`, when set, is a
//! `file_sd_configs` file Cairn keeps listing the service's replicas, so a Prometheus without
//! Docker discovery finds them.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::docker::Replica;
use super::metrics::{Sample, Snapshot};
use super::probe;

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsSource {
    Endpoint {
        path: String,
    },
    Prometheus {
        url: String,
        selector: String,
        targets_file: Option<PathBuf>,
    },
}

impl MetricsSource {
    /// `metrics_path` and `prometheus` of a `with:` block (or of a deploy step's outputs).
    pub fn from_map(map: &Map<String, Value>) -> Result<MetricsSource, String> {
        match map.get("prometheus") {
            None | Some(Value::Null) => Ok(MetricsSource::Endpoint {
                path: map
                    .get("metrics_path")
                    .and_then(Value::as_str)
                    .unwrap_or("/metrics")
                    .to_string(),
            }),
            Some(Value::String(url)) => Ok(MetricsSource::Prometheus {
                url: url.trim_end_matches('/').to_string(),
                selector: DEFAULT_SELECTOR.into(),
                targets_file: None,
            }),
            Some(Value::Object(settings)) => {
                for key in settings.keys() {
                    if !["url", "selector", "targets_file"].contains(&key.as_str()) {
                        return Err(format!(
                            "prometheus.{key}: unknown key (expected url, selector, targets_file)"
                        ));
                    }
                }
                let url = settings
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or("prometheus.url: the Prometheus server's base URL is required")?;
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(format!(
                        "prometheus.url `{url}` must start with http:// or https://"
                    ));
                }
                let selector = settings
                    .get("selector")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_SELECTOR)
                    .to_string();
                if !selector.contains("{address}") && !selector.contains("{name}") {
                    return Err(format!(
                        "prometheus.selector `{selector}` must name the replica with {{address}} or {{name}}"
                    ));
                }
                Ok(MetricsSource::Prometheus {
                    url: url.trim_end_matches('/').to_string(),
                    selector,
                    targets_file: settings
                        .get("targets_file")
                        .and_then(Value::as_str)
                        .map(PathBuf::from),
                })
            }
            Some(_) => Err("prometheus must be a URL or { url, selector, targets_file }".into()),
        }
    }

    /// For the deploy step's outputs, so the monitor step reads the same source.
    pub fn to_outputs(&self) -> (Value, Value) {
        match self {
            MetricsSource::Endpoint { path } => (json!(path), Value::Null),
            MetricsSource::Prometheus {
                url,
                selector,
                targets_file,
            } => (
                json!("/metrics"),
                json!({ "url": url, "selector": selector, "targets_file": targets_file }),
            ),
        }
    }

    pub async fn snapshot(&self, client: &reqwest::Client, replica: &Replica) -> Option<Snapshot> {
        match self {
            MetricsSource::Endpoint { path } => probe::scrape(client, &replica.address, path).await,
            MetricsSource::Prometheus { url, selector, .. } => {
                let selector = selector
                    .replace("{address}", &replica.address)
                    .replace("{name}", &replica.name);
                let query = format!(
                    "{{__name__=~\".+_requests_total|.+_request_duration_seconds_bucket\", {selector}}}"
                );
                let response = client
                    .get(format!("{url}/api/v1/query"))
                    .query(&[("query", query.as_str())])
                    .send()
                    .await
                    .ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let body: Value = response.json().await.ok()?;
                let results = body.get("data")?.get("result")?.as_array()?;
                if results.is_empty() {
                    // Not scraped yet: no evidence, rather than zero requests.
                    return None;
                }
                Some(Snapshot::from_samples(results.iter().filter_map(sample)))
            }
        }
    }

    /// The sum over `replicas` (a replica without data adds nothing).
    pub async fn total(&self, client: &reqwest::Client, replicas: &[Replica]) -> Snapshot {
        let mut total = Snapshot::default();
        for replica in replicas {
            if let Some(snapshot) = self.snapshot(client, replica).await {
                total.add(&snapshot);
            }
        }
        total
    }

    /// Rewrites the `file_sd_configs` targets file (when there is one) to list `replicas`.
    pub fn publish_targets(&self, service: &str, replicas: &[Replica]) -> Result<(), String> {
        let MetricsSource::Prometheus {
            targets_file: Some(path),
            ..
        } = self
        else {
            return Ok(());
        };
        let groups: Vec<Value> = replicas
            .iter()
            .map(|r| json!({ "targets": [r.address], "labels": { "cairn_service": service, "cairn_replica": r.name } }))
            .collect();
        let text = serde_json::to_string_pretty(&groups).map_err(|e| e.to_string())?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| {
                format!(
                    "cannot write the Prometheus targets file {}: {e}",
                    path.display()
                )
            })
    }
}

const DEFAULT_SELECTOR: &str = "instance=\"{address}\"";

/// One element of an instant vector: `{"metric": {"__name__": …, labels…}, "value": [t, "v"]}`.
fn sample(item: &Value) -> Option<Sample> {
    let metric = item.get("metric")?.as_object()?;
    let name = metric.get("__name__")?.as_str()?.to_string();
    let labels = metric
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let value = match item.get("value")?.get(1)?.as_str()? {
        "+Inf" => f64::INFINITY,
        text => text.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_instant_vector() {
        let item = json!({"metric": {"__name__": "demo_http_requests_total", "path": "/", "status": "500", "instance": "127.0.0.1:1"}, "value": [1.0, "7"]});
        let parsed = sample(&item).expect("a sample");
        assert_eq!(
            (
                parsed.name.as_str(),
                parsed.value,
                parsed.labels["status"].as_str()
            ),
            ("demo_http_requests_total", 7.0, "500")
        );
        let snapshot = Snapshot::from_samples([parsed]);
        assert_eq!((snapshot.requests, snapshot.errors), (7.0, 7.0));
    }

    #[test]
    fn settings_are_checked() {
        let map = |v: Value| v.as_object().cloned().expect("object");
        assert!(MetricsSource::from_map(&map(json!({"prometheus": {"url": "ftp://x"}}))).is_err());
        assert!(
            MetricsSource::from_map(&map(
                json!({"prometheus": {"url": "http://x", "selector": "job=\"a\""}})
            ))
            .is_err()
        );
        assert!(
            MetricsSource::from_map(&map(json!({"prometheus": {"url": "http://x", "step": 1}})))
                .is_err()
        );
        let source =
            MetricsSource::from_map(&map(json!({"prometheus": "http://p:9090/"}))).expect("valid");
        assert_eq!(
            source,
            MetricsSource::Prometheus {
                url: "http://p:9090".into(),
                selector: DEFAULT_SELECTOR.into(),
                targets_file: None
            }
        );
    }
}
