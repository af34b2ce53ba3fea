//! Workers as containers on a private Docker network, the store a PostgreSQL server on the
//! host (reached through the network's gateway), the engine on the host:
//!
//! - a worker cut off the network (`docker network disconnect`) mid-step, past its lease: the
//!   other worker takes the task over and the run finishes; reconnected, the first one's late
//!   output and result do not land;
//! - a worker killed (`docker kill -s KILL`) mid-step: the same, with nothing left running.
//!
//! The image is built `FROM scratch` (nothing can be pulled): the test's own `cairn` binary
//! with the four libraries it links, and a static busybox as `sh` and `sleep`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_engine::store::{Store, TaskRecord, test_postgres};
use cairn_tests::{Sandbox, cairn_bin};

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
    fn new(sandbox: &Sandbox) -> Network {
        let id = format!("cairn-test-{}", std::process::id());
        let image = format!("{id}:worker");
        build_image(&sandbox.path("image"), &image);
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
    let mut network = Network::new(&sandbox);
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
