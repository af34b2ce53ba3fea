//! A small parser for the Prometheus text exposition format (version 0.0.4) and the
//! [`Snapshot`] the canary analysis needs: requests and server errors from a
//! `*_requests_total{status=…}` counter, latency from a `*_request_duration_seconds` histogram.
//!
//! Latency samples come from the histogram buckets, not from the proxy: each replica measures
//! its own requests, so the split between canary and baseline is exact (one scrape per
//! replica, loopback), no proxy log pipeline is needed, and the counters survive a scrape that
//! fails (the next delta covers both intervals). The price is resolution: a sample is known
//! only to its bucket, which the Mann-Whitney test handles as ties (see `stats.rs`).

use std::collections::BTreeMap;

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the exposition text; comment lines and malformed lines are skipped (a scrape is
/// evidence, and one odd line must not discard the rest).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].rfind('}')? + open;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next(); // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
}

/// A latency histogram: cumulative counts by upper bound (seconds), `+Inf` last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Per-bucket (not cumulative) counts.
    pub fn counts(&self) -> Vec<f64> {
        let mut previous = 0.0;
        self.buckets
            .iter()
            .map(|(_, cumulative)| {
                let count = (cumulative - previous).max(0.0);
                previous = *cumulative;
                count
            })
            .collect()
    }

    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile by linear interpolation inside the bucket, as Prometheus'
    /// `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for (bound, cumulative) in &self.buckets {
            if *cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let inside = cumulative - lower_count;
                let share = if inside > 0.0 {
                    (rank - lower_count) / inside
                } else {
                    0.0
                };
                return Some(lower_bound + (bound - lower_bound) * share);
            }
            lower_bound = *bound;
            lower_count = *cumulative;
        }
        Some(lower_bound)
    }

    /// Mean from bucket midpoints (the `+Inf` bucket counts at its lower bound).
    pub fn mean(&self) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let mut lower = 0.0;
        let mut sum = 0.0;
        for ((bound, _), count) in self.buckets.iter().zip(self.counts()) {
            let mid = if bound.is_infinite() {
                lower
            } else {
                (lower + bound) / 2.0
            };
            sum += mid * count;
            lower = *bound;
        }
        Some(sum / total)
    }

    fn minus(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(bound, count)| {
                    let before = earlier
                        .buckets
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (*bound, (count - before).max(0.0))
                })
                .collect(),
        }
    }
}

/// What one scrape of one replica says, or the difference of two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Requests to the application (health and metrics paths excluded).
    pub requests: f64,
    /// Of those, answered with a 5xx status.
    pub errors: f64,
    pub latency: Histogram,
}

/// Paths that are the probes' own traffic, not users'.
const PROBE_PATHS: &[&str] = &["/healthz", "/metrics"];

impl Snapshot {
    pub fn from_text(text: &str) -> Snapshot {
        Snapshot::from_samples(parse_exposition(text))
    }

    /// From samples of a scrape, or of a Prometheus server's instant query.
    pub fn from_samples(samples: impl IntoIterator<Item = Sample>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for sample in samples {
            if sample.name.ends_with("_requests_total") {
                if sample
                    .labels
                    .get("path")
                    .is_some_and(|p| PROBE_PATHS.contains(&p.as_str()))
                {
                    continue;
                }
                snapshot.requests += sample.value;
                if sample
                    .labels
                    .get("status")
                    .is_some_and(|s| s.starts_with('5'))
                {
                    snapshot.errors += sample.value;
                }
            } else if sample.name.ends_with("_request_duration_seconds_bucket")
                && let Some(bound) = sample.labels.get("le").and_then(|le| {
                    if le == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        le.parse().ok()
                    }
                })
            {
                snapshot.latency.buckets.push((bound, sample.value));
            }
        }
        snapshot.latency.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        snapshot
    }

    /// What happened between `earlier` and `self` (counter resets count from zero).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        if self.requests < earlier.requests {
            return self.clone();
        }
        Snapshot {
            requests: self.requests - earlier.requests,
            errors: (self.errors - earlier.errors).max(0.0),
            latency: self.latency.minus(&earlier.latency),
        }
    }

    pub fn add(&mut self, other: &Snapshot) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.buckets.is_empty() {
            self.latency = other.latency.clone();
        } else {
            for (bound, count) in &mut self.latency.buckets {
                *count += other
                    .latency
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0.0, |(_, c)| *c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE demo_http_requests_total counter\ndemo_http_requests_total{path=\"/\",status=\"200\"} 90\ndemo_http_requests_total{path=\"/\",status=\"500\"} 10\ndemo_http_requests_total{path=\"/healthz\",status=\"200\"} 7\ndemo_http_request_duration_seconds_bucket{le=\"0.005\"} 50\ndemo_http_request_duration_seconds_bucket{le=\"0.01\"} 100\ndemo_http_request_duration_seconds_bucket{le=\"+Inf\"} 107\ndemo_http_request_duration_seconds_count 107\n";

    #[test]
    fn parses_counters_and_histograms() {
        let samples = parse_exposition(
            "a{b=\"c\\\"d\",e=\"f\"} 1.5 1700000000\nplain 2\n# comment\nbroken{ x\n",
        );
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["b"], "c\"d");
        let snapshot = Snapshot::from_text(TEXT);
        assert_eq!((snapshot.requests, snapshot.errors), (100.0, 10.0));
        assert_eq!(snapshot.latency.counts(), vec![50.0, 50.0, 7.0]);
        let median = snapshot.latency.quantile(0.5).expect("median");
        assert!((median - 0.005).abs() < 1e-3, "{median}");
        let delta = snapshot.since(&Snapshot::from_text(&TEXT.replace("} 90", "} 40")));
        assert_eq!(delta.requests, 50.0);
    }
}
