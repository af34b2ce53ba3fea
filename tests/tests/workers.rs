//! Workers through the real binary, on a private PostgreSQL server: `cairn run` drives a
//! workflow whose `runs_on:` steps `cairn worker` processes run.
//!
//! - a worker killed (SIGKILL) mid-step: another worker takes the task over once its lease
//!   expires, and the run finishes with every step completed once;
//! - a worker stopped (SIGSTOP) past its lease while its command runs: another worker takes
//!   the task over; when the first wakes up, none of its late output and no result of its
//!   lands;
//! - PostgreSQL restarted (a fast shutdown cuts every session) while a worker runs a step: the
//!   engine, the worker and the run ride it out, and the step completes once;
//! - a worker with a home of its own (another host's) runs a step in a checkout of the run's
//!   commit and opens the step's secret with its copy of the key: the value never sits in the
//!   store, and is masked in what the worker writes.

mod common_git;

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use cairn_engine::store::{Store, TaskRecord, TaskResult, test_postgres};
use cairn_tests::{Running, Sandbox, wait_until};
use common_git::Repo;

/// Short leases keep the tests to seconds; the sequence is the one of the 30 s default.
const LEASE: &str = "1500ms";

struct Cluster {
    sandbox: Sandbox,
    url: String,
    store: Store,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::on(test_postgres::database())
    }

    fn on(url: String) -> Cluster {
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(sandbox.home()).expect("the home");
        std::fs::write(sandbox.home().join("cairn.yaml"), format!("store: {url}\n"))
            .expect("cairn.yaml");
        let store = Store::open_postgres(&url, &sandbox.path("inspect.db")).expect("the store");
        Cluster {
            sandbox,
            url,
            store,
        }
    }

    fn worker(&self, name: &str, labels: &str) -> Running {
        self.sandbox.spawn(&[
            "worker", "--store", &self.url, "--name", name, "--labels", labels, "--lease", LEASE,
        ])
    }

    fn tasks(&self, run_id: i64) -> Vec<TaskRecord> {
        self.store.tasks(run_id).expect("tasks")
    }

    fn task_of(&self, run_id: i64, step: &str) -> Option<TaskRecord> {
        self.tasks(run_id).into_iter().find(|t| t.step_id == step)
    }

    fn log_lines(&self, run_id: i64, step: &str) -> Vec<String> {
        self.store
            .logs(run_id, Some(step), 0)
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect()
    }

    fn event_kinds(&self, run_id: i64, step: &str) -> Vec<String> {
        self.store
            .events(run_id)
            .expect("events")
            .into_iter()
            .filter(|e| e.step_id.as_deref() == Some(step))
            .map(|e| e.kind)
            .collect()
    }
}

#[test]
fn a_killed_worker_s_task_is_taken_over_and_every_step_completes_once() {
    let cluster = Cluster::new();
    let workflow = cluster.sandbox.write(
        "remote.yaml",
        "name: remote\nsteps:\n  \
         - id: build\n    runs_on: [linux, docker]\n    run: |\n      \
           echo \"build on $CAIRN_WORKER\"\n      sleep 3\n      \
           echo \"image=sha256:$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"\n  \
         - id: test\n    depends_on: build\n    runs_on: [linux]\n    \
           run: echo \"test on $CAIRN_WORKER after ${CAIRN_STEP_BUILD_IMAGE:-?}\"\n  \
         - id: local\n    depends_on: test\n    run: echo local\n",
    );
    let mut first = cluster.worker("w1", "linux,docker");
    let mut run = cluster
        .sandbox
        .spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run_id = run.wait_for_run_id(Duration::from_secs(30));
    wait_until("w1 leased the build", Duration::from_secs(30), || {
        cluster
            .task_of(run_id, "build")
            .is_some_and(|t| t.state == "leased" && t.worker.as_deref() == Some("w1"))
    });
    wait_until("w1's command started", Duration::from_secs(30), || {
        cluster
            .log_lines(run_id, "build")
            .iter()
            .any(|l| l == "build on w1")
    });
    assert!(first.kill9(), "w1 was running");
    let mut second = cluster.worker("w2", "linux,docker");
    let status = run
        .wait_within(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the run did not finish\n{}", run.output()));
    assert!(status.success(), "{}", run.output());

    let build = cluster.task_of(run_id, "build").expect("the build task");
    assert_eq!(build.state, "succeeded");
    assert_eq!((build.worker.as_deref(), build.epoch), (Some("w2"), 2));
    assert_eq!(
        build.result,
        Some(TaskResult::Succeeded {
            outputs: serde_json::json!({ "image": "sha256:w2" })
        })
    );
    let kinds = cluster.event_kinds(run_id, "build");
    for (kind, times) in [
        ("task_queued", 1),
        ("task_leased", 1),
        ("task_reclaimed", 1),
        ("task_succeeded", 1),
        ("step_succeeded", 1),
    ] {
        assert_eq!(
            kinds.iter().filter(|k| *k == kind).count(),
            times,
            "{kind} in {kinds:?}"
        );
    }
    assert!(
        cluster
            .log_lines(run_id, "test")
            .iter()
            .any(|l| l.starts_with("test on w2")),
        "{:?}",
        cluster.log_lines(run_id, "test")
    );
    assert_eq!(
        cluster.tasks(run_id).len(),
        2,
        "the local step ran in the engine"
    );
    assert!(
        cluster
            .log_lines(run_id, "local")
            .contains(&"local".to_string())
    );
    let _ = kill(Pid::from_raw(second.pid() as i32), Signal::SIGTERM);
    assert!(second.wait_within(Duration::from_secs(20)).is_some());
    assert!(
        second.output().to_string().contains("2 tasks finished"),
        "{}",
        second.output()
    );
}

#[test]
fn a_stalled_worker_writes_nothing_after_its_task_is_taken() {
    let cluster = Cluster::new();
    let workflow = cluster.sandbox.write(
        "stall.yaml",
        "name: stall\nsteps:\n  \
         - id: work\n    runs_on: [linux]\n    run: |\n      \
           echo \"start on $CAIRN_WORKER\"\n      sleep 2\n      \
           echo \"late from $CAIRN_WORKER\"\n      \
           echo \"by=$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"\n",
    );
    let mut first = cluster.worker("w1", "linux");
    let mut run = cluster
        .sandbox
        .spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run_id = run.wait_for_run_id(Duration::from_secs(30));
    wait_until("w1 started the command", Duration::from_secs(30), || {
        cluster
            .log_lines(run_id, "work")
            .iter()
            .any(|l| l == "start on w1")
    });
    let w1 = Pid::from_raw(first.pid() as i32);
    kill(w1, Signal::SIGSTOP).expect("stop w1");
    // w1's command goes on without it and ends; w1 holds its output unread past its lease.
    let mut second = cluster.worker("w2", "linux");
    let status = run
        .wait_within(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the run did not finish\n{}", run.output()));
    assert!(status.success(), "{}", run.output());
    kill(w1, Signal::SIGCONT).expect("wake w1");
    // w1 reads its command's late output and outcome now; both must be refused.
    std::thread::sleep(Duration::from_secs(3));
    let lines = cluster.log_lines(run_id, "work");
    assert!(lines.contains(&"late from w2".to_string()), "{lines:?}");
    assert!(!lines.contains(&"late from w1".to_string()), "{lines:?}");
    let task = cluster.task_of(run_id, "work").expect("the task");
    assert_eq!(
        (task.worker.as_deref(), task.state.as_str()),
        (Some("w2"), "succeeded")
    );
    assert_eq!(
        task.result,
        Some(TaskResult::Succeeded {
            outputs: serde_json::json!({ "by": "w2" })
        })
    );
    let step = cluster
        .store
        .steps(run_id)
        .expect("steps")
        .into_iter()
        .find(|s| s.step_id == "work")
        .expect("the step");
    assert_eq!(step.outputs, Some(serde_json::json!({ "by": "w2" })));
    for worker in [&mut first, &mut second] {
        let _ = kill(Pid::from_raw(worker.pid() as i32), Signal::SIGTERM);
        assert!(worker.wait_within(Duration::from_secs(20)).is_some());
    }
    assert!(
        first
            .output()
            .to_string()
            .contains("1 lost to another worker"),
        "{}",
        first.output()
    );
}

#[test]
fn a_postgres_restart_mid_step_is_ridden_out() {
    let server = test_postgres::Server::dedicated();
    let cluster = Cluster::on(server.database());
    let workflow = cluster.sandbox.write(
        "restart.yaml",
        "name: restart\nsteps:\n  \
         - id: work\n    runs_on: [linux]\n    run: |\n      \
           echo \"start on $CAIRN_WORKER\"\n      sleep 4\n      echo \"done=1\" >> \"$CAIRN_OUTPUT\"\n  \
         - id: after\n    depends_on: work\n    runs_on: [linux]\n    run: echo after\n",
    );
    let mut worker = cluster.worker("w1", "linux");
    let mut run = cluster
        .sandbox
        .spawn(&["run", &workflow.display().to_string(), "-q"]);
    let run_id = run.wait_for_run_id(Duration::from_secs(30));
    wait_until("the step started", Duration::from_secs(30), || {
        cluster
            .log_lines(run_id, "work")
            .iter()
            .any(|l| l == "start on w1")
    });
    server.restart();
    let status = run
        .wait_within(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the run did not finish\n{}", run.output()));
    assert!(status.success(), "{}\n{}", run.output(), worker.output());
    let tasks = cluster.tasks(run_id);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.state == "succeeded"), "{tasks:?}");
    let work = cluster.task_of(run_id, "work").expect("the task");
    assert_eq!(work.epoch, 1, "the task was leased once: {work:?}");
    let starts = cluster
        .log_lines(run_id, "work")
        .iter()
        .filter(|l| l.starts_with("start on"))
        .count();
    assert_eq!(starts, 1, "the command ran once");
    let _ = kill(Pid::from_raw(worker.pid() as i32), Signal::SIGTERM);
    assert!(worker.wait_within(Duration::from_secs(20)).is_some());
}

#[test]
fn a_worker_checks_out_the_run_s_commit_and_opens_its_secrets_itself() {
    const SECRET: &str = "s3cr3t-value-41";
    let cluster = Cluster::new();
    cluster.sandbox.set_secret("DEPLOY_TOKEN", SECRET);
    // The worker's own home, as on another host: its key is a copy of the engine's.
    let worker_home = cluster.sandbox.path("worker-home");
    std::fs::create_dir_all(&worker_home).expect("the worker's home");
    let worker = |name: &str| {
        cluster.sandbox.spawn_with_env(
            &[
                "worker",
                "--store",
                &cluster.url,
                "--name",
                name,
                "--labels",
                "linux",
                "--lease",
                LEASE,
            ],
            &[("CAIRN_HOME", &worker_home.display().to_string())],
        )
    };
    let repo = Repo::init(&cluster.sandbox.path("app"));
    let first = repo.commit_file("VERSION", "1\n", "one");
    repo.commit_file("VERSION", "2\n", "two");
    let workflow = cluster.sandbox.write(
        "checkout.yaml",
        "name: checkout\nsteps:\n  \
         - id: read\n    runs_on: [linux]\n    secrets: [DEPLOY_TOKEN]\n    run: |\n      \
           echo \"version=$(cat VERSION)\" >> \"$CAIRN_OUTPUT\"\n      \
           echo \"in $PWD with token $DEPLOY_TOKEN\"\n      \
           echo \"token=$DEPLOY_TOKEN\" >> \"$CAIRN_OUTPUT\"\n",
    );
    let run_checkout = || {
        cluster.sandbox.cairn_within(
            &[
                "run",
                &workflow.display().to_string(),
                "--repo",
                &repo.path.display().to_string(),
                "--commit",
                &first,
                "-q",
            ],
            Duration::from_secs(90),
        )
    };

    // Without the key the worker cannot open the secret, and says where the key belongs.
    let mut keyless = worker("keyless");
    let refused = run_checkout();
    assert_ne!(refused.code, Some(0), "{refused}");
    let task = cluster.task_of(refused.run_id(), "read").expect("the task");
    let Some(TaskResult::Failed { message, .. }) = &task.result else {
        panic!("{task:?}");
    };
    assert!(message.contains("secrets.key"), "{message}");
    let _ = kill(Pid::from_raw(keyless.pid() as i32), Signal::SIGTERM);
    assert!(keyless.wait_within(Duration::from_secs(20)).is_some());

    std::fs::copy(
        cluster.sandbox.home().join("secrets.key"),
        worker_home.join("secrets.key"),
    )
    .expect("the key copied");
    let mut keyed = worker("keyed");
    let output = run_checkout();
    assert_eq!(output.code, Some(0), "{output}");
    let run_id = output.run_id();
    let task = cluster.task_of(run_id, "read").expect("the task");
    assert_eq!(
        task.result,
        Some(TaskResult::Succeeded {
            outputs: serde_json::json!({ "version": 1, "token": "***" })
        }),
        "the first commit, not HEAD, and the secret masked"
    );
    assert_eq!(
        task.spec.secrets,
        vec![("DEPLOY_TOKEN".to_string(), "DEPLOY_TOKEN".to_string())]
    );
    assert!(
        !format!("{:?}", task.spec).contains(SECRET),
        "the value never travels through the store: {:?}",
        task.spec
    );
    let lines = cluster.log_lines(run_id, "read");
    let used = lines
        .iter()
        .find(|l| l.contains("with token"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(used.ends_with("/src with token ***"), "{used}");
    assert!(lines.iter().all(|l| !l.contains(SECRET)), "{lines:?}");
    let _ = kill(Pid::from_raw(keyed.pid() as i32), Signal::SIGTERM);
    assert!(keyed.wait_within(Duration::from_secs(20)).is_some());
}

#[test]
fn bench_workers_drives_a_run_per_worker_count() {
    let cluster = Cluster::new();
    let output = cluster.sandbox.cairn_within(
        &[
            "bench",
            "workers",
            "--store",
            &cluster.url,
            "--steps",
            "4",
            "--seconds",
            "0.2",
            "--workers",
            "1,2",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(output.code, Some(0), "{output}");
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{report}");
    assert_eq!(rounds[0]["workers"], 1);
    assert_eq!(rounds[1]["workers"], 2);
    // Four steps of 0.2 s take at least 0.8 s on one worker and 0.4 s on two.
    assert!(
        rounds[0]["seconds"].as_f64().expect("seconds") >= 0.8,
        "{report}"
    );
    assert!(
        rounds[1]["seconds"].as_f64().expect("seconds") >= 0.4,
        "{report}"
    );
    // Every step of each round's run ran once, on a worker of that round.
    let runs = cluster.store.runs(10).expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        let tasks = cluster.tasks(run.id);
        assert_eq!(tasks.len(), 4, "{tasks:?}");
        let label = &tasks[0].labels[0];
        assert!(
            tasks.iter().all(|t| t.state == "succeeded"
                && t.epoch == 1
                && t.worker
                    .as_deref()
                    .is_some_and(|w| w.starts_with(label.as_str()))),
            "{tasks:?}"
        );
    }
}
