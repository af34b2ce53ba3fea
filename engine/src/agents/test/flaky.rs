//! Flakiness: a score from a test's recent history, and the quarantine policy.
//!
//! A test that failed and then passed on a re-run is flaky in that run. Its score is the share
//! of its last runs that were flaky or that flapped (passed, failed, passed — or the reverse —
//! in consecutive runs); a test that breaks once and stays broken, or is fixed once, is not
//! flaky. Over the threshold a test is quarantined: still run and reported, no longer able to
//! fail the pipeline, until it passes [`RELEASE_AFTER`] times in a row.

/// Outcomes looked at for the score.
pub const WINDOW: usize = 20;
/// Fewer outcomes than this say nothing about flakiness.
pub const MIN_HISTORY: usize = 3;
pub const RELEASE_AFTER: u32 = 10;

/// Share of flips in a history of `passed` / `failed` / `flaky`, oldest first.
pub fn score(history: &[String]) -> f64 {
    if history.len() < MIN_HISTORY {
        return 0.0;
    }
    let flaky = history.iter().filter(|o| o.as_str() == "flaky").count();
    let flaps = history
        .windows(3)
        .filter(|w| w[0] == w[2] && w[0] != w[1] && w.iter().all(|o| o.as_str() != "flaky"))
        .count();
    (flaky + flaps) as f64 / history.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(text: &str) -> Vec<String> {
        text.split(' ').map(|s| s.to_string()).collect()
    }

    #[test]
    fn steady_tests_score_zero_and_flapping_ones_high() {
        assert_eq!(score(&history("passed passed passed passed")), 0.0);
        assert_eq!(
            score(&history("failed failed failed")),
            0.0,
            "always failing is broken, not flaky"
        );
        assert_eq!(
            score(&history("passed passed failed failed")),
            0.0,
            "a break is not a flap"
        );
        assert_eq!(score(&history("failed passed passed")), 0.0, "nor is a fix");
        assert!(score(&history("passed failed passed failed passed")) > 0.5);
        assert!(score(&history("passed flaky passed flaky")) >= 0.5);
        assert_eq!(score(&history("flaky")), 0.0, "one run says nothing");
    }
}
