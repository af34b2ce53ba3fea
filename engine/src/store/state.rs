//! Step and run states and the one table of legal step transitions.
//!
//! The store refuses any transition not listed here, so a bug in the executor shows up as an
//! error instead of a silently rewritten history (see `ARCHITECTURE.md`, "Durable execution").

use std::fmt;
use std::str::FromStr;

/// Where one step of one run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Waiting for its dependencies.
    Pending,
    /// Claimed by an engine under a lease; an attempt is executing.
    Running,
    /// Failed an attempt and waits for its backoff to end.
    WaitingRetry,
    Succeeded,
    /// Failed for good (retries exhausted, or not retryable).
    Failed,
    /// Its `when:` was false, or it was not needed; counts as satisfied for dependants.
    Skipped,
    Cancelled,
}

use StepState::*;

/// `(from, to)` pairs the executor may perform. `Running -> Running` is a new attempt after
/// the engine that ran the previous one died.
const STEP_TRANSITIONS: &[(StepState, StepState)] = &[
    (Pending, Running),
    (Pending, Skipped),
    (Pending, Cancelled),
    (Running, Succeeded),
    (Running, Failed),
    (Running, WaitingRetry),
    (Running, Cancelled),
    (Running, Running),
    (WaitingRetry, Running),
    (WaitingRetry, Cancelled),
];

impl StepState {
    pub const ALL: [StepState; 7] = [
        Pending,
        Running,
        WaitingRetry,
        Succeeded,
        Failed,
        Skipped,
        Cancelled,
    ];

    pub fn can_become(self, next: StepState) -> bool {
        STEP_TRANSITIONS.contains(&(self, next))
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Succeeded | Failed | Skipped | Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pending => "pending",
            Running => "running",
            WaitingRetry => "waiting_retry",
            Succeeded => "succeeded",
            Failed => "failed",
            Skipped => "skipped",
            Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown step state `{text}`"))
    }
}

/// Where a whole run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        self != RunState::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown run state `{text}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in StepState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in StepState::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in StepState::ALL {
            assert_eq!(state.as_str().parse::<StepState>(), Ok(state));
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
        }
    }
}
