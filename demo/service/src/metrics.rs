//! Request counters by path and status, and a request latency histogram, in the Prometheus
//! text exposition format. Paths outside the known routes count as `other`, so a scanner
//! cannot grow the label set without bound.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds, Prometheus' default buckets.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const ROUTES: &[&str] = &["/", "/healthz", "/metrics"];

pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Cumulative counts per bucket, then `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
    random: AtomicU64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            buckets: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
            random: AtomicU64::new(seed),
        }
    }

    pub fn observe(&self, path: &str, status: u16, elapsed: Duration) {
        let path = path.split('?').next().unwrap_or(path);
        let route = ROUTES
            .iter()
            .copied()
            .find(|r| *r == path)
            .unwrap_or("other");
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route, status)).or_insert(0) += 1;
        }
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self
            .buckets
            .iter()
            .zip(BUCKETS.iter().copied().chain([f64::INFINITY]))
        {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A uniform number in [0, 1) (xorshift64: fault injection needs no better).
    pub fn roll(&self) -> f64 {
        let mut x = self.random.load(Ordering::Relaxed);
        loop {
            let mut next = x;
            next ^= next << 13;
            next ^= next >> 7;
            next ^= next << 17;
            match self
                .random
                .compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (next >> 11) as f64 / (1u64 << 53) as f64,
                Err(current) => x = current,
            }
        }
    }

    pub fn render(&self, version: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP demo_build_info The running version.\n# TYPE demo_build_info gauge\n");
        out.push_str(&format!(
            "demo_build_info{{version=\"{}\"}} 1\n",
            version.replace(['"', '\\', '\n'], "_")
        ));
        out.push_str("# HELP demo_http_requests_total Requests answered, by path and status.\n# TYPE demo_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((path, status), count) in requests.iter() {
                out.push_str(&format!(
                    "demo_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {count}\n"
                ));
            }
        }
        out.push_str("# HELP demo_http_request_duration_seconds Time to answer a request.\n# TYPE demo_http_request_duration_seconds histogram\n");
        for (bucket, bound) in self.buckets.iter().zip(
            BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()]),
        ) {
            out.push_str(&format!(
                "demo_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}\n",
                bucket.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "demo_http_request_duration_seconds_sum {}\ndemo_http_request_duration_seconds_count {}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram() {
        let metrics = Metrics::new();
        metrics.observe("/", 200, Duration::from_millis(3));
        metrics.observe("/", 500, Duration::from_millis(30));
        metrics.observe("/wp-admin", 404, Duration::from_millis(1));
        let text = metrics.render("v1");
        assert!(
            text.contains("demo_http_requests_total{path=\"/\",status=\"500\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("demo_http_requests_total{path=\"other\",status=\"404\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("demo_http_request_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("demo_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("demo_http_request_duration_seconds_count 3"),
            "{text}"
        );
        let rolls: Vec<f64> = (0..100).map(|_| metrics.roll()).collect();
        assert!(rolls.iter().all(|r| (0.0..1.0).contains(r)));
    }
}
