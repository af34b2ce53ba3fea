//! An agent that panics fails its attempt with the panic's message; the run goes on to its
//! end instead of waiting for an outcome that never comes. Driven through a real engine and
//! SQLite store with an agent set of the test's own.

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::exec::{AgentCall, AgentFuture, Agents, Engine, EngineSettings};
use cairn_engine::store::{RunState, StepState, Store};
use serde_json::json;

struct Panicking;

impl Agents for Panicking {
    fn names(&self) -> Vec<&'static str> {
        vec!["panics", "fine"]
    }

    fn start(&self, name: &str, call: AgentCall) -> Option<AgentFuture> {
        match name {
            "panics" => Some(Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("agent bug in step {}", call.step_id);
            })),
            "fine" => Some(Box::pin(async { Ok(json!({ "ok": true })) })),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_agent_fails_its_attempt_and_the_run_ends() {
    let home = tempfile::tempdir().expect("home");
    let store = Store::open(&home.path().join("cairn.db")).expect("store");
    let engine = Engine::new(
        store,
        Arc::new(Panicking),
        EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: home.path().join("work"),
        },
    );
    let definition = "name: panic\nsteps:\n  - id: boom\n    agent: panics\n  - id: other\n    agent: fine\n  - id: after\n    agent: fine\n    depends_on: boom\n";
    let (run_id, _) = engine
        .create_run(
            definition,
            "panic.yaml",
            None,
            json!({ "trigger": "manual" }),
        )
        .expect("run created");
    let state = tokio::time::timeout(Duration::from_secs(30), engine.drive(run_id, None))
        .await
        .expect("the run ends instead of hanging")
        .expect("drive");
    assert_eq!(state, RunState::Failed);
    let steps = engine.store().steps(run_id).expect("steps");
    let step = |id: &str| steps.iter().find(|s| s.step_id == id).expect("step");
    assert_eq!(step("boom").state, StepState::Failed);
    let error = step("boom").error.clone().unwrap_or_default();
    assert!(
        error.contains("panicked") && error.contains("agent bug in step boom"),
        "the panic's message is the step's error: {error}"
    );
    assert_eq!(step("other").state, StepState::Succeeded);
    assert_ne!(step("after").state, StepState::Succeeded);
}
