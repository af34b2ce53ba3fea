//! The crash-recovery proof: SIGKILL the engine again and again at random points of a
//! fan-out/fan-in pipeline, resume it each time, and show from the state database and from a
//! journal the steps write themselves that
//!
//! - every run still finishes `succeeded`;
//! - a step whose completion was recorded never starts again (checked after every cycle
//!   against a snapshot taken before the resume, and at the end against the event log);
//! - an interrupted step is attempted again with the same idempotency key, and the orphan of
//!   the dead engine never runs beside the new attempt (journal lines of an older attempt never
//!   follow those of a newer one);
//! - each step has exactly one `step_succeeded` event, and the database passes
//!   `PRAGMA integrity_check`;
//! - the kills were not vacuous: some of them cut steps off mid-attempt (`step_interrupted`).
//!
//! The random delays come from a seeded RNG (`CAIRN_KILL9_SEED` overrides the seed), so a
//! failure can be replayed. See `DESIGN.md`, "Durable execution model".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cairn_tests::{
    Sandbox, attempts, events, file_lines, integrity_check, run_state, sh_quote, step_states,
};

/// Kills to deliver in total, across as many runs as that takes.
const KILLS: usize = 50;
/// A random kill lands this long after the engine process starts.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 20..=400;
/// The whole test gives up (and fails) after this long.
const BUDGET: Duration = Duration::from_secs(150);
const DEFAULT_SEED: u64 = 0xCA12_0009;

/// The DAG: a root, a fan-out of four, three diamonds over neighbours, a fan-in, a second
/// diamond, and a final step that also reaches back to the fan-out (15 steps).
const DAG: &[(&str, &[&str])] = &[
    ("source", &[]),
    ("fan-a", &["source"]),
    ("fan-b", &["source"]),
    ("fan-c", &["source"]),
    ("fan-d", &["source"]),
    ("mid-ab", &["fan-a", "fan-b"]),
    ("mid-bc", &["fan-b", "fan-c"]),
    ("mid-cd", &["fan-c", "fan-d"]),
    ("join", &["mid-ab", "mid-bc", "mid-cd"]),
    ("left", &["join"]),
    ("right", &["join"]),
    ("merge", &["left", "right"]),
    ("check", &["merge"]),
    ("package", &["merge"]),
    ("publish", &["check", "package", "fan-d"]),
];

fn workflow(journal: &std::path::Path) -> String {
    let mut text = format!(
        "name: kill9-diamonds\nconcurrency: 3\nenv:\n  JOURNAL: {}\nsteps:\n",
        sh_quote(journal)
    );
    for (index, (id, dependencies)) in DAG.iter().enumerate() {
        // 10..=150 ms, different for neighbouring steps.
        let sleep_ms = 10 + (index * 37) % 141;
        let line = format!("{id} $CAIRN_RUN_ID $CAIRN_ATTEMPT $CAIRN_IDEMPOTENCY_KEY");
        let _ = writeln!(text, "  - id: {id}");
        if !dependencies.is_empty() {
            let _ = writeln!(text, "    depends_on: [{}]", dependencies.join(", "));
        }
        let _ = writeln!(text, "    run: |");
        let _ = writeln!(text, "      echo \"{line} start\" >> \"$JOURNAL\"");
        let _ = writeln!(text, "      sleep 0.{sleep_ms:03}");
        let _ = writeln!(text, "      echo \"{line} end\" >> \"$JOURNAL\"");
    }
    text
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct JournalLine {
    step: String,
    run: i64,
    attempt: i64,
    key: String,
    start: bool,
}

fn read_journal(path: &std::path::Path) -> Vec<JournalLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "malformed journal line {line:?}");
            JournalLine {
                step: fields[0].to_string(),
                run: fields[1].parse().expect("run id in the journal"),
                attempt: fields[2].parse().expect("attempt in the journal"),
                key: fields[3].to_string(),
                start: match fields[4] {
                    "start" => true,
                    "end" => false,
                    other => panic!("unknown journal phase {other:?} in {line:?}"),
                },
            }
        })
        .collect()
}

/// The newest run id, tolerating a database that does not exist yet or was killed while
/// being created.
fn latest_run(sandbox: &Sandbox) -> Option<i64> {
    let conn = sandbox.try_db()?;
    conn.query_row("SELECT MAX(id) FROM runs", [], |row| {
        row.get::<_, Option<i64>>(0)
    })
    .ok()
    .flatten()
}

fn succeeded_steps(sandbox: &Sandbox, run: i64) -> BTreeSet<String> {
    step_states(&sandbox.db(), run)
        .into_iter()
        .filter(|(_, state)| state == "succeeded")
        .map(|(step, _)| step)
        .collect()
}

#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    /// Kills that landed before the run existed in the database.
    kills_before_run: usize,
    cycles: usize,
    /// Engine processes that finished on their own before their kill was due.
    clean_exits: usize,
}

#[test]
fn sigkill_at_random_points_never_reruns_a_completed_step() {
    let started = Instant::now();
    let seed = std::env::var("CAIRN_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed);
    let sandbox = Sandbox::new();
    let journal = sandbox.path("journal.txt");
    let workflow_path = sandbox.write("kill9.yaml", &workflow(&journal));
    let workflow_arg = workflow_path.display().to_string();

    let mut tally = Tally::default();
    let mut runs: Vec<i64> = Vec::new();
    let mut current: Option<i64> = None;
    let mut violations: Vec<String> = Vec::new();

    while tally.kills < KILLS || current.is_some() {
        assert!(
            started.elapsed() < BUDGET,
            "gave up after {BUDGET:?} (seed {seed}): {tally:?}, runs {runs:?}"
        );
        tally.cycles += 1;
        // What is already done must stay done.
        let snapshot = current
            .map(|run| succeeded_steps(&sandbox, run))
            .unwrap_or_default();
        let journal_before = read_journal(&journal).len();
        let args: Vec<String> = match current {
            None => vec!["run".into(), workflow_arg.clone(), "-q".into()],
            Some(run) => vec!["resume".into(), run.to_string(), "-q".into()],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut engine = sandbox.spawn(&args);
        // Once enough kills have landed, let the last run finish.
        let limit = if tally.kills < KILLS {
            Duration::from_millis(rng.random_range(KILL_DELAY_MS))
        } else {
            Duration::from_secs(60)
        };
        let killed = engine.wait_within(limit).is_none() && engine.kill9();
        if killed {
            tally.kills += 1;
        }
        if !killed {
            tally.clean_exits += 1;
            let output = engine.output();
            assert_eq!(
                output.code,
                Some(0),
                "`cairn {}` failed on its own (seed {seed}, cycle {})\n{output}",
                args.join(" "),
                tally.cycles
            );
        }
        if current.is_none() {
            match latest_run(&sandbox) {
                Some(run) if !runs.contains(&run) => {
                    runs.push(run);
                    current = Some(run);
                }
                _ => {
                    assert!(killed, "`cairn run` exited cleanly without creating a run");
                    tally.kills_before_run += 1;
                }
            }
        }
        let Some(run) = current else { continue };

        for line in &read_journal(&journal)[journal_before..] {
            if line.start && line.run == run && snapshot.contains(&line.step) {
                violations.push(format!(
                    "cycle {}: step `{}` of run {run} started again (attempt {}) although it was \
                     recorded succeeded before this engine started",
                    tally.cycles, line.step, line.attempt
                ));
            }
        }
        match run_state(&sandbox.db(), run).as_deref() {
            Some("succeeded") => current = None,
            Some("running") => {}
            other => panic!(
                "run {run} ended {other:?} (seed {seed})\n{}",
                engine.output()
            ),
        }
    }
    assert!(
        violations.is_empty(),
        "completed steps ran again:\n{}",
        violations.join("\n")
    );

    // The end state, from the database and from the journal.
    let conn = sandbox.db();
    assert_eq!(integrity_check(&conn), "ok");
    let journal_lines = read_journal(&journal);
    let mut interrupted_attempts = 0usize;
    let mut interrupted_while_started = 0usize;
    let mut reexecuted_steps = 0usize;
    let mut orphans_killed = 0usize;
    for &run in &runs {
        assert_eq!(
            run_state(&conn, run).as_deref(),
            Some("succeeded"),
            "run {run}"
        );
        let events = events(&conn, run);
        for (step, _) in DAG {
            let step_events: Vec<_> = events
                .iter()
                .filter(|e| e.step_id.as_deref() == Some(*step))
                .collect();
            let successes: Vec<_> = step_events
                .iter()
                .filter(|e| e.kind == "step_succeeded")
                .collect();
            assert_eq!(successes.len(), 1, "run {run} step {step}: {successes:?}");
            let success = successes[0];
            let succeeded_attempt = success.attempt.expect("step_succeeded has an attempt");
            let late: Vec<_> = step_events
                .iter()
                .filter(|e| e.seq > success.seq)
                .map(|e| e.kind.as_str())
                .collect();
            assert!(
                late.is_empty(),
                "run {run} step {step}: events after success: {late:?}"
            );

            // Attempts: every one before the last was cut off by a kill, the last succeeded.
            let rows = attempts(&conn, run, step);
            assert_eq!(rows.last().map(|a| a.attempt), Some(succeeded_attempt));
            for row in &rows[..rows.len() - 1] {
                assert_eq!(row.state, "interrupted", "run {run} step {step}: {row:?}");
            }
            assert_eq!(rows.last().map(|a| a.state.as_str()), Some("succeeded"));
            let interrupted = step_events.iter().filter(|e| e.kind == "step_interrupted");
            for event in interrupted {
                interrupted_attempts += 1;
                orphans_killed += event.data["orphans_killed"].as_array().map_or(0, Vec::len);
            }

            // The journal, in the order the processes wrote it.
            let lines: Vec<_> = journal_lines
                .iter()
                .filter(|l| l.run == run && l.step == *step)
                .collect();
            let expected_key = format!("{run}/{step}");
            for line in &lines {
                assert_eq!(line.key, expected_key, "idempotency key of {line:?}");
                assert!(
                    line.attempt <= succeeded_attempt,
                    "run {run} step {step} ran attempt {} after attempt {succeeded_attempt} \
                     succeeded",
                    line.attempt
                );
            }
            let mut starts: BTreeMap<i64, usize> = BTreeMap::new();
            for line in lines.iter().filter(|l| l.start) {
                *starts.entry(line.attempt).or_default() += 1;
            }
            assert!(
                starts.values().all(|&n| n == 1),
                "run {run} step {step}: {starts:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| !l.start && l.attempt == succeeded_attempt),
                "run {run} step {step}: the succeeded attempt never wrote its end line"
            );
            for pair in lines.windows(2) {
                assert!(
                    pair[1].attempt >= pair[0].attempt,
                    "run {run} step {step}: attempt {} wrote after attempt {} had started — \
                     an orphan ran beside its replacement",
                    pair[1].attempt,
                    pair[0].attempt
                );
            }
            interrupted_while_started += rows
                .iter()
                .filter(|a| a.state == "interrupted" && starts.contains_key(&a.attempt))
                .count();
            if starts.keys().any(|&attempt| attempt > 1) {
                reexecuted_steps += 1;
            }
        }
    }
    let interrupted_events: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'step_interrupted'",
            [],
            |row| row.get(0),
        )
        .expect("failed to count step_interrupted events");
    assert_eq!(interrupted_events as usize, interrupted_attempts);
    assert!(
        interrupted_attempts > 0 && interrupted_while_started > 0,
        "no kill interrupted a running step: the test proved nothing ({tally:?})"
    );
    let reclaimed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'run_reclaimed'",
            [],
            |row| row.get(0),
        )
        .expect("failed to count run_reclaimed events");
    // Every step process of every run is gone: resume killed the orphans, or they finished.
    let leftovers = sandbox.processes();
    assert!(
        leftovers.is_empty(),
        "processes outlived their runs: {leftovers:?}"
    );

    println!(
        "kill9 summary (seed {seed}): {} kills ({} before the run existed) over {} engine \
         starts, {} runs of {} steps, all succeeded; {} runs reclaimed; {} attempts interrupted \
         ({} of them after the step had started), {} orphan processes killed on resume, {} \
         steps re-executed after an interruption; {} engines finished on their own; {:.1}s",
        tally.kills,
        tally.kills_before_run,
        tally.cycles,
        runs.len(),
        DAG.len(),
        reclaimed,
        interrupted_attempts,
        interrupted_while_started,
        orphans_killed,
        reexecuted_steps,
        tally.clean_exits,
        started.elapsed().as_secs_f64()
    );
}

/// The kills above land after the run exists (the engine creates it within a few
/// milliseconds); these land earlier — while the database is created and migrated, while the
/// run is being recorded, as its first step starts — and must leave a database that opens,
/// passes its integrity check, and whose runs all resume to success.
#[test]
fn sigkill_during_startup_leaves_a_usable_database() {
    let seed = std::env::var("CAIRN_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5747);
    let sandbox = Sandbox::new();
    let journal = sandbox.path("journal.txt");
    let workflow = sandbox.write(
        "startup.yaml",
        &format!(
            "name: startup\nenv:\n  JOURNAL: {}\nsteps:\n  - id: one\n    run: echo \"one $CAIRN_RUN_ID\" >> \"$JOURNAL\"; sleep 0.1\n  \
             - id: two\n    depends_on: one\n    run: sleep 0.05; echo \"two $CAIRN_RUN_ID\" >> \"$JOURNAL\"\n",
            sh_quote(&journal)
        ),
    );
    let workflow = workflow.display().to_string();
    let mut kills = 0;
    let mut before_database = 0;
    let mut before_run = 0;
    for _ in 0..20 {
        let existing = latest_run(&sandbox);
        let had_database = sandbox.db_path().exists();
        let mut engine = sandbox.spawn(&["run", &workflow, "-q"]);
        let delay = Duration::from_millis(rng.random_range(0..=15));
        if engine.wait_within(delay).is_none() && engine.kill9() {
            kills += 1;
            before_database += usize::from(!had_database && latest_run(&sandbox).is_none());
            before_run += usize::from(latest_run(&sandbox) == existing);
        }
    }
    assert!(
        kills >= 15,
        "only {kills} of 20 engines were still starting when killed"
    );

    let resumed = sandbox.cairn(&["resume", "-q"]);
    assert_eq!(resumed.code, Some(0), "{resumed}");
    let fresh = sandbox.cairn(&["run", &workflow, "-q"]);
    assert_eq!(fresh.code, Some(0), "{fresh}");
    let conn = sandbox.db();
    assert_eq!(integrity_check(&conn), "ok");
    let runs = cairn_tests::run_ids(&conn);
    let lines = file_lines(&journal);
    for &run in &runs {
        assert_eq!(
            run_state(&conn, run).as_deref(),
            Some("succeeded"),
            "run {run}"
        );
        for step in ["one", "two"] {
            let successes = events(&conn, run)
                .iter()
                .filter(|e| e.step_id.as_deref() == Some(step) && e.kind == "step_succeeded")
                .count();
            assert_eq!(successes, 1, "run {run} step {step}");
            let ran = lines
                .iter()
                .filter(|l| **l == format!("{step} {run}"))
                .count();
            let attempts = attempts(&conn, run, step).len();
            assert!(
                ran >= 1 && ran <= attempts,
                "run {run} step {step}: ran {ran} times in {attempts} attempts"
            );
        }
    }
    println!(
        "startup kills (seed {seed}): {kills} kills, {before_database} before the database \
         existed, {before_run} before the run was recorded; {} runs recorded, all succeeded",
        runs.len()
    );
}

/// A kill while the database file is being created and migrated (the first milliseconds of
/// the first command ever run) leaves a file the next command opens and completes.
#[test]
fn sigkill_while_the_database_is_created_is_recovered() {
    let mut early = 0;
    for delay_ms in 0..10u64 {
        let sandbox = Sandbox::new();
        let workflow = sandbox
            .write(
                "one.yaml",
                "name: one\nsteps:\n  - id: only\n    run: sleep 0.05\n",
            )
            .display()
            .to_string();
        let mut engine = sandbox.spawn(&["run", &workflow, "-q"]);
        if engine
            .wait_within(Duration::from_millis(delay_ms))
            .is_none()
            && engine.kill9()
        {
            early += usize::from(latest_run(&sandbox).is_none());
        }
        let resumed = sandbox.cairn(&["resume", "-q"]);
        assert_eq!(resumed.code, Some(0), "delay {delay_ms} ms\n{resumed}");
        let fresh = sandbox.cairn(&["run", &workflow, "-q"]);
        assert_eq!(fresh.code, Some(0), "delay {delay_ms} ms\n{fresh}");
        let conn = sandbox.db();
        assert_eq!(integrity_check(&conn), "ok", "delay {delay_ms} ms");
        for run in cairn_tests::run_ids(&conn) {
            assert_eq!(
                run_state(&conn, run).as_deref(),
                Some("succeeded"),
                "delay {delay_ms} ms"
            );
        }
    }
    println!("database creation kills: {early} of 10 landed before the first run was recorded");
}
