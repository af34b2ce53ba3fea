//! HTTP probes of one replica on its loopback address: the health check a replica must pass
//! before it gets traffic, and the metrics scrape the canary analysis reads.

use std::time::Duration;

use super::metrics::Snapshot;

/// One client for all probes: short timeouts, and never an environment proxy (probes go to
/// loopback addresses only).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `GET http://address{path}` answered 2xx.
pub async fn healthy(client: &reqwest::Client, address: &str, path: &str) -> bool {
    match client.get(format!("http://{address}{path}")).send().await {
        Ok(response) => response.status().is_success(),
        Err(_) => false,
    }
}

/// Polls until the replica is healthy `successes` times in a row, or `timeout` passes.
/// Returns how long it took, or the last failure.
pub async fn wait_healthy(
    client: &reqwest::Client,
    address: &str,
    path: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = tokio::time::Instant::now();
    let mut streak = 0;
    while started.elapsed() < timeout {
        if healthy(client, address, path).await {
            streak += 1;
            if streak >= 2 {
                return Ok(started.elapsed());
            }
        } else {
            streak = 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{address}{path} not healthy within {:.1} s",
        timeout.as_secs_f64()
    ))
}

pub async fn scrape(client: &reqwest::Client, address: &str, path: &str) -> Option<Snapshot> {
    let response = client
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(Snapshot::from_text(&response.text().await.ok()?))
}
