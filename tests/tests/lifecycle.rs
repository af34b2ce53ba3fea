//! A step's life from start to end, through the real binary: timeouts that take the whole
//! process group down, retries and their backoff, which failures are retried at all, what a
//! failed step means for the rest of the run (`on_failure`), `when:` skips, outputs flowing
//! to dependants, `cairn cancel` from another process, and `cairn logs`.

use std::time::{Duration, Instant};

use serde_json::Value;

use cairn_tests::{
    Sandbox, attempts, events, marked_sleep, processes_with_marker, run_reason, run_state,
    sh_quote, step_states, unique_marker, wait_until,
};

/// Every process whose command line carries `marker` is gone (allowing a moment for signals
/// to land).
fn assert_no_survivors(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let survivors = processes_with_marker(marker);
        if survivors.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the step outlived it: {survivors:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn states(sandbox: &Sandbox, run: i64) -> Vec<(String, String)> {
    step_states(&sandbox.db(), run).into_iter().collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-timeout-sleeper");
    let raw = marked_sleep(&sandbox, &marker).display().to_string();
    let sleeper = sh_quote(std::path::Path::new(&raw));
    let ready = sh_quote(&sandbox.path("ready"));
    // Two background children (one ignores SIGTERM, so only the SIGKILL after the grace
    // period stops it) and a foreground one.
    let workflow = sandbox.write(
        "timeout.yaml",
        &format!(
            "name: timeout\nsteps:\n  - id: hang\n    timeout: 1s\n    retries: 0\n    run: |\n      \
             sh -c \"trap '' TERM; exec {raw} 300\" &\n      \
             {sleeper} 301 &\n      \
             touch {ready}\n      \
             {sleeper} 302\n"
        ),
    );
    let started = Instant::now();
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    let took = started.elapsed();
    assert_eq!(
        output.code,
        Some(1),
        "a timed-out step fails the run\n{output}"
    );
    assert!(
        sandbox.path("ready").exists(),
        "the step never got going\n{output}"
    );
    assert!(took < Duration::from_secs(10), "the timeout took {took:?}");
    assert_no_survivors(&marker);

    let run = output.run_id();
    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run).as_deref(), Some("failed"));
    let rows = attempts(&conn, run, "hang");
    assert_eq!(rows.len(), 1, "`retries: 0` means one attempt: {rows:?}");
    assert_eq!(rows[0].state, "failed");
    assert_eq!(rows[0].failure.as_deref(), Some("timeout"));
    let reason = run_reason(&conn, run).unwrap_or_default();
    assert!(reason.contains("timed out"), "run reason: {reason}");
}

#[test]
fn a_timeout_is_retried_twice_by_default() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-retried-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write(
        "timeout-default.yaml",
        &format!(
            "name: timeout-default\nsteps:\n  - id: slow\n    timeout: 200ms\n    \
             retries: {{ backoff: 50ms }}\n    run: exec {sleeper} 300\n"
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(1), "{output}");
    assert_no_survivors(&marker);
    let rows = attempts(&sandbox.db(), output.run_id(), "slow");
    let failures: Vec<_> = rows.iter().map(|a| a.failure.as_deref()).collect();
    assert_eq!(failures, [Some("timeout"); 3], "{rows:?}");
}

#[test]
fn a_failing_step_is_retried_with_backoff_until_it_succeeds() {
    let sandbox = Sandbox::new();
    let counter = sh_quote(&sandbox.path("counter"));
    let seen = sh_quote(&sandbox.path("attempts-seen"));
    let times = sh_quote(&sandbox.path("times"));
    let workflow = sandbox.write(
        "retry.yaml",
        &format!(
            "name: retry\nsteps:\n  - id: flaky\n    retries: {{ count: 2, backoff: 100ms }}\n    \
             run: |\n      \
             n=$(cat {counter} 2>/dev/null || echo 0)\n      \
             n=$((n + 1))\n      \
             echo $n > {counter}\n      \
             echo \"$CAIRN_ATTEMPT $CAIRN_IDEMPOTENCY_KEY\" >> {seen}\n      \
             echo \"start $(date +%s%3N)\" >> {times}\n      \
             [ $n -ge 3 ] && exit 0\n      \
             echo \"end $(date +%s%3N)\" >> {times}\n      \
             exit 4\n"
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id();
    let conn = sandbox.db();
    let rows = attempts(&conn, run, "flaky");
    let summary: Vec<_> = rows
        .iter()
        .map(|a| (a.attempt, a.state.as_str(), a.exit_code))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "failed", Some(4)),
            (2, "failed", Some(4)),
            (3, "succeeded", None)
        ],
        "{rows:?}"
    );
    // Backoff 100 ms then 200 ms, each ±25 % jitter, measured by the step itself: from the
    // failing attempt's last moment to the next attempt's first. (The default backoff, 1 s,
    // would show as at least 750 ms, then 1.5 s.)
    let times: Vec<(String, i64)> = sandbox
        .read("times")
        .lines()
        .map(|line| {
            let (what, at) = line.split_once(' ').expect("`what ms` lines");
            (what.to_string(), at.parse().expect("milliseconds"))
        })
        .collect();
    let phases: Vec<&str> = times.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(phases, ["start", "end", "start", "end", "start"]);
    for (index, (minimum, maximum)) in [(75, 740), (150, 1400)].into_iter().enumerate() {
        let gap = times[2 * index + 2].1 - times[2 * index + 1].1;
        assert!(
            (minimum..maximum).contains(&gap),
            "retry {} came {gap} ms after the failure, expected {minimum}..{maximum} ms",
            index + 1
        );
    }
    let waits = events(&conn, run)
        .iter()
        .filter(|e| e.kind == "step_waiting_retry")
        .count();
    assert_eq!(waits, 2);
    let key = format!("{run}/flaky");
    assert_eq!(
        sandbox.read("attempts-seen"),
        format!("1 {key}\n2 {key}\n3 {key}\n")
    );
}

#[test]
fn a_nonzero_exit_is_not_retried_unless_asked() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "fail.yaml",
        "name: fail\nsteps:\n  - id: broken\n    run: echo trying; exit 7\n",
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(1), "{output}");
    let run = output.run_id();
    let conn = sandbox.db();
    let rows = attempts(&conn, run, "broken");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].exit_code, Some(7));
    assert_eq!(rows[0].failure.as_deref(), Some("exit_code"));
    assert_eq!(run_state(&conn, run).as_deref(), Some("failed"));
    let reason = run_reason(&conn, run).unwrap_or_default();
    assert!(
        reason.contains("broken") && reason.contains("7"),
        "run reason: {reason}"
    );
}

#[test]
fn on_failure_continue_lets_dependants_run_and_the_run_succeed() {
    let sandbox = Sandbox::new();
    let after = sh_quote(&sandbox.path("after-ran"));
    let workflow = sandbox.write(
        "continue.yaml",
        &format!(
            "name: continue\nsteps:\n  - id: lint\n    run: exit 1\n    on_failure: continue\n  \
             - id: build\n    depends_on: lint\n    run: echo \"$CAIRN_CONTEXT\" > {after}\n"
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id();
    assert_eq!(
        states(&sandbox, run),
        pairs(&[("build", "succeeded"), ("lint", "failed")])
    );
    assert_eq!(run_state(&sandbox.db(), run).as_deref(), Some("succeeded"));
    let context: Value = serde_json::from_str(&sandbox.read("after-ran")).expect("context JSON");
    assert_eq!(context["steps"]["lint"]["state"], "failed", "{context}");
}

#[test]
fn a_failure_aborts_the_steps_not_yet_started() {
    let sandbox = Sandbox::new();
    let touched = sh_quote(&sandbox.path("should-not-exist"));
    // Concurrency 1 and file order: `bad` runs first, nothing else has started when it fails.
    let workflow = sandbox.write(
        "abort.yaml",
        &format!(
            "name: abort\nconcurrency: 1\nsteps:\n  - id: bad\n    run: exit 2\n  \
             - id: after\n    depends_on: bad\n    run: touch {touched}\n  \
             - id: unrelated\n    run: touch {touched}\n"
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(1), "{output}");
    let run = output.run_id();
    let conn = sandbox.db();
    assert_eq!(
        states(&sandbox, run),
        pairs(&[
            ("after", "cancelled"),
            ("bad", "failed"),
            ("unrelated", "cancelled")
        ])
    );
    assert!(
        !sandbox.path("should-not-exist").exists(),
        "a cancelled step ran"
    );
    for step in ["after", "unrelated"] {
        assert!(
            attempts(&conn, run, step).is_empty(),
            "{step} was attempted"
        );
    }
    let unrelated = events(&conn, run)
        .into_iter()
        .find(|e| e.step_id.as_deref() == Some("unrelated") && e.kind == "step_cancelled")
        .expect("a step_cancelled event for `unrelated`");
    let reason = unrelated.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("abort") && reason.contains("bad"),
        "reason: {reason}"
    );
    assert_eq!(run_state(&conn, run).as_deref(), Some("failed"));
}

#[test]
fn a_false_when_skips_the_step_and_its_dependant_still_runs() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "when.yaml",
        &format!(
            "name: when\nsteps:\n  - id: probe\n    run: echo ready=false >> \"$CAIRN_OUTPUT\"\n  \
             - id: gated\n    depends_on: probe\n    when: steps.probe.outputs.ready == true\n    \
             run: touch {}\n  \
             - id: after\n    depends_on: gated\n    run: 'true'\n",
            sh_quote(&sandbox.path("gated-ran"))
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id();
    assert_eq!(
        states(&sandbox, run),
        pairs(&[
            ("after", "succeeded"),
            ("gated", "skipped"),
            ("probe", "succeeded")
        ])
    );
    assert!(!sandbox.path("gated-ran").exists(), "a skipped step ran");
    let skipped = events(&sandbox.db(), run)
        .into_iter()
        .find(|e| e.kind == "step_skipped")
        .expect("a step_skipped event");
    let reason = skipped.data["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("steps.probe.outputs.ready"),
        "reason: {reason}"
    );
}

#[test]
fn outputs_reach_a_dependants_when_and_its_context() {
    let sandbox = Sandbox::new();
    let context_file = sh_quote(&sandbox.path("context.json"));
    let workflow = sandbox.write(
        "outputs.yaml",
        &format!(
            "name: outputs\nsteps:\n  - id: analyze\n    run: |\n      \
             echo risk=high >> \"$CAIRN_OUTPUT\"\n      \
             echo count=3 >> \"$CAIRN_OUTPUT\"\n      \
             echo 'note=two words' >> \"$CAIRN_OUTPUT\"\n  \
             - id: deploy\n    depends_on: analyze\n    \
             when: risk == high && steps.analyze.outputs.count >= 3\n    \
             run: printf '%s' \"$CAIRN_CONTEXT\" > {context_file}\n"
        ),
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id();
    assert_eq!(
        states(&sandbox, run),
        pairs(&[("analyze", "succeeded"), ("deploy", "succeeded")])
    );
    let context: Value =
        serde_json::from_str(&sandbox.read("context.json")).expect("CAIRN_CONTEXT is JSON");
    assert_eq!(context["risk"], "high", "{context}");
    let outputs = &context["steps"]["analyze"]["outputs"];
    assert_eq!(outputs["count"], 3, "numbers stay numbers: {context}");
    assert_eq!(outputs["note"], "two words", "{context}");
    assert_eq!(context["steps"]["analyze"]["state"], "succeeded");
}

#[test]
fn cancel_from_another_process_stops_a_running_pipeline() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-cancel-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let ready = sh_quote(&sandbox.path("ready"));
    let workflow = sandbox.write(
        "cancel.yaml",
        &format!(
            "name: cancel\nsteps:\n  - id: long\n    run: |\n      touch {ready}\n      \
             {sleeper} 300\n  - id: later\n    depends_on: long\n    run: 'true'\n"
        ),
    );
    let mut engine = sandbox.spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the long step to start", Duration::from_secs(20), || {
        sandbox.path("ready").exists()
    });
    let cancel = sandbox.cairn(&["cancel", &run.to_string()]);
    assert_eq!(cancel.code, Some(0), "{cancel}");

    let status = engine
        .wait_within(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "`cairn run` kept going after the cancel\n{}",
                engine.output()
            )
        });
    assert_eq!(
        status.code(),
        Some(1),
        "a cancelled run exits 1\n{}",
        engine.output()
    );
    assert_no_survivors(&marker);
    let conn = sandbox.db();
    assert_eq!(run_state(&conn, run).as_deref(), Some("cancelled"));
    assert_eq!(
        states(&sandbox, run),
        pairs(&[("later", "cancelled"), ("long", "cancelled")])
    );
    let rows = attempts(&conn, run, "long");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "cancelled");
    assert!(attempts(&conn, run, "later").is_empty());

    let again = sandbox.cairn(&["cancel", &run.to_string()]);
    assert_ne!(
        again.code,
        Some(0),
        "cancelling a finished run is an error\n{again}"
    );
    assert!(again.stderr.contains("already finished"), "{again}");
}

#[test]
fn logs_show_a_steps_output_lines() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "logs.yaml",
        "name: logs\nsteps:\n  - id: talk\n    run: |\n      echo 'first line'\n      \
         echo 'to stderr' >&2\n      echo 'last line'\n  \
         - id: quiet\n    depends_on: talk\n    run: echo 'from quiet'\n",
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let run = output.run_id().to_string();

    let step = sandbox.cairn(&["logs", &run, "talk"]);
    assert_eq!(step.code, Some(0), "{step}");
    let lines: Vec<&str> = step.stdout.lines().collect();
    for expected in ["first line", "to stderr", "last line"] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{step}");
    }
    assert!(
        !step.stdout.contains("from quiet"),
        "another step's line leaked in\n{step}"
    );
    let first = lines.iter().position(|l| *l == "first line");
    let last = lines.iter().position(|l| *l == "last line");
    assert!(first < last, "lines out of order\n{step}");

    let all = sandbox.cairn(&["logs", &run]);
    assert_eq!(all.code, Some(0), "{all}");
    assert!(all.stdout.contains("talk | first line"), "{all}");
    assert!(all.stdout.contains("quiet | from quiet"), "{all}");

    let missing = sandbox.cairn(&["logs", &run, "nope"]);
    assert_ne!(missing.code, Some(0), "{missing}");
    assert!(missing.stderr.contains("no step `nope`"), "{missing}");
}

#[test]
fn ctrl_c_cancels_the_run_and_its_running_step() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-sigint-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let ready = sh_quote(&sandbox.path("ready"));
    let workflow = sandbox.write(
        "sigint.yaml",
        &format!("name: sigint\nsteps:\n  - id: long\n    run: |\n      touch {ready}\n      {sleeper} 300\n"),
    );
    let mut engine = sandbox.spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run = engine.wait_for_run_id(Duration::from_secs(20));
    wait_until("the step to start", Duration::from_secs(20), || {
        sandbox.path("ready").exists()
    });
    // What a terminal's Ctrl-C delivers to the engine (steps run in their own process groups,
    // so only the engine sees it).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("failed to send SIGINT");
    let status = engine
        .wait_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("Ctrl-C did not stop the run\n{}", engine.output()));
    assert_eq!(status.code(), Some(1), "{}", engine.output());
    assert_no_survivors(&marker);
    assert_eq!(run_state(&sandbox.db(), run).as_deref(), Some("cancelled"));
}

/// Engine bug (see the test report): after a step's main process exits, `run_command` in
/// `engine/src/exec/process.rs` waits for its stdout/stderr readers to reach end of file
/// *before* killing the process group, so a background child that inherited the pipes holds
/// the step open until it exits by itself, and the step's `timeout` no longer applies.
#[test]
fn a_background_child_holding_stdout_does_not_hang_the_step() {
    let sandbox = Sandbox::new();
    let marker = unique_marker("cairn-background-sleeper");
    let sleeper = sh_quote(&marked_sleep(&sandbox, &marker));
    let workflow = sandbox.write(
        "background.yaml",
        &format!(
            "name: background\nsteps:\n  - id: leaves-a-child\n    timeout: 2s\n    \
             run: |\n      {sleeper} 30 &\n      echo done\n"
        ),
    );
    let started = Instant::now();
    let output = sandbox.cairn_within(
        &["run", &workflow.display().to_string(), "-q"],
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the step's main process exited at once, but the step took {took:?}\n{output}"
    );
    assert_eq!(output.code, Some(0), "{output}");
    assert_no_survivors(&marker);
}

/// Engine bug (see the test report): `pump` in `engine/src/exec/process.rs` reads step output
/// with `lines()`, which fails on bytes that are not UTF-8; it then stops reading and drops
/// the pipe, so the step dies of SIGPIPE on its next write (failure class `killed`, retried
/// as an infrastructure failure, and the run fails).
#[test]
fn output_that_is_not_utf8_is_logged_not_fatal() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "latin1.yaml",
        "name: latin1\nsteps:\n  - id: bytes\n    retries: 0\n    run: |\n      \
         printf 'caf\\351\\n'\n      seq 1 20000\n      echo finished\n",
    );
    let output = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(output.code, Some(0), "{output}");
    let logs = sandbox.cairn(&["logs", &output.run_id().to_string(), "bytes"]);
    assert!(logs.stdout.contains("finished"), "{logs}");
}
