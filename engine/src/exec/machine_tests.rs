//! The run machine, driven without a database or processes: decisions are asserted as data.

use serde_json::json;

use super::*;
use crate::pipeline::{LoadOptions, load_str};

fn workflow(text: &str) -> Workflow {
    load_str(
        "test.yaml",
        text,
        &LoadOptions {
            known_agents: &["noop", "orchestrator"],
            check_with: None,
        },
    )
    .expect("test workflow is valid")
}

fn machine<'w>(workflow: &'w Workflow, concurrency: usize) -> RunMachine<'w> {
    RunMachine::new(
        1,
        workflow,
        &[],
        &[],
        json!({}),
        concurrency,
        ("me".into(), 0),
    )
}

fn started(effects: &Effects, workflow: &Workflow) -> Vec<String> {
    effects
        .spawns
        .iter()
        .map(|(i, _)| workflow.steps[*i].id.clone())
        .collect()
}

fn ok() -> Outcome {
    Outcome::Succeeded { outputs: json!({}) }
}

fn fail() -> Outcome {
    Outcome::Failed {
        class: FailureClass::ExitCode,
        exit_code: Some(1),
        message: "exited with status 1".into(),
    }
}

const DIAMOND: &str = "
name: diamond
steps:
  - id: a
    run: 'true'
  - id: b
    depends_on: a
    run: 'true'
  - id: c
    depends_on: a
    run: 'true'
  - id: d
    depends_on: [b, c]
    run: 'true'
";

#[test]
fn a_diamond_runs_in_dependency_order_and_finishes() {
    let wf = workflow(DIAMOND);
    let mut m = machine(&wf, 4);
    assert_eq!(started(&m.plan(0), &wf), ["a"]);
    assert!(m.plan(0).is_empty(), "planning twice changes nothing");
    m.record_outcome(0, 1, ok(), 0, 0.5);
    assert_eq!(started(&m.plan(0), &wf), ["b", "c"]);
    m.record_outcome(1, 1, ok(), 0, 0.5);
    assert!(m.plan(0).spawns.is_empty(), "d waits for c");
    m.record_outcome(2, 1, ok(), 0, 0.5);
    assert_eq!(started(&m.plan(0), &wf), ["d"]);
    m.record_outcome(3, 1, ok(), 0, 0.5);
    assert_eq!(m.plan(0).finished, Some(RunState::Succeeded));
}

#[test]
fn the_concurrency_limit_holds() {
    let wf = workflow(
        "name: wide\nsteps:\n  - {id: a, run: x}\n  - {id: b, run: x}\n  - {id: c, run: x}\n",
    );
    let mut m = machine(&wf, 2);
    assert_eq!(started(&m.plan(0), &wf), ["a", "b"]);
    m.record_outcome(0, 1, ok(), 0, 0.5);
    assert_eq!(started(&m.plan(0), &wf), ["c"]);
}

#[test]
fn a_false_condition_skips_and_the_dependant_still_runs() {
    let wf = workflow(
        "name: route\nsteps:\n  - {id: analyze, run: x}\n  - {id: test, depends_on: analyze, when: risk >= medium, run: x}\n  - {id: build, depends_on: test, run: x}\n",
    );
    let mut m = machine(&wf, 4);
    m.plan(0);
    m.record_outcome(
        0,
        1,
        Outcome::Succeeded {
            outputs: json!({"risk": "low"}),
        },
        0,
        0.5,
    );
    let effects = m.plan(0);
    assert_eq!(m.state(1), StepState::Skipped);
    assert_eq!(started(&effects, &wf), ["build"]);
}

#[test]
fn outputs_of_ancestors_reach_the_context() {
    let wf = workflow(DIAMOND);
    let mut m = machine(&wf, 4);
    m.plan(0);
    m.record_outcome(
        0,
        1,
        Outcome::Succeeded {
            outputs: json!({"risk": "high"}),
        },
        0,
        0.5,
    );
    m.plan(0);
    m.record_outcome(
        1,
        1,
        Outcome::Succeeded {
            outputs: json!({"image": "app:1"}),
        },
        0,
        0.5,
    );
    m.record_outcome(2, 1, ok(), 0, 0.5);
    let context = m.context_for(3);
    assert_eq!(context["risk"], "high", "grand-parent outputs are merged");
    assert_eq!(context["steps"]["b"]["outputs"]["image"], "app:1");
    assert!(
        context["steps"].get("a").is_none(),
        "steps.* lists direct dependencies only"
    );
}

#[test]
fn a_failure_aborts_the_run_and_cancels_what_has_not_started() {
    let wf = workflow(DIAMOND);
    let mut m = machine(&wf, 1);
    m.plan(0);
    m.record_outcome(0, 1, ok(), 0, 0.5);
    assert_eq!(
        started(&m.plan(0), &wf),
        ["b"],
        "concurrency 1 holds c back"
    );
    m.record_outcome(1, 1, fail(), 0, 0.5);
    let effects = m.plan(0);
    assert_eq!(m.state(2), StepState::Cancelled);
    assert_eq!(m.state(3), StepState::Cancelled);
    assert_eq!(effects.finished, Some(RunState::Failed));
}

#[test]
fn on_failure_continue_keeps_the_run_going() {
    let wf = workflow(
        "name: c\nsteps:\n  - {id: lint, run: x, on_failure: continue}\n  - {id: build, depends_on: lint, run: x}\n",
    );
    let mut m = machine(&wf, 2);
    m.plan(0);
    m.record_outcome(0, 1, fail(), 0, 0.5);
    assert_eq!(started(&m.plan(0), &wf), ["build"]);
    m.record_outcome(1, 1, ok(), 0, 0.5);
    assert_eq!(m.plan(0).finished, Some(RunState::Succeeded));
}

#[test]
fn on_failure_finish_lets_the_others_end_and_then_fails_the_run() {
    let wf = workflow(
        "name: f\nsteps:\n  - {id: shard, run: x, on_failure: finish}\n  - {id: other, run: x}\n  - {id: deploy, depends_on: shard, run: x}\n  - {id: notify, depends_on: shard, run: x, when: \"steps.shard.state == 'failed'\"}\n",
    );
    let mut m = machine(&wf, 4);
    assert_eq!(started(&m.plan(0), &wf), ["shard", "other"]);
    m.record_outcome(0, 1, fail(), 0, 0.5);
    // `other` is still running: nothing is cancelled; `deploy` (no `when:`) cannot run,
    // `notify` reacts to the failure.
    assert_eq!(started(&m.plan(0), &wf), ["notify"]);
    assert_eq!(m.state(2), StepState::Cancelled);
    assert_eq!(m.state(1), StepState::Running);
    m.record_outcome(1, 1, ok(), 0, 0.5);
    m.record_outcome(3, 1, ok(), 0, 0.5);
    assert_eq!(m.plan(0).finished, Some(RunState::Failed));
}

#[test]
fn retries_wait_for_their_backoff() {
    let wf =
        workflow("name: r\nsteps:\n  - {id: flaky, run: x, retries: {count: 1, backoff: 2s}}\n");
    let mut m = machine(&wf, 1);
    m.plan(0);
    m.record_outcome(0, 1, fail(), 1_000, 0.5);
    assert_eq!(m.state(0), StepState::WaitingRetry);
    assert_eq!(m.next_wakeup(), Some(3_000));
    assert!(m.plan(2_999).spawns.is_empty());
    assert_eq!(m.plan(3_000).spawns, vec![(0, 2)]);
    m.record_outcome(0, 2, fail(), 3_100, 0.5);
    assert_eq!(m.plan(3_100).finished, Some(RunState::Failed));
}

#[test]
fn interrupted_steps_are_attempted_again_and_completed_ones_are_not() {
    let wf = workflow(DIAMOND);
    let record = |id: &str, state, attempts| StepRecord {
        run_id: 1,
        step_id: id.into(),
        position: 0,
        state,
        attempts,
        outputs: Some(json!({})),
        error: None,
        next_attempt_at: None,
        lease_owner: None,
        lease_expires_at: None,
        started_at: None,
        finished_at: None,
    };
    let records = [
        record("a", StepState::Succeeded, 1),
        record("b", StepState::Running, 1),
        record("c", StepState::Pending, 0),
        record("d", StepState::Pending, 0),
    ];
    let mut m = RunMachine::new(1, &wf, &records, &[0; 4], json!({}), 4, ("me".into(), 0));
    assert_eq!(m.interrupted(), vec![(1, 1)]);
    let effects = m.plan(0);
    assert_eq!(
        effects.spawns,
        vec![(1, 2), (2, 1)],
        "b gets attempt 2, a is not re-run"
    );
    let resumed = effects
        .writes
        .iter()
        .any(|w| matches!(w, Write::Step(t) if t.step_id == "b" && t.detail["resumed"] == true));
    assert!(resumed);
}

#[test]
fn cancelling_settles_everything_once_running_attempts_report() {
    let wf = workflow(DIAMOND);
    let mut m = machine(&wf, 4);
    m.plan(0);
    m.cancel();
    let effects = m.plan(0);
    assert!(effects.finished.is_none(), "a is still running");
    assert_eq!(m.state(1), StepState::Cancelled);
    m.record_outcome(0, 1, Outcome::Cancelled, 0, 0.5);
    assert_eq!(m.plan(0).finished, Some(RunState::Cancelled));
}
