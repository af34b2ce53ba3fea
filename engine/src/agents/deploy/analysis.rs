//! The canary verdict: canary against baseline over the same interval, with minimum sample
//! sizes. Fail needs both statistical significance (`alpha`) and a difference that matters
//! (`max_error_rate_delta`, `max_latency_ratio`), so a large sample cannot fail a canary for a
//! negligible difference. Too few requests on either side is `inconclusive`, with the counts —
//! never a silent pass — unless the errors already seen are significant: the error test is
//! exact for small counts (Fisher), so 2 errors in 33 canary requests against none in 340 is
//! evidence (p ≈ 0.008) and fails the canary for its error rate, not for thin traffic. Latency
//! is never judged below `min_samples` (bucketed latencies give the rank test little to go
//! on). Every verdict carries the values it was based on.

use serde::Serialize;

use super::metrics::Snapshot;
use super::stats::{TestResult, mann_whitney_from_buckets, two_proportion_z};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Requests per side below which no verdict but `inconclusive` is given.
    pub min_samples: u64,
    pub alpha: f64,
    pub max_error_rate_delta: f64,
    pub max_latency_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

/// One side's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub latency_samples: u64,
    pub latency_mean_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

impl Side {
    fn of(snapshot: &Snapshot) -> Side {
        let ms = |v: Option<f64>| v.map(|s| (s * 1e6).round() / 1e3);
        Side {
            requests: snapshot.requests as u64,
            errors: snapshot.errors as u64,
            error_rate: if snapshot.requests > 0.0 {
                snapshot.errors / snapshot.requests
            } else {
                0.0
            },
            latency_samples: snapshot.latency.total() as u64,
            latency_mean_ms: ms(snapshot.latency.mean()),
            latency_p50_ms: ms(snapshot.latency.quantile(0.5)),
            latency_p95_ms: ms(snapshot.latency.quantile(0.95)),
            latency_p99_ms: ms(snapshot.latency.quantile(0.99)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub reasons: Vec<String>,
    pub canary: Side,
    pub baseline: Side,
    pub error_rate_test: TestResult,
    pub latency_test: TestResult,
    pub latency_ratio: Option<f64>,
    pub thresholds: Thresholds,
    /// The canary fails for its error rate.
    #[serde(skip)]
    pub errors_regressed: bool,
    /// The canary's latency is significantly and materially worse, over enough requests.
    #[serde(skip)]
    pub latency_regressed: bool,
}

impl Verdict {
    /// Worse-looking at all (before any significance): marks the onset of an anomaly.
    pub fn anomalous(&self) -> bool {
        self.canary.errors > 0
            && self.canary.error_rate
                > self.baseline.error_rate + self.thresholds.max_error_rate_delta
            || self
                .latency_ratio
                .is_some_and(|r| r > self.thresholds.max_latency_ratio)
    }

    pub fn summary(&self) -> String {
        format!(
            "{:?}: canary {} req, {} errors ({:.2}%), mean {:.1} ms; baseline {} req, {} errors ({:.2}%), mean {:.1} ms; error p={:.4}, latency U={:.0} p={:.4}{}",
            self.outcome,
            self.canary.requests,
            self.canary.errors,
            self.canary.error_rate * 100.0,
            self.canary.latency_mean_ms.unwrap_or(0.0),
            self.baseline.requests,
            self.baseline.errors,
            self.baseline.error_rate * 100.0,
            self.baseline.latency_mean_ms.unwrap_or(0.0),
            self.error_rate_test.p_value,
            self.latency_test.statistic,
            self.latency_test.p_value,
            if self.reasons.is_empty() {
                String::new()
            } else {
                format!(" — {}", self.reasons.join("; "))
            },
        )
    }
}

/// A canary slower than its baseline by less than this is not a regression, whatever the
/// ratio: a service answering in 2 ms doubles its mean when the machine is busy, and nobody
/// would roll back for 2 ms (a good canary was rolled back so on a loaded CI machine).
const MIN_LATENCY_DELTA_MS: f64 = 5.0;

pub fn analyse(canary: &Snapshot, baseline: &Snapshot, thresholds: Thresholds) -> Verdict {
    let (c, b) = (Side::of(canary), Side::of(baseline));
    let error_rate_test = two_proportion_z(
        canary.errors,
        canary.requests,
        baseline.errors,
        baseline.requests,
    );
    let latency_test =
        mann_whitney_from_buckets(&canary.latency.counts(), &aligned(baseline, canary));
    let latency_ratio = match (c.latency_mean_ms, b.latency_mean_ms) {
        (Some(cm), Some(bm)) if bm > 0.0 => Some(cm / bm),
        _ => None,
    };
    let mut reasons = Vec::new();
    let enough = c.requests >= thresholds.min_samples && b.requests >= thresholds.min_samples;
    let errors_regressed = error_rate_test.p_value < thresholds.alpha
        && error_rate_test.statistic > thresholds.max_error_rate_delta;
    if errors_regressed {
        reasons.push(format!(
            "error rate {:.2}% vs baseline {:.2}% (z={:.2}, p={:.2e} < {})",
            c.error_rate * 100.0,
            b.error_rate * 100.0,
            error_rate_test.z,
            error_rate_test.p_value,
            thresholds.alpha
        ));
    }
    let latency_delta = c.latency_mean_ms.unwrap_or(0.0) - b.latency_mean_ms.unwrap_or(0.0);
    let latency_regressed = latency_test.p_value < thresholds.alpha
        && latency_ratio.is_some_and(|r| r > thresholds.max_latency_ratio)
        && latency_delta >= MIN_LATENCY_DELTA_MS;
    if latency_regressed {
        reasons.push(format!(
            "latency mean {:.1} ms vs baseline {:.1} ms (×{:.1}; Mann-Whitney U={:.0}, p={:.2e} < {})",
            c.latency_mean_ms.unwrap_or(0.0),
            b.latency_mean_ms.unwrap_or(0.0),
            latency_ratio.unwrap_or(0.0),
            latency_test.statistic,
            latency_test.p_value,
            thresholds.alpha
        ));
    }
    let errors_significant = !reasons.is_empty() && reasons[0].starts_with("error rate");
    let outcome = if !enough && errors_significant {
        // The evidence that exists already decides: waiting for more traffic would only send
        // more requests to a release that errs.
        reasons.truncate(1);
        reasons[0].push_str(&format!(
            " at {} canary requests, before the {} a full verdict needs",
            c.requests, thresholds.min_samples
        ));
        Outcome::Fail
    } else if !enough {
        reasons.clear();
        reasons.push(format!(
            "too little traffic: canary {} and baseline {} requests, {} needed on each side",
            c.requests, b.requests, thresholds.min_samples
        ));
        Outcome::Inconclusive
    } else if reasons.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    Verdict {
        outcome,
        reasons,
        canary: c,
        baseline: b,
        error_rate_test,
        latency_test,
        latency_ratio,
        thresholds,
        errors_regressed: errors_regressed && outcome == Outcome::Fail,
        latency_regressed: latency_regressed && enough,
    }
}

/// The baseline's bucket counts in the canary's bucket order (both come from the same
/// service, but a bucket missing on one side must not shift the other).
fn aligned(baseline: &Snapshot, canary: &Snapshot) -> Vec<f64> {
    let counts = baseline.latency.counts();
    canary
        .latency
        .buckets
        .iter()
        .map(|(bound, _)| {
            baseline
                .latency
                .buckets
                .iter()
                .position(|(b, _)| b == bound)
                .map_or(0.0, |i| counts[i])
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agents::deploy::metrics::Histogram;

    /// `requests` of which `errors` failed, `fast` answered under 5 ms and `slow` from 5 to
    /// 250 ms.
    pub(crate) fn side(requests: f64, errors: f64, fast: f64, slow: f64) -> Snapshot {
        Snapshot {
            requests,
            errors,
            latency: Histogram {
                buckets: vec![
                    (0.005, fast),
                    (0.25, fast + slow),
                    (f64::INFINITY, fast + slow),
                ],
            },
        }
    }

    pub(crate) const T: Thresholds = Thresholds {
        min_samples: 50,
        alpha: 0.01,
        max_error_rate_delta: 0.01,
        max_latency_ratio: 1.5,
    };

    #[test]
    fn verdicts() {
        let good = analyse(
            &side(100.0, 0.0, 100.0, 0.0),
            &side(900.0, 1.0, 900.0, 0.0),
            T,
        );
        assert_eq!(good.outcome, Outcome::Pass, "{}", good.summary());
        let slow = analyse(
            &side(100.0, 0.0, 0.0, 100.0),
            &side(900.0, 0.0, 900.0, 0.0),
            T,
        );
        assert_eq!(slow.outcome, Outcome::Fail, "{}", slow.summary());
        assert!(slow.anomalous());
        let erring = analyse(
            &side(200.0, 12.0, 200.0, 0.0),
            &side(900.0, 0.0, 900.0, 0.0),
            T,
        );
        assert_eq!(erring.outcome, Outcome::Fail, "{}", erring.summary());
        // Too few requests and no evidence either way (5 errors in 10 would be evidence:
        // see `significant_errors_decide_before_min_samples`).
        let thin = analyse(
            &side(10.0, 0.0, 10.0, 0.0),
            &side(900.0, 0.0, 900.0, 0.0),
            T,
        );
        assert_eq!(thin.outcome, Outcome::Inconclusive);
        assert!(
            thin.reasons[0].contains("canary 10 and baseline 900"),
            "{:?}",
            thin.reasons
        );
    }

    /// The demo case: 33 canary requests against 340 baseline ones. Two errors are
    /// already significant (Fisher, p = C(33,2)/C(373,2) ≈ 0.0076 < 0.01) and fail the canary
    /// for its error rate; one error is chance (p ≈ 0.088), so the verdict waits for traffic.
    #[test]
    fn significant_errors_decide_before_min_samples() {
        let erring = analyse(
            &side(33.0, 2.0, 33.0, 0.0),
            &side(340.0, 0.0, 340.0, 0.0),
            T,
        );
        assert_eq!(erring.outcome, Outcome::Fail, "{}", erring.summary());
        assert_eq!(erring.error_rate_test.method, "fisher");
        assert!(
            (erring.error_rate_test.p_value - 528.0 / 69_378.0).abs() < 1e-9,
            "{:?}",
            erring.error_rate_test
        );
        assert!(
            erring.reasons[0].starts_with("error rate")
                && erring.reasons[0].contains("at 33 canary requests"),
            "{:?}",
            erring.reasons
        );
        let one = analyse(
            &side(33.0, 1.0, 33.0, 0.0),
            &side(340.0, 0.0, 340.0, 0.0),
            T,
        );
        assert_eq!(one.outcome, Outcome::Inconclusive, "{}", one.summary());
        // Slow but thin: latency waits for min_samples.
        let slow = analyse(
            &side(20.0, 0.0, 0.0, 20.0),
            &side(340.0, 0.0, 340.0, 0.0),
            T,
        );
        assert_eq!(slow.outcome, Outcome::Inconclusive, "{}", slow.summary());
    }
}
