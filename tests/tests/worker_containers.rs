//! Workers as containers on a private Docker network, the store a PostgreSQL server on the
//! host (reached through the network's gateway), the engine on the host:
//!
//! - a worker cut off the network (`docker network disconnect`) mid-step, past its lease: the
//!   other worker takes the task over and the run finishes; reconnected, the first one's late
//!   output and result do not land;
//! - a worker killed (`docker kill -s KILL`) mid-step: the same, with nothing left running;
//! - a hundred runs, driven by four `cairn run` engines at a time, while every 1.5 s one
//!   worker container is killed (and a new one started) or cut off the network past its lease
//!   and reconnected, and PostgreSQL is restarted once mid-way. Then, in the store: every run
//!   succeeded; every step succeeded once, through one task (none left queued or leased) with
//!   one result, written by the worker holding the task's last lease (no stale worker's write
//!   landed); and every surviving worker runs nothing but itself.
//!
//! The image is built `FROM scratch` (nothing can be pulled): the test's own `cairn` binary
//! with the four libraries it links, and a static busybox as `sh` and `sleep`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cairn_engine::store::{Store, TaskRecord, TaskResult, test_postgres};
use cairn_tests::{Output, Sandbox, cairn_bin};

const LEASE: &str = "2s";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Copies `file` into `root` at the same absolute path.
fn place(root: &Path, file: &Path) {
    let target = root.join(file.strip_prefix("/").expect("an absolute path"));
    std::fs::create_dir_all(target.parent().expect("a parent")).expect("a directory");
    std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
}

/// The worker image: `cairn`, its libraries (`ldd`), busybox as `sh` and `sleep`.
fn build_image(dir: &Path, tag: &str) {
    let root = dir.join("rootfs");
    let cairn = cairn_bin();
    place(&root, &cairn);
    let ldd = Command::new("ldd").arg(&cairn).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            place(&root, Path::new(path));
        }
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("a static busybox (scripts/setup.sh installs busybox-static)");
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::fs::copy(&busybox, root.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    std::fs::create_dir_all(root.join("tmp")).expect("tmp");
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY rootfs /\nENV PATH=/bin CAIRN_SANDBOX=off CAIRN_HOME=/tmp/home\n\
             ENTRYPOINT [\"{}\"]\n",
            cairn.display()
        ),
    )
    .expect("Dockerfile");
    docker(&["build", "-q", "-t", tag, &dir.display().to_string()]);
}

struct Network {
    name: String,
    gateway: String,
    containers: Vec<String>,
    image: String,
}

impl Network {
    fn new(sandbox: &Sandbox, tag: &str) -> Network {
        let id = format!("cairn-test-{}-{tag}", std::process::id());
        let image = format!("{id}:worker");
        build_image(&sandbox.path(&format!("image-{tag}")), &image);
        docker(&["network", "create", &id]);
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &id,
        ]);
        Network {
            name: id,
            gateway,
            containers: Vec::new(),
            image,
        }
    }

    fn worker(&mut self, name: &str, url: &str) {
        let container = format!("{}-{name}", self.name);
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &self.name,
            &self.image,
            "worker",
            "--store",
            url,
            "--name",
            name,
            "--labels",
            "linux",
            "--lease",
            LEASE,
        ]);
        self.containers.push(container);
    }

    /// Every worker container's output, for failure messages.
    fn logs(&self) -> String {
        self.containers
            .iter()
            .map(|c| {
                let output = Command::new("docker").args(["logs", c]).output();
                let text = output
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                format!("--- {c} ---\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    /// Kills a worker's container (SIGKILL) and removes it.
    fn kill(&mut self, name: &str) {
        let container = self.container(name);
        docker(&["rm", "-f", &container]);
        self.containers.retain(|c| *c != container);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

fn task_of(store: &Store, run_id: i64, step: &str) -> Option<TaskRecord> {
    store
        .tasks(run_id)
        .expect("tasks")
        .into_iter()
        .find(|t| t.step_id == step)
}

fn lines(store: &Store, run_id: i64, step: &str) -> Vec<String> {
    store
        .logs(run_id, Some(step), 0)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect()
}

#[test]
fn workers_in_containers_survive_a_cut_network_and_a_kill() {
    let sandbox = Sandbox::new();
    let server = test_postgres::Server::dedicated_for_containers();
    let url = server.database();
    let mut network = Network::new(&sandbox, "faults");
    let inside = url.replace("127.0.0.1", &network.gateway);
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(sandbox.home().join("cairn.yaml"), format!("store: {url}\n")).expect("yaml");
    let store = Store::open_postgres(&url, &sandbox.path("inspect.db")).expect("the store");
    let workflow = sandbox.write(
        "cut.yaml",
        "name: cut\nsteps:\n  \
         - id: work\n    runs_on: [linux]\n    run: |\n      \
           echo \"start on $CAIRN_WORKER\"\n      sleep 5\n      \
           echo \"late from $CAIRN_WORKER\"\n      echo \"by=$CAIRN_WORKER\" >> \"$CAIRN_OUTPUT\"\n",
    )
    .display()
    .to_string();

    for fault in ["disconnect", "kill"] {
        network.worker(&format!("{fault}1"), &inside);
        let mut run = sandbox.spawn(&["run", &workflow, "-q"]);
        let run_id = run.wait_for_run_id(Duration::from_secs(30));
        let first = format!("{fault}1");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !lines(&store, run_id, "work").contains(&format!("start on {first}")) {
            assert!(
                std::time::Instant::now() < deadline,
                "{fault}: the first worker did not start the step\n{}\n{}",
                network.logs(),
                run.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let container = network.container(&first);
        match fault {
            "disconnect" => {
                docker(&["network", "disconnect", &network.name, &container]);
            }
            _ => {
                docker(&["kill", "-s", "KILL", &container]);
            }
        }
        let second = format!("{fault}2");
        network.worker(&second, &inside);
        let status = run
            .wait_within(Duration::from_secs(120))
            .unwrap_or_else(|| panic!("the run did not finish\n{}", run.output()));
        assert!(status.success(), "{fault}: {}", run.output());
        if fault == "disconnect" {
            docker(&["network", "connect", &network.name, &container]);
            // Reconnected, the first worker learns its task is gone; nothing of it lands.
            std::thread::sleep(Duration::from_secs(6));
        }
        let task = task_of(&store, run_id, "work").expect("the task");
        assert_eq!(
            task.worker.as_deref(),
            Some(second.as_str()),
            "{fault}: {task:?}"
        );
        assert_eq!(task.epoch, 2, "{fault}: {task:?}");
        let logged = lines(&store, run_id, "work");
        assert!(
            logged.contains(&format!("late from {second}")),
            "{fault}: {logged:?}"
        );
        assert!(
            !logged.contains(&format!("late from {first}")),
            "{fault}: {logged:?}"
        );
        let step = store
            .steps(run_id)
            .expect("steps")
            .into_iter()
            .find(|s| s.step_id == "work")
            .expect("the step");
        assert_eq!(
            step.outputs,
            Some(serde_json::json!({ "by": second })),
            "{fault}"
        );
        // The next round starts with workers of its own.
        for name in [&first, &second] {
            docker(&["rm", "-f", &network.container(name)]);
        }
    }
}

const RUNS: usize = 100;
const ENGINES: usize = 4;
const WORKERS: usize = 3;

const SOAK: &str = "name: soak
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

fn lock(network: &Mutex<Network>) -> std::sync::MutexGuard<'_, Network> {
    network.lock().unwrap_or_else(|p| p.into_inner())
}

/// The faults injected, for the assertions and the summary.
#[derive(Default, Debug)]
struct Faults {
    killed: AtomicUsize,
    cut_off: AtomicUsize,
    restarted: AtomicUsize,
}

/// `cairn ARGS`, started again while PostgreSQL's restart refuses its first connection: an
/// engine that starts then fails fast, before it creates or touches a run. (The restart may
/// still be going on when an engine cut off by it exits and its run is resumed.) After two
/// minutes of refusals the last output is returned, for the caller's assertion to show.
fn once_postgres_is_up(sandbox: &Sandbox, args: &[&str]) -> Output {
    let started = std::time::Instant::now();
    loop {
        let output = sandbox.cairn_within(args, Duration::from_secs(180));
        let refused = output.code != Some(0)
            && output.stdout.trim().is_empty()
            && output.stderr.contains("failed to connect to PostgreSQL");
        if !refused || started.elapsed() > Duration::from_secs(120) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_hundred_runs_ride_out_killed_and_cut_off_workers_and_a_postgres_restart() {
    let sandbox = Sandbox::new();
    let server = test_postgres::Server::dedicated_for_containers();
    let url = server.database();
    let network = Mutex::new(Network::new(&sandbox, "soak"));
    let inside = url.replace("127.0.0.1", &lock(&network).gateway);
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(sandbox.home().join("cairn.yaml"), format!("store: {url}\n")).expect("yaml");
    let workflow = sandbox.write("soak.yaml", SOAK).display().to_string();
    let started = AtomicUsize::new(0);
    let start_worker = |network: &mut Network| {
        let name = format!("w{}", started.fetch_add(1, Ordering::Relaxed) + 1);
        network.worker(&name, &inside);
        name
    };
    let mut live: Vec<String> = (0..WORKERS)
        .map(|_| start_worker(&mut lock(&network)))
        .collect();

    let finished = AtomicUsize::new(0);
    let resumes = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let faults = Faults::default();
    let run_ids = std::thread::scope(|scope| {
        scope.spawn(|| {
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
                let victim = live[round * 7 % live.len()].clone();
                let mut network = lock(&network);
                if round.is_multiple_of(2) {
                    network.kill(&victim);
                    faults.killed.fetch_add(1, Ordering::Relaxed);
                    live.retain(|name| *name != victim);
                    live.push(start_worker(&mut network));
                } else {
                    // Past the lease (2 s) and back.
                    let container = network.container(&victim);
                    docker(&["network", "disconnect", &network.name, &container]);
                    std::thread::sleep(Duration::from_millis(3000));
                    docker(&["network", "connect", &network.name, &container]);
                    faults.cut_off.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let engines: Vec<_> = (0..ENGINES)
            .map(|engine| {
                let (sandbox, workflow, finished, resumes) =
                    (&sandbox, &workflow, &finished, &resumes);
                scope.spawn(move || {
                    (0..RUNS / ENGINES)
                        .map(|i| {
                            let mut output = once_postgres_is_up(sandbox, &["run", workflow, "-q"]);
                            // An engine whose own write the restart cut off exits (exit 3) and
                            // leaves its run interrupted; another engine resumes it, as a
                            // `cairn serve` adopts it within 10 s. The run must still finish
                            // with every step completed once (checked below).
                            if output.code == Some(3)
                                && output.stderr.contains("PostgreSQL")
                                && !output.stdout.trim().is_empty()
                            {
                                let id = output.run_id().to_string();
                                let resumed = once_postgres_is_up(sandbox, &["resume", &id, "-q"]);
                                assert_eq!(
                                    resumed.code,
                                    Some(0),
                                    "resume {id}: {resumed}\n{output}"
                                );
                                resumes.fetch_add(1, Ordering::Relaxed);
                                output = resumed;
                                output.stdout = id;
                            }
                            assert_eq!(
                                output.code,
                                Some(0),
                                "run {i} of engine {engine}: {output}"
                            );
                            finished.fetch_add(1, Ordering::Relaxed);
                            output.run_id()
                        })
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        // The fault injector stops before a failed engine's panic goes on (else the scope
        // would wait for it forever).
        let joined: Vec<_> = engines.into_iter().map(|e| e.join()).collect();
        done.store(true, Ordering::Relaxed);
        joined
            .into_iter()
            .flat_map(|runs| runs.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect::<Vec<i64>>()
    });

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
                .filter(|e| matches!(e.kind.as_str(), "task_succeeded" | "task_failed"))
                .filter(|e| e.data["task"] == task.id)
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

    // Nothing of a task is left running: each surviving worker runs only itself.
    let network = lock(&network);
    for container in &network.containers {
        let top = docker(&["top", container, "-o", "pid,args"]);
        let processes: Vec<&str> = top.lines().skip(1).collect();
        assert_eq!(processes.len(), 1, "{container}: {top}\n{}", network.logs());
    }
    // Stopped, each worker says how many of its tasks were taken from it while cut off.
    for container in &network.containers {
        docker(&["stop", "-t", "30", container]);
    }
    let lost: u64 = network
        .logs()
        .lines()
        .filter(|l| l.contains("lost to another worker"))
        .filter_map(|l| l.split(", ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    eprintln!(
        "{RUNS} runs, {} tasks: {} workers killed, {} cut off past their lease, PostgreSQL \
         restarted {}; {taken_over} tasks taken over, {lost} results dropped by cut-off workers, \
         {} runs resumed after their engine died on the restart",
        RUNS * 3,
        faults.killed.load(Ordering::Relaxed),
        faults.cut_off.load(Ordering::Relaxed),
        faults.restarted.load(Ordering::Relaxed),
        resumes.load(Ordering::Relaxed),
    );
    assert!(
        faults.killed.load(Ordering::Relaxed) >= 1 && faults.cut_off.load(Ordering::Relaxed) >= 1,
        "{faults:?}"
    );
    assert_eq!(
        faults.restarted.load(Ordering::Relaxed),
        1,
        "PostgreSQL restarted once"
    );
}
