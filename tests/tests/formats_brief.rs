//! The design brief's pipeline (`pipeline: { trigger: on_push, stages: [...] }`, kept verbatim
//! in `engine/tests/fixtures/valid/design_brief.yaml`) run end to end by the real `cairn`
//! binary over a real git repository: the orchestrator judges a docs commit low risk, the
//! tests are skipped (the brief's routing), the build agent builds the image on the real
//! Docker engine, the deploy agent deploys it (strategy by risk: rolling) behind the HAProxy
//! Cairn runs, and the monitor stage (`deploy_agent` with `duration`, `on_anomaly`) watches it.
//!
//! Only what the brief cannot know is added: where to serve (`with: { service, listen }` on
//! the deploy stage) and a monitor window of seconds instead of ten minutes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_tests::Sandbox;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo service's static binary, built by cargo into its own target dir when missing.
fn demo_binary() -> PathBuf {
    let dir = repo_root().join("demo/service");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(&dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args([
            "build",
            "--quiet",
            "--offline",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .expect("run cargo for the demo service");
    assert!(
        output.status.success(),
        "demo build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join("target/x86_64-unknown-linux-gnu/release/demo-service")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Removes the service's containers and stops its proxy, whatever the test's outcome.
struct Cleanup {
    service: String,
    proxy_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.proxy_dir.join("haproxy.pid")) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let label = format!("label=cairn.deploy.service={}", self.service);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn step(sandbox: &Sandbox, run: i64, step: &str) -> (String, Value) {
    sandbox
        .db()
        .query_row(
            "SELECT state, outputs FROM steps WHERE run_id = ?1 AND step_id = ?2",
            rusqlite::params![run, step],
            |row| {
                let outputs: Option<String> = row.get(1)?;
                Ok((
                    row.get::<_, String>(0)?,
                    outputs
                        .and_then(|o| serde_json::from_str(&o).ok())
                        .unwrap_or(Value::Null),
                ))
            },
        )
        .unwrap_or_else(|e| panic!("no step `{step}` in run {run}: {e}"))
}

#[test]
fn the_design_brief_pipeline_runs_as_written() {
    for (tool, what) in [("docker", "the Docker engine"), ("haproxy", "HAProxy")] {
        let found = Command::new(tool)
            .arg(if tool == "docker" { "info" } else { "-v" })
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{what} is needed by this test (scripts/setup.sh installs it)"
        );
    }
    let sandbox = Sandbox::new();

    // The repository: the demo service with its static binary committed (the image is built
    // FROM scratch around it), then a README typo fix: a docs change.
    let repo = sandbox.path("repo");
    std::fs::create_dir_all(repo.join("target/x86_64-unknown-linux-gnu/release")).expect("mkdir");
    let demo = repo_root().join("demo/service");
    std::fs::copy(
        demo_binary(),
        repo.join("target/x86_64-unknown-linux-gnu/release/demo-service"),
    )
    .expect("copy the binary");
    for file in ["Dockerfile", "README.md", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(demo.join(file), repo.join(file)).expect("copy a demo file");
    }
    std::fs::write(
        repo.join(".dockerignore"),
        "*\n!target/x86_64-unknown-linux-gnu/release/demo-service\n",
    )
    .expect(".dockerignore");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["config", "user.name", "Cairn Tests"]);
    git(&repo, &["config", "user.email", "tests@cairn.invalid"]);
    git(&repo, &["add", "--all", "--force"]);
    git(&repo, &["commit", "--quiet", "-m", "the demo service"]);
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    std::fs::write(
        repo.join("README.md"),
        format!("{readme}\nDeployed by Cairn.\n"),
    )
    .expect("README");
    git(
        &repo,
        &[
            "commit",
            "--quiet",
            "-am",
            "Describe the deployment in the README",
        ],
    );

    let brief =
        std::fs::read_to_string(repo_root().join("engine/tests/fixtures/valid/design_brief.yaml"))
            .expect("the design brief's pipeline");
    let port = free_port();
    let service = format!("brief{}", std::process::id());
    let _cleanup = Cleanup {
        service: service.clone(),
        proxy_dir: sandbox.home().join("work/proxies").join(&service),
    };
    let deploy = "      strategy: \"AI-selected based on risk score\"\n";
    let monitor = "      duration: 10m\n";
    assert!(
        brief.contains(deploy) && brief.contains(monitor),
        "the brief's pipeline changed: update this test"
    );
    let pipeline = brief
        .replace(
            deploy,
            &format!("{deploy}      with: {{ service: {service}, listen: 127.0.0.1:{port}, replicas: 1, health_timeout: 30s }}\n"),
        )
        .replace(monitor, "      duration: 3s\n      with: { interval: 500ms }\n");
    let file = sandbox.write("pipeline.yaml", &pipeline);
    let file = file.to_str().expect("utf-8 path");

    let validated = sandbox.cairn(&["validate", file]);
    assert_eq!(validated.code, Some(0), "{validated}");
    assert!(
        validated.stdout.contains("read as design-brief pipeline"),
        "{validated}"
    );

    let run = sandbox.cairn_within(
        &["run", file, "--repo", repo.to_str().expect("utf-8 path")],
        Duration::from_secs(600),
    );
    let run_id = run.run_id();
    let (analyze_state, analyze) = step(&sandbox, run_id, "analyze");
    assert_eq!(analyze_state, "succeeded", "{run}");
    assert_eq!(analyze["risk"], "low", "{analyze}");
    let (test_state, _) = step(&sandbox, run_id, "test");
    assert_eq!(test_state, "skipped", "low risk skips the tests\n{run}");
    for id in ["build", "deploy", "monitor"] {
        let (state, outputs) = step(&sandbox, run_id, id);
        assert_eq!(state, "succeeded", "{id}: {outputs}\n{run}");
    }
    let (_, deploy) = step(&sandbox, run_id, "deploy");
    assert_eq!(deploy["strategy"], "rolling", "{deploy}");
    assert_eq!(run.code, Some(0), "{run}");

    // The deployed service answers through the proxy Cairn runs.
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
