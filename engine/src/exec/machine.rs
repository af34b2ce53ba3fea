//! The deterministic core of a run: given step states and attempt outcomes, decide what
//! happens next and return it as data ([`Effects`]).
//!
//! Nothing here touches the database, a process or the clock: the [`driver`](super::driver)
//! persists the writes in one transaction (group commit), then performs the spawns. Tests
//! drive the machine directly and assert on the effects.

use serde_json::{Map, Value, json};

use super::retry::{FailureClass, next_retry};
use crate::pipeline::{Dag, OnFailure, Workflow};
use crate::store::{RunState, StepRecord, StepState, StepTransition};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        outputs: Value,
    },
    Failed {
        class: FailureClass,
        exit_code: Option<i32>,
        message: String,
    },
    Cancelled,
}

/// A durable change, written in the driver's next transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Step(StepTransition),
    StartAttempt {
        step_id: String,
        attempt: u32,
    },
    FinishAttempt {
        step_id: String,
        attempt: u32,
        state: &'static str,
        failure: Option<&'static str>,
        exit_code: Option<i32>,
        error: Option<String>,
    },
    FinishRun {
        state: RunState,
        reason: Option<String>,
    },
}

/// What the driver must do after a call into the machine.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub writes: Vec<Write>,
    /// Attempts to launch once `writes` are committed: (step index, attempt number).
    pub spawns: Vec<(usize, u32)>,
    /// The run reached a terminal state.
    pub finished: Option<RunState>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.spawns.is_empty() && self.finished.is_none()
    }
}

#[derive(Debug, Clone)]
struct StepView {
    state: StepState,
    /// Attempts started so far (the number of the latest one).
    attempts: u32,
    /// Attempts that failed (interrupted ones do not count against the retry budget).
    failures: u32,
    outputs: Option<Value>,
    next_attempt_at: Option<i64>,
    /// An attempt is executing in this process right now.
    live: bool,
}

pub struct RunMachine<'w> {
    run_id: i64,
    workflow: &'w Workflow,
    /// Step indices in dependency order, and each step's direct dependencies (precomputed:
    /// the planner walks them on every pass).
    order: Vec<usize>,
    dependencies: Vec<Vec<usize>>,
    steps: Vec<StepView>,
    base_context: Value,
    concurrency: usize,
    lease: (String, i64),
    abort_reason: Option<String>,
    cancelling: bool,
    finished: bool,
    /// Attempts executing in this process; kept as a count because it is checked per start.
    live: usize,
}

impl<'w> RunMachine<'w> {
    /// Rebuilds the machine from stored rows. `failures` holds the failed-attempt count per
    /// step index. Steps stored as `running` are treated as interrupted and will be attempted
    /// again.
    pub fn new(
        run_id: i64,
        workflow: &'w Workflow,
        records: &[StepRecord],
        failures: &[u32],
        base_context: Value,
        concurrency: usize,
        lease: (String, i64),
    ) -> Self {
        let dag = Dag::new(workflow);
        let steps = workflow
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let record = records.iter().find(|r| r.step_id == step.id);
                StepView {
                    state: record.map_or(StepState::Pending, |r| r.state),
                    attempts: record.map_or(0, |r| r.attempts),
                    failures: failures.get(index).copied().unwrap_or(0),
                    outputs: record.and_then(|r| r.outputs.clone()),
                    next_attempt_at: record.and_then(|r| r.next_attempt_at),
                    live: false,
                }
            })
            .collect();
        Self {
            run_id,
            workflow,
            order: dag.topological_order(),
            dependencies: (0..workflow.steps.len())
                .map(|i| dag.dependencies(i))
                .collect(),
            steps,
            base_context,
            concurrency: concurrency.max(1),
            lease,
            abort_reason: None,
            cancelling: false,
            finished: false,
            live: 0,
        }
    }

    pub fn step_id(&self, index: usize) -> &str {
        &self.workflow.steps[index].id
    }

    pub fn state(&self, index: usize) -> StepState {
        self.steps[index].state
    }

    /// Steps whose attempts were cut off by a dead engine: (index, attempt number).
    pub fn interrupted(&self) -> Vec<(usize, u32)> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == StepState::Running && !s.live)
            .map(|(i, s)| (i, s.attempts))
            .collect()
    }

    /// Stops starting steps; running ones are cancelled by the driver and reported back.
    pub fn cancel(&mut self) {
        self.cancelling = true;
    }

    pub fn is_cancelling(&self) -> bool {
        self.cancelling
    }

    /// The earliest time (ms) at which a waiting retry becomes due.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.steps
            .iter()
            .filter(|s| s.state == StepState::WaitingRetry)
            .filter_map(|s| s.next_attempt_at)
            .min()
    }

    /// The run context a step sees: the trigger context, the outputs of all its ancestors
    /// merged at the top level in dependency order (so the analyze step's `risk` is `risk`
    /// anywhere downstream), and `steps.<id>` with state and outputs of its direct
    /// dependencies.
    pub fn context_for(&self, index: usize) -> Value {
        let mut context = match &self.base_context {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        let ancestors = self.ancestors(index);
        for &ancestor in self.order.iter().filter(|&&i| ancestors[i]) {
            if let Some(Value::Object(outputs)) = &self.steps[ancestor].outputs {
                for (key, value) in outputs {
                    context.insert(key.clone(), value.clone());
                }
            }
        }
        let steps: Map<String, Value> = self.dependencies[index]
            .iter()
            .map(|&dependency| {
                let view = &self.steps[dependency];
                (
                    self.workflow.steps[dependency].id.clone(),
                    json!({
                        "state": view.state.as_str(),
                        "outputs": view.outputs.clone().unwrap_or_else(|| json!({})),
                    }),
                )
            })
            .collect();
        context.insert("steps".into(), Value::Object(steps));
        Value::Object(context)
    }

    /// Marks every step `index` depends on, directly or not.
    fn ancestors(&self, index: usize) -> Vec<bool> {
        let mut seen = vec![false; self.steps.len()];
        let mut stack: Vec<usize> = self.dependencies[index].clone();
        while let Some(next) = stack.pop() {
            if !seen[next] {
                seen[next] = true;
                stack.extend_from_slice(&self.dependencies[next]);
            }
        }
        seen
    }

    /// Records how an attempt ended and decides the step's next state.
    pub fn record_outcome(
        &mut self,
        index: usize,
        attempt: u32,
        outcome: Outcome,
        now: i64,
        jitter: f64,
    ) -> Effects {
        let step = &self.workflow.steps[index];
        let step_id = step.id.clone();
        let view = &mut self.steps[index];
        if view.live {
            view.live = false;
            self.live -= 1;
        }
        let mut effects = Effects::default();
        let mut change = StepTransition::new(self.run_id, step_id.clone(), StepState::Succeeded);
        change.attempt = Some(attempt);
        match outcome {
            Outcome::Succeeded { outputs } => {
                effects.writes.push(finish_attempt(
                    &step_id,
                    attempt,
                    "succeeded",
                    None,
                    None,
                    None,
                ));
                view.state = StepState::Succeeded;
                view.outputs = Some(outputs.clone());
                change.outputs = Some(outputs);
            }
            Outcome::Cancelled => {
                effects.writes.push(finish_attempt(
                    &step_id,
                    attempt,
                    "cancelled",
                    None,
                    None,
                    None,
                ));
                view.state = StepState::Cancelled;
                change.to = StepState::Cancelled;
                change.detail = json!({ "reason": "run cancelled" });
            }
            Outcome::Failed {
                class,
                exit_code,
                message,
            } => {
                view.failures += 1;
                effects.writes.push(finish_attempt(
                    &step_id,
                    attempt,
                    "failed",
                    Some(class.as_str()),
                    exit_code,
                    Some(message.clone()),
                ));
                change.error = Some(message.clone());
                change.detail = json!({ "failure": class.as_str(), "exit_code": exit_code });
                let retry = next_retry(&step.retry, step.on_failure, class, view.failures, jitter);
                match retry {
                    Some(delay) if !self.cancelling && self.abort_reason.is_none() => {
                        let at = now + delay.as_millis() as i64;
                        view.state = StepState::WaitingRetry;
                        view.next_attempt_at = Some(at);
                        change.to = StepState::WaitingRetry;
                        change.next_attempt_at = Some(at);
                    }
                    _ => {
                        view.state = StepState::Failed;
                        change.to = StepState::Failed;
                        let aborts =
                            !matches!(step.on_failure, OnFailure::Continue | OnFailure::Finish);
                        if aborts && self.abort_reason.is_none() {
                            self.abort_reason = Some(format!("step `{step_id}` failed: {message}"));
                        }
                    }
                }
            }
        }
        effects.writes.push(Write::Step(change));
        effects
    }

    /// Starts, skips and cancels whatever can move now, and finishes the run when nothing can.
    pub fn plan(&mut self, now: i64) -> Effects {
        let mut effects = Effects::default();
        if self.finished {
            return effects;
        }
        if self.cancelling || self.abort_reason.is_some() {
            let reason = if self.cancelling {
                "run cancelled".to_string()
            } else {
                format!(
                    "run aborted: {}",
                    self.abort_reason.as_deref().unwrap_or("")
                )
            };
            for index in 0..self.steps.len() {
                let view = &self.steps[index];
                let stranded = matches!(view.state, StepState::Pending | StepState::WaitingRetry)
                    || (view.state == StepState::Running && !view.live);
                if stranded {
                    self.settle(index, StepState::Cancelled, &reason, &mut effects);
                }
            }
        } else {
            self.advance(now, &mut effects);
        }
        if self.steps.iter().all(|s| s.state.is_terminal()) {
            // Read from the step states, so a resumed run reaches the same end.
            let finished_failure = self
                .workflow
                .steps
                .iter()
                .zip(&self.steps)
                .find(|(step, view)| {
                    step.on_failure == OnFailure::Finish && view.state == StepState::Failed
                })
                .map(|(step, _)| format!("step `{}` failed", step.id));
            let state = if self.cancelling {
                RunState::Cancelled
            } else if self.abort_reason.is_some() || finished_failure.is_some() {
                RunState::Failed
            } else {
                RunState::Succeeded
            };
            let reason = if self.cancelling {
                Some("cancelled on request".to_string())
            } else {
                self.abort_reason.clone().or(finished_failure)
            };
            effects.writes.push(Write::FinishRun { state, reason });
            effects.finished = Some(state);
            self.finished = true;
        }
        effects
    }

    fn advance(&mut self, now: i64, effects: &mut Effects) {
        // Skips can make further steps ready, so repeat until nothing moves.
        loop {
            let mut moved = false;
            for position in 0..self.order.len() {
                let index = self.order[position];
                match self.steps[index].state {
                    StepState::Pending => match self.readiness(index) {
                        Readiness::Waiting => {}
                        Readiness::Blocked(reason) => {
                            self.settle(index, StepState::Cancelled, &reason, effects);
                            moved = true;
                        }
                        Readiness::Ready if self.live >= self.concurrency => {}
                        Readiness::Ready => {
                            let step = &self.workflow.steps[index];
                            if let Some(condition) = &step.when
                                && !condition.evaluate(&self.context_for(index))
                            {
                                let reason = format!("`when: {}` is false", condition.source());
                                self.settle(index, StepState::Skipped, &reason, effects);
                                moved = true;
                                continue;
                            }
                            self.start(index, effects);
                        }
                    },
                    StepState::WaitingRetry
                        if self.steps[index].next_attempt_at.unwrap_or(0) <= now =>
                    {
                        self.start(index, effects);
                    }
                    StepState::Running if !self.steps[index].live => self.start(index, effects),
                    _ => {}
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn start(&mut self, index: usize, effects: &mut Effects) {
        if self.live >= self.concurrency {
            return;
        }
        let step_id = self.workflow.steps[index].id.clone();
        let view = &mut self.steps[index];
        let resumed = view.state == StepState::Running;
        view.attempts += 1;
        view.state = StepState::Running;
        view.live = true;
        self.live += 1;
        view.next_attempt_at = None;
        let attempt = view.attempts;
        let mut change = StepTransition::new(self.run_id, step_id.clone(), StepState::Running);
        change.attempt = Some(attempt);
        change.lease = Some(self.lease.clone());
        change.detail = json!({ "resumed": resumed });
        effects.writes.push(Write::Step(change));
        effects
            .writes
            .push(Write::StartAttempt { step_id, attempt });
        effects.spawns.push((index, attempt));
    }

    fn settle(&mut self, index: usize, to: StepState, reason: &str, effects: &mut Effects) {
        let mut change =
            StepTransition::new(self.run_id, self.workflow.steps[index].id.clone(), to);
        change.detail = json!({ "reason": reason });
        self.steps[index].state = to;
        effects.writes.push(Write::Step(change));
    }

    fn readiness(&self, index: usize) -> Readiness {
        let mut waiting = false;
        for &dependency in &self.dependencies[index] {
            let view = &self.steps[dependency];
            let dep = &self.workflow.steps[dependency];
            match view.state {
                StepState::Succeeded | StepState::Skipped => {}
                StepState::Failed if dep.on_failure == OnFailure::Continue => {}
                // The dependant decides by its `when:`; without one it cannot run.
                StepState::Failed
                    if dep.on_failure == OnFailure::Finish
                        && self.workflow.steps[index].when.is_some() => {}
                StepState::Failed => {
                    return Readiness::Blocked(format!("dependency `{}` failed", dep.id));
                }
                StepState::Cancelled => {
                    return Readiness::Blocked(format!("dependency `{}` was cancelled", dep.id));
                }
                _ => waiting = true,
            }
        }
        if waiting {
            Readiness::Waiting
        } else {
            Readiness::Ready
        }
    }
}

enum Readiness {
    Waiting,
    Ready,
    Blocked(String),
}

fn finish_attempt(
    step_id: &str,
    attempt: u32,
    state: &'static str,
    failure: Option<&'static str>,
    exit_code: Option<i32>,
    error: Option<String>,
) -> Write {
    Write::FinishAttempt {
        step_id: step_id.to_string(),
        attempt,
        state,
        failure,
        exit_code,
        error,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
