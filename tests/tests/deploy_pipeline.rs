//! The AI pipeline (`workflows/ai-pipeline.yaml`) end to end over the sample repository
//! (`scripts/sample-repo.sh`: Cairn's demo HTTP service with a commit for every route): the
//! real `cairn` binary tests, builds and deploys each commit to the real Docker engine behind
//! the HAProxy it runs itself, while a load generator sends requests through that proxy the
//! whole time. Only the time windows are shortened (seconds instead of 10–30 minutes).
//!
//! Shows: the first deploy; low risk → rolling, medium → blue-green, `hotfix:` → hotfix,
//! high → canary promoted, each with zero failed requests; then a bad release (5% errors) whose
//! canary is rolled back on its own, with the time from the first anomalous sample to the old
//! release serving all traffic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::Sandbox;
use serde_json::Value;

/// One answer of the load generator: when, whether it was a 2xx, and the body's first line.
#[derive(Clone, Debug)]
struct Answer {
    at: Duration,
    ok: bool,
    body: String,
}

/// Threads sending `GET /` to the proxy (one connection per request) until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(port: u16, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let threads = (0..workers)
            .map(|_| {
                let (stop, answers) = (stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (ok, body) = get(port);
                        if let Ok(mut list) = answers.lock() {
                            list.push(Answer {
                                at: started.elapsed(),
                                ok,
                                body,
                            });
                        }
                        std::thread::sleep(Duration::from_millis(3));
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            threads,
            started,
        }
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn get(port: u16) -> (bool, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (false, "connect failed".into());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n")
        .is_err()
    {
        return (false, "write failed".into());
    }
    let mut text = String::new();
    if stream.read_to_string(&mut text).is_err() {
        return (false, "read failed".into());
    }
    let ok = text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (
        ok,
        if ok {
            body
        } else {
            text.lines().next().unwrap_or("").to_string()
        },
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The AI pipeline with this test's port and service name, and windows of seconds.
fn pipeline(port: u16, service: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("workflows/ai-pipeline.yaml"))
        .expect("workflows/ai-pipeline.yaml");
    let strategies = "      strategies: { low: rolling, medium: blue_green, high: canary }\n";
    assert!(
        text.contains(strategies)
            && text.contains("listen: 127.0.0.1:18080")
            && text.contains("service: app\n"),
        "the AI pipeline's deploy step changed: update this test"
    );
    let monitor =
        "    agent: monitor_agent          # 10 minutes, 30 at high risk; rolls back on its own\n";
    assert!(
        text.contains(monitor),
        "the AI pipeline's monitor step changed: update this test"
    );
    text.replace("listen: 127.0.0.1:18080", &format!("listen: 127.0.0.1:{port}"))
        .replace("service: app\n", &format!("service: {service}\n"))
        .replace(
            strategies,
            &format!("{strategies}      canary_steps: [10, 50, 100]\n      monitor_window: 9s\n      analysis_interval: 500ms\n      min_samples: 20\n      health_timeout: 20s\n"),
        )
        .replace(monitor, &format!("{monitor}    with: {{ window: 3s, interval: 500ms, min_samples: 20 }}\n"))
}

fn step(sandbox: &Sandbox, run: i64, step: &str) -> (String, Value, String) {
    let db = sandbox.db();
    db.query_row(
        "SELECT state, outputs, error FROM steps WHERE run_id = ?1 AND step_id = ?2",
        rusqlite::params![run, step],
        |row| {
            let outputs: Option<String> = row.get(1)?;
            Ok((
                row.get::<_, String>(0)?,
                outputs
                    .and_then(|o| serde_json::from_str(&o).ok())
                    .unwrap_or(Value::Null),
                row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            ))
        },
    )
    .expect("step row")
}

#[test]
fn the_ai_pipeline_deploys_the_demo_service_with_each_strategy() {
    for (tool, package) in [
        ("docker", "the Docker engine"),
        ("haproxy", "HAProxy (Debian package `haproxy`)"),
    ] {
        let found = Command::new(tool)
            .arg(if tool == "docker" { "info" } else { "-v" })
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{package} is needed by this test (scripts/setup.sh installs and starts it)"
        );
    }
    let sandbox = Sandbox::new();
    let sample = sandbox.path("sample");
    let made = Command::new("bash")
        .arg(repo_root().join("scripts/sample-repo.sh"))
        .arg(&sample)
        .output()
        .expect("run sample-repo.sh");
    assert!(
        made.status.success(),
        "sample-repo.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let service = format!("app{}", std::process::id());
    let _cleanup = Cleanup {
        service: service.clone(),
        proxy_dir: sandbox.home().join("work/proxies").join(&service),
    };
    let workflow = sandbox.write("ai-pipeline.yaml", &pipeline(port, &service));
    let validated = sandbox.cairn(&["validate", workflow.to_str().expect("utf-8 path")]);
    assert_eq!(validated.code, Some(0), "{validated}");

    let listing = Command::new("git")
        .arg("-C")
        .arg(&sample)
        .args(["rev-list", "--reverse", "HEAD"])
        .output()
        .expect("git rev-list");
    let commits: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(commits.len(), 7, "the sample repository's history changed");

    let mut load: Option<Load> = None;
    let mut report = Vec::new();
    let mut windows = Vec::new();
    for (index, commit) in commits.iter().enumerate() {
        let from = load
            .as_ref()
            .map_or(Duration::ZERO, |l| l.started.elapsed());
        let output = sandbox.cairn_within(
            &[
                "run",
                workflow.to_str().expect("utf-8 path"),
                "--repo",
                sample.to_str().expect("utf-8 path"),
                "--commit",
                commit,
            ],
            Duration::from_secs(600),
        );
        let run = output.run_id();
        let (deploy_state, deploy, deploy_error) = step(&sandbox, run, "deploy");
        let (_, analyze, _) = step(&sandbox, run, "analyze");
        let (monitor_state, monitor, _) = step(&sandbox, run, "monitor");
        let (test_state, test, _) = step(&sandbox, run, "test");
        let generated = &test["generated"];
        let verdicts: Vec<String> = ["accepted", "rejected", "skipped"]
            .iter()
            .flat_map(|kind| {
                generated[*kind]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |p| {
                        format!(
                            "{} {kind}: {}",
                            p["function"].as_str().unwrap_or("?"),
                            p["reason"].as_str().unwrap_or("")
                        )
                    })
            })
            .collect();
        eprintln!(
            "commit {}: test {test_state}: selected {}/{} ({}), {} passed; generated: {} candidate(s) {:?}",
            index + 1,
            test["selection"]
                .get("selected_units")
                .unwrap_or(&test["selection"]["selected"]),
            test["selection"]
                .get("total_units")
                .unwrap_or(&test["selection"]["total"]),
            test["selection"]["reasons"],
            test["passed"],
            generated["candidates"],
            verdicts
        );
        if index == 3 {
            // The new endpoint changes `route`, which no test covers: a test is proposed and gated.
            assert_eq!(test_state, "succeeded", "{test}");
            assert!(
                generated["candidates"].as_u64().unwrap_or(0) >= 1 && !verdicts.is_empty(),
                "no test was proposed for the untested change: {test}"
            );
        }
        let to = load
            .as_ref()
            .map_or(Duration::ZERO, |l| l.started.elapsed());
        report.push(format!(
            "run {run} ({}): risk {}, deploy {deploy_state} ({} — {}), monitor {monitor_state} {}",
            &commit[..8],
            analyze["risk"],
            deploy["strategy"],
            deploy["strategy_reason"],
            monitor["summary"]
        ));
        windows.push((from, to, output.code, deploy.clone(), deploy_error));
        if index < 6 {
            assert_eq!(
                output.code,
                Some(0),
                "run of commit {} failed:\n{output}\n{}",
                index + 1,
                report.join("\n")
            );
        }
        if index == 0 {
            // The service is up: from here on every request must be answered.
            load = Some(Load::start(port, 4));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let load = load.expect("load started");
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.answers();
    drop(load);
    for line in &report {
        eprintln!("{line}");
    }

    let strategies: Vec<&str> = windows
        .iter()
        .map(|w| w.3["strategy"].as_str().unwrap_or("(failed)"))
        .collect();
    assert_eq!(
        &strategies[1..6],
        ["rolling", "rolling", "blue_green", "hotfix", "canary"],
        "{}",
        report.join("\n")
    );
    for (index, (from, to, _, deploy, _)) in windows.iter().enumerate().take(6).skip(1) {
        let during: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.at >= *from && a.at <= *to)
            .collect();
        let failed: Vec<&&Answer> = during.iter().filter(|a| !a.ok).collect();
        eprintln!(
            "commit {}: {} ({}): {} requests during the run, {} failed",
            index + 1,
            deploy["strategy"],
            deploy["outcome"],
            during.len(),
            failed.len()
        );
        assert!(
            during.len() > 50,
            "too little traffic during run {} to show anything",
            index + 1
        );
        assert!(
            failed.is_empty(),
            "{} of {} requests failed during the {} deploy: {:?}",
            failed.len(),
            during.len(),
            deploy["strategy"],
            failed.iter().take(5).collect::<Vec<_>>()
        );
    }

    // The bad release: its canary is rolled back on its own.
    let (from, to, code, _, error) = &windows[6];
    assert_eq!(*code, Some(1), "the bad release's run must fail");
    assert!(
        error.contains("rolled back") && error.contains("canary analysis failed"),
        "{error}"
    );
    let state: String = sandbox
        .db()
        .query_row(
            "SELECT state FROM deployments WHERE service = ?1",
            [&service],
            |row| row.get(0),
        )
        .expect("the service's deploy state in the store");
    let state: Value = serde_json::from_str(&state).expect("state JSON");
    let last = state["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .expect("a history record");
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    let rollback_ms = last["rollback_ms"].as_u64().expect("rollback_ms");
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at >= *from && a.at <= *to)
        .collect();
    let failed = during.iter().filter(|a| !a.ok).count();
    eprintln!(
        "bad canary: rolled back {rollback_ms} ms after the first anomalous sample; {failed} of {} requests failed during its run\n{error}\nevents: {}",
        during.len(),
        last["details"]["events"]
    );
    assert!(rollback_ms < 10_000, "rollback took {rollback_ms} ms");
    let after: Vec<&Answer> = answers.iter().filter(|a| a.at > *to).collect();
    assert!(
        after.iter().all(|a| a.ok && a.body.contains("0.1.0")),
        "after the rollback the previous release serves everything: {:?}",
        after.iter().take(5).collect::<Vec<_>>()
    );
}
