//! Hostile steps against the real sandbox (bubblewrap on this machine, `CAIRN_SANDBOX=
//! required` so a missing mechanism fails the tests instead of passing them unsandboxed):
//! steps that try to read the state database, a secrets key file, another run's workspace,
//! the engine's environment, the Docker socket, to write outside their workspace, to
//! fork-bomb, to fill memory or the disk, and to reach the network with `network: none`.
//! Each is denied or contained with a clear step error, while a neighbouring run and the
//! rest of the hostile run carry on. Also: declared exceptions work, `sandbox: required` is
//! refused where no mechanism exists, `cairn doctor` says which mechanism is used, and
//! `cairn validate` reports bad sandbox keys with their positions.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use cairn_tests::{Sandbox, attempts, run_state, sh_quote, step_states, wait_until};

/// Stands for the remote API key in Cairn's own environment.
const API_KEY: &str = "sk-cairn-sandbox-test-5c0ffee";
const KEY_FILE_TEXT: &str = "secrets-key-material-9d1e";

fn sandboxed(sandbox: &Sandbox, args: &[&str]) -> std::process::Command {
    let mut command = sandbox.command(args);
    command
        .env("CAIRN_SANDBOX", "required")
        .env("CAIRN_TEST_API_KEY", API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Runs a command to its end (bounded) and returns (exit code, stdout, stderr).
fn finish(mut command: std::process::Command) -> (Option<i32>, String, String) {
    let child = command.spawn().expect("failed to start cairn");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(output)) => (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        _ => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("cairn did not finish within two minutes");
        }
    }
}

/// A real HTTP server on 127.0.0.1 answering every connection with 200.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind");
    let port = listener.local_addr().expect("bound address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    port
}

fn step_error(sandbox: &Sandbox, run: i64, step: &str) -> String {
    attempts(&sandbox.db(), run, step)
        .last()
        .and_then(|a| a.error.clone())
        .unwrap_or_default()
}

fn logs(sandbox: &Sandbox, run: i64, step: &str) -> String {
    let output = sandbox.cairn(&["logs", &run.to_string(), step]);
    format!("{}{}", output.stdout, output.stderr)
}

fn hostile_workflow(sandbox: &Sandbox, first_run: i64, port: u16, docker: bool) -> String {
    let home = sandbox.home();
    let db = sh_quote(&home.join("cairn.db"));
    let key = sh_quote(&home.join("secrets.key"));
    let other = sh_quote(&home.join(format!("work/run-{first_run}/src/note.txt")));
    let other_write = other.clone();
    let allowed = sandbox.path("allowed");
    std::fs::create_dir_all(&allowed).expect("failed to create the allowed directory");
    let allowed = sh_quote(&allowed.join("out.txt"));
    let allowed_dir = sandbox.path("allowed").display().to_string();
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5); print('reached the server')\""
    );
    let mut text = format!(
        "name: hostile\nconcurrency: 4\nenv: {{ DECLARED: visible-value }}\nsteps:\n\
\x20 - id: read-db\n    retries: 0\n    on_failure: continue\n    run: cat {db} > /dev/null\n\
\x20 - id: read-key\n    retries: 0\n    on_failure: continue\n    run: cat {key}\n\
\x20 - id: other-run\n    retries: 0\n    on_failure: continue\n    run: cat {other}\n\
\x20 - id: environ\n    retries: 0\n    on_failure: continue\n    run: |\n      \
for p in $(seq 1 \"$(cat /proc/sys/kernel/pid_max)\"); do\n        \
if [ -r /proc/$p/environ ] && grep -q CAIRN_TEST_API_KEY /proc/$p/environ 2>/dev/null; then\n          \
echo \"read the engine's environment at /proc/$p/environ\"; exit 0\n        \
fi\n      \
done\n      \
echo 'no /proc/<pid>/environ here holds the API key' >&2; exit 1\n\
\x20 - id: own-env\n    retries: 0\n    on_failure: continue\n    run: env | sort\n\
\x20 - id: docker\n    retries: 0\n    on_failure: continue\n    run: python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock'); print('connected to the Docker socket')\"\n\
\x20 - id: write-outside\n    retries: 0\n    on_failure: continue\n    run: echo overwritten > {other_write}\n\
\x20 - id: write-system\n    retries: 0\n    on_failure: continue\n    run: touch /usr/cairn-escaped\n\
\x20 - id: write-home\n    retries: 0\n    on_failure: continue\n    run: touch \"$HOME/cairn-escaped\"\n\
\x20 - id: fork-bomb\n    retries: 0\n    on_failure: continue\n    limits: {{ processes: 64 }}\n    run: |\n      \
bomb() {{ bomb | bomb & }}\n      bomb\n      sleep 2\n\
\x20 - id: fill-memory\n    retries: 0\n    on_failure: continue\n    limits: {{ memory: 64MiB }}\n    run: python3 -c \"b = b'x' * (512 << 20); print('filled', len(b))\"\n\
\x20 - id: fill-disk\n    retries: 0\n    on_failure: continue\n    limits: {{ file_size: 1MiB }}\n    run: head -c 8M /dev/zero > big.bin\n\
\x20 - id: no-network\n    retries: 0\n    on_failure: continue\n    network: none\n    run: {connect}\n\
\x20 - id: network\n    retries: 0\n    on_failure: continue\n    run: {connect}\n\
\x20 - id: declared-write\n    retries: 0\n    on_failure: continue\n    sandbox: {{ write: ['{allowed_dir}'] }}\n    run: echo declared > {allowed}\n"
    );
    if docker {
        text.push_str(
            "  - id: declared-docker\n    retries: 0\n    on_failure: continue\n    sandbox: { docker: true }\n    run: test -S /var/run/docker.sock\n",
        );
    }
    text.push_str(
        "  - id: after\n    depends_on: [read-db, read-key, other-run, environ, own-env, docker, write-outside, write-system, write-home, fork-bomb, fill-memory, fill-disk, no-network, network, declared-write]\n    run: echo carried on\n",
    );
    text
}

#[test]
fn hostile_steps_are_denied_or_contained_and_everything_else_carries_on() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("failed to create CAIRN_HOME");
    std::fs::write(sandbox.home().join("secrets.key"), KEY_FILE_TEXT)
        .expect("failed to write the key file");
    let port = http_server();

    // Another run, whose workspace the hostile steps will look for.
    let first = sandbox.write(
        "first.yaml",
        "name: first\nsteps:\n  - id: note\n    run: echo other-run-secret > note.txt\n",
    );
    // Its checkout is kept (`--keep-workspace`) so that there is something to look for.
    let (code, stdout, stderr) = finish(sandboxed(
        &sandbox,
        &["run", "--keep-workspace", &first.to_string_lossy()],
    ));
    assert_eq!(code, Some(0), "the first run failed\n{stdout}\n{stderr}");
    let first_run: i64 = stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("run id");
    let note = sandbox
        .home()
        .join(format!("work/run-{first_run}/src/note.txt"));
    assert!(
        note.is_file(),
        "a step's workspace write must land on the host"
    );

    let docker = Path::new("/var/run/docker.sock").exists();
    let hostile = sandbox.write(
        "hostile.yaml",
        &hostile_workflow(&sandbox, first_run, port, docker),
    );
    let neighbour = sandbox.write(
        "neighbour.yaml",
        "name: neighbour\nsteps:\n  - id: a\n    run: sleep 1; echo a > a.txt\n  - id: b\n    depends_on: a\n    run: sleep 1; cat a.txt\n",
    );
    let mut neighbour_run = sandboxed(&sandbox, &["run", &neighbour.to_string_lossy()])
        .spawn()
        .expect("failed to start the neighbouring run");
    let (code, stdout, stderr) = finish(sandboxed(&sandbox, &["run", &hostile.to_string_lossy()]));
    let neighbour_status = neighbour_run.wait().expect("neighbouring run");
    assert!(
        neighbour_status.success(),
        "a run beside the hostile one must succeed"
    );
    // The hostile steps fail; `on_failure: continue` lets the run reach `after` and succeed.
    assert_eq!(code, Some(0), "hostile run\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains(API_KEY) && !stdout.contains(API_KEY),
        "the key leaked to the terminal"
    );
    let run: i64 = stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("run id");
    let states = step_states(&sandbox.db(), run);
    let state = |step: &str| states.get(step).cloned().unwrap_or_default();

    for (step, expected) in [
        ("read-db", "No such file or directory"),
        ("read-key", "No such file or directory"),
        ("other-run", "No such file or directory"),
        ("environ", "no /proc/<pid>/environ here holds the API key"),
        ("write-outside", "cannot create"),
        ("write-system", "Read-only file system"),
        ("write-home", "Read-only file system"),
    ] {
        assert_eq!(state(step), "failed", "{step} must be denied");
        let log = logs(&sandbox, run, step);
        assert!(
            log.contains(expected),
            "{step}: expected {expected:?} in\n{log}"
        );
        assert!(!log.contains(KEY_FILE_TEXT) && !log.contains("other-run-secret"));
    }
    assert_eq!(state("docker"), "failed");
    assert!(!logs(&sandbox, run, "docker").contains("connected to the Docker socket"));
    assert!(!Path::new("/usr/cairn-escaped").exists());
    if let Some(home) = std::env::var_os("HOME") {
        assert!(!Path::new(&home).join("cairn-escaped").exists());
    }

    // The step's environment: documented CAIRN_* and declared variables, not the engine's.
    assert_eq!(state("own-env"), "succeeded");
    let env = logs(&sandbox, run, "own-env");
    assert!(env.contains("DECLARED=visible-value"), "{env}");
    assert!(env.contains(&format!("CAIRN_RUN_ID={run}")), "{env}");
    assert!(
        !env.contains(API_KEY) && !env.contains("CAIRN_TEST_API_KEY"),
        "{env}"
    );
    assert!(!env.contains("CAIRN_HOME="), "{env}");

    // Limits: each contained with a message naming the limit.
    for (step, expected) in [
        ("fork-bomb", "process limit (64"),
        ("fill-memory", "memory limit (64 MiB"),
        ("fill-disk", "file size limit (1 MiB"),
    ] {
        assert_eq!(state(step), "failed", "{step} must be contained");
        let error = step_error(&sandbox, run, step);
        assert!(error.contains(expected), "{step}: {error}");
    }

    // The network: reachable by default, not with `network: none`.
    assert_eq!(state("network"), "succeeded");
    assert_eq!(state("no-network"), "failed");
    assert!(!logs(&sandbox, run, "no-network").contains("reached the server"));

    // Declared exceptions.
    assert_eq!(state("declared-write"), "succeeded");
    assert_eq!(
        std::fs::read_to_string(sandbox.path("allowed/out.txt")).unwrap_or_default(),
        "declared\n"
    );
    if docker {
        assert_eq!(state("declared-docker"), "succeeded");
    }
    assert_eq!(state("after"), "succeeded", "the run must carry on");

    // Nothing was damaged or left running.
    assert_eq!(
        std::fs::read_to_string(&note).unwrap_or_default(),
        "other-run-secret\n"
    );
    assert_eq!(
        run_state(&sandbox.db(), first_run).as_deref(),
        Some("succeeded")
    );
    wait_until(
        "the hostile steps' processes are gone",
        Duration::from_secs(5),
        || sandbox.processes().is_empty(),
    );
}

#[test]
fn a_sandboxed_timeout_still_kills_every_process_of_the_step() {
    let sandbox = Sandbox::new();
    let marker = format!("cairn-sandbox-orphan-{}", std::process::id());
    let workflow = sandbox.write(
        "timeout.yaml",
        &format!(
            "name: timeout\nsteps:\n  - id: hang\n    timeout: 1s\n    retries: 0\n    run: |\n      \
             sh -c 'sleep 300' {marker} &\n      setsid sh -c 'sleep 300' {marker} &\n      sleep 300\n"
        ),
    );
    let (code, stdout, stderr) = finish(sandboxed(&sandbox, &["run", &workflow.to_string_lossy()]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    wait_until(
        "no process of the step survives",
        Duration::from_secs(5),
        || cairn_tests::processes_with_marker(&marker).is_empty(),
    );
}

#[test]
fn a_required_sandbox_is_refused_where_there_is_none() {
    let sandbox = Sandbox::new();
    let required = sandbox.write(
        "required.yaml",
        "name: required\nsandbox: required\nsteps:\n  - id: a\n    run: 'true'\n",
    );
    let plain = sandbox.write(
        "plain.yaml",
        "name: plain\nsteps:\n  - id: a\n    run: 'true'\n",
    );

    // The workflow demands it: refused before any run exists.
    let mut command = sandbox.command(&["run", &required.to_string_lossy()]);
    command
        .env("CAIRN_SANDBOX", "auto")
        .env("CAIRN_SANDBOX_BWRAP", "none");
    let output = command.output().expect("cairn");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("sandbox: required"), "{stderr}");
    assert!(
        stderr.contains("no sandbox mechanism is available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: steps run without a sandbox"),
        "{stderr}"
    );
    let runs: i64 = sandbox
        .db()
        .query_row("SELECT count(*) FROM runs", [], |row| row.get(0))
        .expect("count runs");
    assert_eq!(runs, 0, "a refused workflow must leave no run behind");

    // The engine's policy demands it: every workflow is refused.
    let mut command = sandbox.command(&["run", &plain.to_string_lossy()]);
    command
        .env("CAIRN_SANDBOX", "required")
        .env("CAIRN_SANDBOX_BWRAP", "none");
    let output = command.output().expect("cairn");
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("policy"));

    // `auto` warns and runs unsandboxed.
    let mut command = sandbox.command(&["run", &plain.to_string_lossy()]);
    command
        .env("CAIRN_SANDBOX", "auto")
        .env("CAIRN_SANDBOX_BWRAP", "none");
    let output = command.output().expect("cairn");
    assert_eq!(output.status.code(), Some(0));

    // `cairn doctor` says the same.
    let mut command = sandbox.command(&["doctor"]);
    command
        .env("CAIRN_SANDBOX", "required")
        .env("CAIRN_SANDBOX_BWRAP", "none");
    let output = command.output().expect("cairn");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("sandbox: none: CAIRN_SANDBOX_BWRAP=none"),
        "{stdout}"
    );
}

#[test]
fn doctor_reports_the_mechanism_and_the_limits() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        "sandbox:\n  policy: required\n  limits: { memory: 3GiB, processes: 500 }\n",
    )
    .expect("config");
    let mut command = sandbox.command(&["doctor"]);
    command.env_remove("CAIRN_SANDBOX");
    let output = command.output().expect("cairn");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("sandbox: bubblewrap"), "{stdout}");
    assert!(stdout.contains("sandbox policy: required"), "{stdout}");
    assert!(stdout.contains("memory: 3 GiB"), "{stdout}");
    assert!(stdout.contains("processes: 500"), "{stdout}");

    // A bad configuration is an error with its position.
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        "sandbox:\n  policy: sometimes\n",
    )
    .expect("config");
    let output = command.output().expect("cairn");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr.contains("cairn.yaml:2:11: `policy` in `sandbox` must be"),
        "{stderr}"
    );
}

#[test]
fn validate_reports_bad_sandbox_keys_with_their_positions() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "bad.yaml",
        "name: bad\nsteps:\n  - id: a\n    run: 'true'\n    sandbox: { write: [relative], netwrk: none }\n    limits: { memory: lots }\n",
    );
    let output = sandbox.cairn(&["validate", &workflow.to_string_lossy()]);
    assert_eq!(output.code, Some(2), "{output}");
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains("bad.yaml:5:24: each path of `write`"),
        "{text}"
    );
    assert!(
        text.contains("bad.yaml:5:35: unknown key `netwrk`"),
        "{text}"
    );
    assert!(
        text.contains("bad.yaml:6:23: `memory` in `limits` of step `a` must be"),
        "{text}"
    );
}
