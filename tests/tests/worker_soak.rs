//! A hundred runs through workers while faults keep coming, on a private PostgreSQL server:
//! four `cairn run` engines at a time drive runs whose steps three `cairn worker` processes
//! run, while every 1.5 s one worker is killed (SIGKILL, and a new one started) or stalled
//! past its lease (SIGSTOP for 2.5 s, then SIGCONT: a worker cut off and back, whose task
//! another worker has taken meanwhile), and PostgreSQL is restarted once mid-way.
//!
//! Then, in the store: every run succeeded; every step succeeded once, through one task (so
//! none is left queued or leased) with one result, written by the worker holding the task's
//! last lease (no stale worker's write landed); and once the workers are stopped, no process
//! of theirs or their steps' is left running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use cairn_engine::store::{Store, TaskResult, test_postgres};
use cairn_tests::{Running, Sandbox, wait_until};

const RUNS: usize = 100;
const ENGINES: usize = 4;
const WORKERS: usize = 3;
const LEASE: &str = "1500ms";

const WORKFLOW: &str = "name: soak
steps:
  - id: a
    runs_on: [linux]
    run: sleep 0.3; echo \"by=$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"
  - id: b
    runs_on: [linux]
    run: sleep 0.3; echo \"by=$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"
  - id: c
    depends_on: [a, b]
    runs_on: [linux]
    run: sleep 0.2; echo \"by=$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"
";

/// The faults injected, for the assertions and the summary.
#[derive(Default)]
struct Faults {
    killed: AtomicUsize,
    stalled: AtomicUsize,
    restarted: AtomicUsize,
}

struct Workers {
    sandbox: Arc<Sandbox>,
    url: String,
    running: Mutex<Vec<Running>>,
    started: AtomicUsize,
}

impl Workers {
    fn start(&self) {
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("w{number}");
        let worker = self.sandbox.spawn(&[
            "worker", "--store", &self.url, "--name", &name, "--labels", "linux", "--lease", LEASE,
        ]);
        self.lock().push(worker);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[test]
fn a_hundred_runs_ride_out_killed_stalled_workers_and_a_postgres_restart() {
    let server = Arc::new(test_postgres::Server::dedicated());
    let url = server.database();
    let sandbox = Arc::new(Sandbox::new());
    std::fs::create_dir_all(sandbox.home()).expect("the home");
    std::fs::write(sandbox.home().join("cairn.yaml"), format!("store: {url}\n"))
        .expect("cairn.yaml");
    let workflow = sandbox.write("soak.yaml", WORKFLOW).display().to_string();
    let workers = Arc::new(Workers {
        sandbox: sandbox.clone(),
        url: url.clone(),
        running: Mutex::new(Vec::new()),
        started: AtomicUsize::new(0),
    });
    for _ in 0..WORKERS {
        workers.start();
    }

    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(Faults::default());
    let chaos = {
        let (workers, finished, done, faults, server) = (
            workers.clone(),
            finished.clone(),
            done.clone(),
            faults.clone(),
            server.clone(),
        );
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1500));
                round += 1;
                if faults.restarted.load(Ordering::Relaxed) == 0
                    && finished.load(Ordering::Relaxed) >= RUNS / 3
                {
                    server.restart();
                    faults.restarted.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let victim = {
                    let running = workers.lock();
                    running[round * 7 % running.len()].pid() as i32
                };
                if round.is_multiple_of(2) {
                    let mut running = workers.lock();
                    if let Some(index) = running.iter().position(|w| w.pid() as i32 == victim) {
                        let mut dead = running.remove(index);
                        drop(running);
                        if dead.kill9() {
                            faults.killed.fetch_add(1, Ordering::Relaxed);
                        }
                        workers.start();
                    }
                } else {
                    let _ = kill(Pid::from_raw(victim), Signal::SIGSTOP);
                    std::thread::sleep(Duration::from_millis(2500));
                    let _ = kill(Pid::from_raw(victim), Signal::SIGCONT);
                    faults.stalled.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let engines: Vec<_> = (0..ENGINES)
        .map(|engine| {
            let (sandbox, workflow, finished) =
                (sandbox.clone(), workflow.clone(), finished.clone());
            std::thread::spawn(move || {
                (0..RUNS / ENGINES)
                    .map(|i| {
                        let output = sandbox
                            .cairn_within(&["run", &workflow, "-q"], Duration::from_secs(180));
                        assert!(
                            output.code == Some(0),
                            "run {i} of engine {engine}: {output}"
                        );
                        finished.fetch_add(1, Ordering::Relaxed);
                        output.run_id()
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let run_ids: Vec<i64> = engines
        .into_iter()
        .flat_map(|e| e.join().expect("an engine's runs"))
        .collect();
    done.store(true, Ordering::Relaxed);
    chaos.join().expect("the fault injector");

    let store = Store::open_postgres(&url, &sandbox.path("inspect.db")).expect("the store");
    assert_eq!(run_ids.len(), RUNS);
    let mut taken_over = 0;
    for &run_id in &run_ids {
        assert_eq!(
            store.run(run_id).expect("run").state.as_str(),
            "succeeded",
            "run {run_id}"
        );
        let tasks = store.tasks(run_id).expect("tasks");
        let events = store.events(run_id).expect("events");
        let mut per_step: HashMap<&str, usize> = HashMap::new();
        for task in &tasks {
            *per_step.entry(task.step_id.as_str()).or_default() += 1;
            assert_eq!(task.state, "succeeded", "run {run_id}: {task:?}");
            let by = task.worker.clone().expect("a worker");
            assert_eq!(
                task.result,
                Some(TaskResult::Succeeded {
                    outputs: serde_json::json!({ "by": by })
                }),
                "run {run_id}: the result is the last lease holder's: {task:?}"
            );
            let results: Vec<_> = events
                .iter()
                .filter(|e| e.kind.starts_with("task_") && e.data["task"] == task.id)
                .filter(|e| matches!(e.kind.as_str(), "task_succeeded" | "task_failed"))
                .collect();
            assert_eq!(results.len(), 1, "run {run_id}: one result: {results:?}");
            assert_eq!(results[0].data["epoch"], task.epoch, "{results:?}");
            assert_eq!(results[0].data["worker"], by.as_str(), "{results:?}");
            if task.epoch > 1 {
                taken_over += 1;
            }
        }
        assert_eq!(
            per_step,
            HashMap::from([("a", 1), ("b", 1), ("c", 1)]),
            "run {run_id}: one task per step"
        );
        for step in ["a", "b", "c"] {
            let succeeded = events
                .iter()
                .filter(|e| e.kind == "step_succeeded" && e.step_id.as_deref() == Some(step))
                .count();
            assert_eq!(succeeded, 1, "run {run_id}: step {step} succeeded once");
        }
    }

    // Stopped workers report how many of their tasks were taken from them.
    let mut lost = 0;
    for mut worker in std::mem::take(&mut *workers.lock()) {
        let _ = kill(Pid::from_raw(worker.pid() as i32), Signal::SIGTERM);
        assert!(worker.wait_within(Duration::from_secs(30)).is_some());
        let text = worker.output().to_string();
        lost += text
            .lines()
            .filter(|l| l.contains("lost to another worker"))
            .find_map(|l| l.split(", ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    wait_until(
        "no process of the workers or their steps",
        Duration::from_secs(20),
        || sandbox.processes().is_empty(),
    );
    let faults = (
        faults.killed.load(Ordering::Relaxed),
        faults.stalled.load(Ordering::Relaxed),
        faults.restarted.load(Ordering::Relaxed),
    );
    eprintln!(
        "{RUNS} runs, {} tasks: {} workers killed, {} stalled past their lease, PostgreSQL \
         restarted {}; {taken_over} tasks taken over, {lost} results dropped by stale workers",
        RUNS * 3,
        faults.0,
        faults.1,
        faults.2
    );
    assert!(faults.0 >= 1 && faults.1 >= 1, "faults: {faults:?}");
    assert_eq!(faults.2, 1, "PostgreSQL restarted once");
}
