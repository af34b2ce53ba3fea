//! Failure classes and the retry decision: which failures are retried, and after how long.
//!
//! Infrastructure failures (a timeout, a process killed by a signal, an engine that died
//! mid-attempt) are retried by default; a script's own non-zero exit only when the workflow
//! asks for it with `retries:` or `on_failure: retry`.

use std::time::Duration;

use crate::pipeline::{OnFailure, RetryPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The step ran past its `timeout`; its process group was killed.
    Timeout,
    /// The process died from a signal it did not ask for (OOM killer, an operator).
    Killed,
    /// The command exited non-zero, or an agent reported a failure.
    ExitCode,
    /// The command could not be started at all.
    Spawn,
    /// The step's code (an agent) panicked; a bug, so it is not retried by default.
    Panicked,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Killed => "killed",
            Self::ExitCode => "exit_code",
            Self::Spawn => "spawn",
            Self::Panicked => "panicked",
        }
    }

    /// The class [`FailureClass::as_str`] names (a worker's result names it so).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Timeout,
            Self::Killed,
            Self::ExitCode,
            Self::Spawn,
            Self::Panicked,
        ]
        .into_iter()
        .find(|class| class.as_str() == text)
    }

    fn is_infrastructure(self) -> bool {
        matches!(self, Self::Timeout | Self::Killed)
    }
}

/// Whether a step that has now failed `failures` times (this one included) gets another
/// attempt, and after what delay.
pub fn next_retry(
    policy: &RetryPolicy,
    on_failure: OnFailure,
    class: FailureClass,
    failures: u32,
    jitter: f64,
) -> Option<Duration> {
    let allowed = match (policy.retries, on_failure) {
        (Some(retries), _) => retries,
        (None, OnFailure::Retry) => 1,
        (None, _) if class.is_infrastructure() => RetryPolicy::DEFAULT_INFRASTRUCTURE_RETRIES,
        (None, _) => 0,
    };
    if failures > allowed {
        return None;
    }
    let exponent = failures.saturating_sub(1).min(20);
    let base = policy
        .backoff
        .saturating_mul(1 << exponent)
        .min(policy.max_backoff);
    // Up to ±25% so that steps failing together do not retry in lockstep.
    Some(base.mul_f64(1.0 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            retries,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_script_failure_is_only_retried_when_asked() {
        let none = policy(None);
        assert_eq!(
            next_retry(&none, OnFailure::Abort, FailureClass::ExitCode, 1, 0.5),
            None
        );
        assert!(next_retry(&none, OnFailure::Retry, FailureClass::ExitCode, 1, 0.5).is_some());
        assert_eq!(
            next_retry(&none, OnFailure::Retry, FailureClass::ExitCode, 2, 0.5),
            None
        );
        let two = policy(Some(2));
        assert!(next_retry(&two, OnFailure::Abort, FailureClass::ExitCode, 2, 0.5).is_some());
        assert_eq!(
            next_retry(&two, OnFailure::Abort, FailureClass::ExitCode, 3, 0.5),
            None
        );
    }

    #[test]
    fn infrastructure_failures_are_retried_by_default() {
        let none = policy(None);
        for class in [FailureClass::Timeout, FailureClass::Killed] {
            assert!(next_retry(&none, OnFailure::Abort, class, 2, 0.5).is_some());
            assert_eq!(next_retry(&none, OnFailure::Abort, class, 3, 0.5), None);
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(Some(10));
        let delay = |n| next_retry(&p, OnFailure::Abort, FailureClass::ExitCode, n, 0.5);
        assert_eq!(delay(1), Some(Duration::from_secs(2)));
        assert_eq!(delay(2), Some(Duration::from_secs(4)));
        assert_eq!(delay(3), Some(Duration::from_secs(5)));
    }
}
