//! The two tests of the canary analysis, one-sided (is the canary *worse*?):
//! a two-proportion z-test on error rates (Fisher's exact test instead when an expected count
//! is under 5, where the normal approximation would call a single error significant) and the
//! Mann-Whitney U test on latencies.
//!
//! Latencies are known to their histogram bucket only, so the U statistic is computed from
//! bucket counts: every sample in a bucket shares that bucket's mid-rank, and the variance uses
//! the standard tie correction. That is exact for the data we have, in O(buckets).

/// Φ(x), the standard normal CDF (Abramowitz–Stegun 7.1.26 for erf, error < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// One test's result: the statistic, its z score and the one-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TestResult {
    /// `z`, `fisher` or `mann_whitney`.
    pub method: &'static str,
    pub statistic: f64,
    pub z: f64,
    pub p_value: f64,
}

/// H1: the canary's error proportion is greater than the baseline's.
pub fn two_proportion_z(
    canary_errors: f64,
    canary_n: f64,
    baseline_errors: f64,
    baseline_n: f64,
) -> TestResult {
    let (p_c, p_b) = (
        canary_errors / canary_n.max(1.0),
        baseline_errors / baseline_n.max(1.0),
    );
    let pooled = (canary_errors + baseline_errors) / (canary_n + baseline_n).max(1.0);
    let se =
        (pooled * (1.0 - pooled) * (1.0 / canary_n.max(1.0) + 1.0 / baseline_n.max(1.0))).sqrt();
    // No errors anywhere (or all errors): no evidence of a difference.
    let z = if se > 0.0 { (p_c - p_b) / se } else { 0.0 };
    let total = canary_n + baseline_n;
    let expected_smallest = [
        pooled * canary_n,
        pooled * baseline_n,
        (1.0 - pooled) * canary_n,
        (1.0 - pooled) * baseline_n,
    ]
    .into_iter()
    .fold(f64::INFINITY, f64::min);
    if expected_smallest < 5.0 && total > 0.0 {
        let p_value = fisher_greater(
            canary_errors,
            canary_n,
            canary_errors + baseline_errors,
            total,
        );
        return TestResult {
            method: "fisher",
            statistic: p_c - p_b,
            z,
            p_value,
        };
    }
    TestResult {
        method: "z",
        statistic: p_c - p_b,
        z,
        p_value: 1.0 - normal_cdf(z),
    }
}

/// P(X ≥ observed) for X hypergeometric: `drawn` canary requests out of `total`, of which
/// `successes` were errors.
fn fisher_greater(observed: f64, drawn: f64, successes: f64, total: f64) -> f64 {
    let ln_choose = |n: f64, k: f64| ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0);
    let denominator = ln_choose(total, drawn);
    let upper = drawn.min(successes) as u64;
    let mut p = 0.0;
    for k in (observed.max(0.0) as u64)..=upper {
        let k = k as f64;
        if drawn - k > total - successes {
            continue;
        }
        p +=
            (ln_choose(successes, k) + ln_choose(total - successes, drawn - k) - denominator).exp();
    }
    p.min(1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// H1: canary latencies tend to be larger. `canary` and `baseline` are per-bucket counts over
/// the same ordered buckets. The statistic is U of the canary; its normal approximation has a
/// continuity correction and the tie-corrected variance.
pub fn mann_whitney_from_buckets(canary: &[f64], baseline: &[f64]) -> TestResult {
    let (n1, n2) = (canary.iter().sum::<f64>(), baseline.iter().sum::<f64>());
    let n = n1 + n2;
    if n1 <= 0.0 || n2 <= 0.0 {
        return TestResult {
            method: "mann_whitney",
            statistic: 0.0,
            z: 0.0,
            p_value: 1.0,
        };
    }
    let mut rank_sum = 0.0;
    let mut below = 0.0;
    let mut ties = 0.0;
    for (c, b) in canary.iter().zip(baseline.iter()) {
        let t = c + b;
        // Ranks below+1 … below+t share their mean.
        rank_sum += c * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)).max(1.0));
    let z = if variance > 0.0 {
        (u - mean - 0.5) / variance.sqrt()
    } else {
        0.0
    };
    TestResult {
        method: "mann_whitney",
        statistic: u,
        z,
        p_value: 1.0 - normal_cdf(z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-2.326_348) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn proportions() {
        // 5% vs 0.5% errors on 400 requests each: clearly worse.
        assert!(two_proportion_z(20.0, 400.0, 2.0, 400.0).p_value < 0.001);
        // Equal rates: no evidence.
        assert!(two_proportion_z(4.0, 400.0, 4.0, 400.0).p_value > 0.4);
        // No errors at all: no evidence (exact test, p = 1).
        assert!(two_proportion_z(0.0, 10.0, 0.0, 10.0).p_value > 0.99);
        // One error in 20 against none in 214: the exact test says chance (p = 20/234).
        let single = two_proportion_z(1.0, 20.0, 0.0, 214.0);
        assert_eq!(single.method, "fisher");
        assert!((single.p_value - 20.0 / 234.0).abs() < 1e-9, "{single:?}");
        // Four in 20 against none in 214 is not chance.
        assert!(two_proportion_z(4.0, 20.0, 0.0, 214.0).p_value < 1e-4);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn mann_whitney_on_buckets() {
        // Canary entirely in a slower bucket: U = n1*n2, tiny p.
        let slow = mann_whitney_from_buckets(&[0.0, 0.0, 50.0], &[100.0, 0.0, 0.0]);
        assert_eq!(slow.statistic, 5000.0);
        assert!(slow.p_value < 1e-6, "{slow:?}");
        // Same distribution: p about one half.
        let same = mann_whitney_from_buckets(&[10.0, 20.0, 10.0], &[20.0, 40.0, 20.0]);
        assert!((same.p_value - 0.5).abs() < 0.1, "{same:?}");
        // Faster canary: no evidence it is worse.
        assert!(mann_whitney_from_buckets(&[50.0, 0.0], &[0.0, 50.0]).p_value > 0.99);
    }
}
