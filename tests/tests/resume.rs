//! Resuming after the engine died: a run keeps the definition it started with even when the
//! file on disk changes, an orphaned run shows as `interrupted` until `cairn resume` reclaims
//! it (and kills the orphaned step processes), and resuming a finished run is a clear error.

use std::time::{Duration, Instant};

use cairn_tests::{
    Sandbox, attempts, events, marked_sleep, processes_with_marker, run_state, sh_quote,
    status_json, step_states, unique_marker, wait_until,
};

/// A three-step chain whose middle step hangs on its first attempt (until killed) and goes
/// straight through on later ones; every step appends to `journal` what it ran as.
fn chain(sandbox: &Sandbox, sleeper: &str, word: &str) -> String {
    let journal = sh_quote(&sandbox.path("journal"));
    let ready = sh_quote(&sandbox.path("ready"));
    format!(
        "name: chain\nsteps:\n  - id: first\n    run: echo first >> {journal}\n  \
         - id: middle\n    depends_on: first\n    run: |\n      \
         echo \"{word} $CAIRN_ATTEMPT\" >> {journal}\n      \
         if [ \"$CAIRN_ATTEMPT\" = 1 ]; then touch {ready}; {sleeper} 300; fi\n  \
         - id: last\n    depends_on: middle\n    run: echo last >> {journal}\n"
    )
}

#[test]
fn a_resumed_run_keeps_its_stored_definition_and_reclaims_the_dead_engines_work() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-resume-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write("chain.yaml", &chain(&sandbox, &sleeper, "original"));
    let workflow_arg = workflow.display().to_string();

    let mut engine = sandbox.spawn(&["run", &workflow_arg, "-q"]);
    let run = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the middle step to start", Duration::from_secs(20), || {
        sandbox.path("ready").exists()
    });
    assert!(
        engine.kill9(),
        "the engine finished before it could be killed"
    );

    // The engine is gone, its step is not: that orphan is what resume must deal with.
    assert!(
        !processes_with_marker(&marker).is_empty(),
        "the step's sleeper should outlive the killed engine"
    );
    let status = status_json(&sandbox, run);
    assert_eq!(status["run"]["state"], "running", "{status:#}");
    assert_eq!(status["shown_state"], "interrupted", "{status:#}");
    let why = status["interrupted"].as_str().unwrap_or_default();
    assert!(
        why.contains("interrupted") && why.contains("cairn resume"),
        "interrupted reason: {why:?}"
    );
    let listed = sandbox.cairn(&["runs", "--json"]);
    assert!(
        listed.stdout.contains("\"shown_state\": \"interrupted\""),
        "`cairn runs --json` should show it interrupted too\n{listed}"
    );

    // The file on disk changes; the run must not notice.
    sandbox.write("chain.yaml", &chain(&sandbox, &sleeper, "edited"));
    let resumed = sandbox.cairn(&["resume", &run.to_string(), "-q"]);
    assert_eq!(resumed.code, Some(0), "{resumed}");
    assert_eq!(
        sandbox.read("journal"),
        "first\noriginal 1\noriginal 2\nlast\n",
        "the resumed run must execute its stored definition, once per step"
    );

    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run).as_deref(), Some("succeeded"));
    assert!(step_states(&conn, run).values().all(|s| s == "succeeded"));
    let events = events(&conn, run);
    let reclaimed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "run_reclaimed")
        .collect();
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    let reason = reclaimed[0].data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("gone") || reason.contains("expired"),
        "reclaim reason: {reason}"
    );
    let interrupted: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "step_interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    assert_eq!(interrupted[0].step_id.as_deref(), Some("middle"));
    assert_eq!(interrupted[0].attempt, Some(1));
    let killed = interrupted[0].data["orphans_killed"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        killed >= 1,
        "resume should have killed the orphan: {:?}",
        interrupted[0].data
    );
    let rows = attempts(&conn, run, "middle");
    let summary: Vec<_> = rows.iter().map(|a| a.state.as_str()).collect();
    assert_eq!(summary, ["interrupted", "succeeded"]);
    // `first` finished before the kill and was not attempted again.
    assert_eq!(attempts(&conn, run, "first").len(), 1);

    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_with_marker(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the orphan survived the resume: {:?}",
            processes_with_marker(&marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = status_json(&sandbox, run);
    assert_eq!(after["shown_state"], "succeeded", "{after:#}");
    assert!(after["interrupted"].is_null(), "{after:#}");
}

#[test]
fn resuming_a_finished_run_is_an_error() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "ok.yaml",
        "name: ok\nsteps:\n  - id: only\n    run: 'true'\n",
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id();

    let resumed = sandbox.cairn(&["resume", &run.to_string()]);
    assert_eq!(resumed.code, Some(3), "{resumed}");
    assert!(
        resumed
            .stderr
            .contains(&format!("run {run} is already finished (succeeded)")),
        "{resumed}"
    );
    assert!(!resumed.stderr.contains("panicked"), "{resumed}");
    // Nothing was run again or recorded.
    let conn = sandbox.db();
    assert_eq!(attempts(&conn, run, "only").len(), 1);
    assert!(!events(&conn, run).iter().any(|e| e.kind == "run_reclaimed"));

    let unknown = sandbox.cairn(&["resume", "999"]);
    assert_eq!(
        unknown.code,
        Some(2),
        "an unknown run is invalid input\n{unknown}"
    );
    assert!(unknown.stderr.contains("no run with id 999"), "{unknown}");

    let nothing = sandbox.cairn(&["resume"]);
    assert_eq!(nothing.code, Some(0), "{nothing}");
    assert!(nothing.stderr.contains("nothing to resume"), "{nothing}");
}

/// A long-running step's workflow; the step touches `ready` once it runs.
fn long_step(sandbox: &Sandbox, sleeper: &str) -> String {
    let ready = sh_quote(&sandbox.path("ready"));
    format!(
        "name: long\nsteps:\n  - id: long\n    run: |\n      echo \"$CAIRN_ATTEMPT\" >> {}\n      \
         touch {ready}\n      {sleeper} 300\n  - id: after\n    depends_on: long\n    run: 'true'\n",
        sh_quote(&sandbox.path("attempts"))
    )
}

#[test]
fn a_run_driven_by_a_live_engine_cannot_be_resumed_elsewhere() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-live-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write("long.yaml", &long_step(&sandbox, &sleeper));
    let mut engine = sandbox.spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the step to start", Duration::from_secs(20), || {
        sandbox.path("ready").exists()
    });

    let status = status_json(&sandbox, run);
    assert_eq!(status["shown_state"], "running", "{status:#}");
    assert!(status["interrupted"].is_null(), "{status:#}");

    let explicit = sandbox.cairn(&["resume", &run.to_string(), "-q"]);
    assert_eq!(explicit.code, Some(3), "{explicit}");
    assert!(
        explicit.stderr.contains("cannot be resumed here"),
        "{explicit}"
    );
    let all = sandbox.cairn(&["resume", "-q"]);
    assert_eq!(all.code, Some(0), "{all}");
    assert!(all.stderr.contains("nothing to resume"), "{all}");
    // The step was not started a second time, and the first engine still runs it.
    assert_eq!(sandbox.read("attempts"), "1\n");
    assert_eq!(attempts(&sandbox.db(), run, "long").len(), 1);
    assert!(
        engine.try_wait().is_none(),
        "the driving engine died\n{}",
        engine.output()
    );

    let cancel = sandbox.cairn(&["cancel", &run.to_string()]);
    assert_eq!(cancel.code, Some(0), "{cancel}");
    let stopped = engine.wait_within(Duration::from_secs(10));
    assert_eq!(
        stopped.and_then(|s| s.code()),
        Some(1),
        "{}",
        engine.output()
    );
}

#[test]
fn cancelling_an_interrupted_run_kills_its_orphans() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-orphan-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write("long.yaml", &long_step(&sandbox, &sleeper));
    let mut engine = sandbox.spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the step to start", Duration::from_secs(20), || {
        sandbox.path("ready").exists()
    });
    assert!(engine.kill9());
    assert!(
        !processes_with_marker(&marker).is_empty(),
        "the orphan should be running"
    );

    let cancel = sandbox.cairn(&["cancel", &run.to_string()]);
    assert_eq!(cancel.code, Some(0), "{cancel}");
    assert!(
        cancel.stderr.contains(&format!("run {run} cancelled")),
        "{cancel}"
    );
    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run).as_deref(), Some("cancelled"));
    let states = step_states(&conn, run);
    assert_eq!(
        states.get("long").map(String::as_str),
        Some("cancelled"),
        "{states:?}"
    );
    assert_eq!(
        states.get("after").map(String::as_str),
        Some("cancelled"),
        "{states:?}"
    );
    let kinds: Vec<String> = events(&conn, run).into_iter().map(|e| e.kind).collect();
    for kind in ["run_reclaimed", "step_interrupted", "run_cancelled"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(
        sandbox.read("attempts"),
        "1\n",
        "cancelling must not start the step again"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_with_marker(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the orphan survived the cancel");
        std::thread::sleep(Duration::from_millis(20));
    }
}
