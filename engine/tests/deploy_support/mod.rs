//! Fixtures for the deploy agent's tests: the demo service image built FROM scratch around its
//! static binary, a real HAProxy process on 127.0.0.1 with its runtime API socket, a load
//! generator recording every answer, a webhook receiver, and guards that remove the containers
//! and stop HAProxy whatever the test's outcome.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_engine::agents::Registry;
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::{RunState, StepRecord, Store};
use serde_json::{Value, json};

/// The demo service binary, built static by cargo when it is not there yet.
fn demo_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/service");
    let binary = dir.join("target/x86_64-unknown-linux-gnu/release/demo-service");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(&dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Its own target dir: the path below is known whatever CARGO_TARGET_DIR says, and the
        // static build never invalidates the workspace's artifacts.
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args([
            "build",
            "--quiet",
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
    binary
}

/// The demo image, tagged once per test process; removed on drop.
pub struct DemoImage {
    pub repository: String,
}

impl DemoImage {
    pub fn build(case: &str) -> DemoImage {
        let repository = format!("cairn-deploy-test-{}-{case}", std::process::id());
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::copy(demo_binary(), context.path().join("demo-service")).expect("copy binary");
        std::fs::write(context.path().join("Dockerfile"), "FROM scratch\nCOPY demo-service /demo-service\nUSER 65534:65534\nEXPOSE 8080\nENTRYPOINT [\"/demo-service\"]\n").expect("Dockerfile");
        let output = Command::new("docker")
            .args(["build", "--quiet", "--tag", &format!("{repository}:v1")])
            .arg(context.path())
            .output()
            .expect("docker build");
        assert!(
            output.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        DemoImage { repository }
    }

    pub fn image(&self) -> String {
        format!("{}:v1", self.repository)
    }
}

impl Drop for DemoImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--force", &self.image()])
            .output();
    }
}

/// Removes every container of `service` when dropped.
pub struct Containers {
    pub service: String,
}

impl Containers {
    pub fn count(&self) -> usize {
        let output = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=cairn.deploy.service={}", self.service),
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&output.stdout).lines().count()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if let Ok(output) = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=cairn.deploy.service={}", self.service),
            ])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "--force"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A real HAProxy, as a child process, killed on drop.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    pub socket: PathBuf,
    pub backend: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start() -> Haproxy {
        let found = Command::new("haproxy").arg("-v").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "haproxy is not installed: these tests run a real HAProxy 2.6+ (Debian package `haproxy`: apt-get install -y haproxy)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let port = free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            cairn_engine::agents::deploy::haproxy_config(port, &socket, "web"),
        )
        .expect("config");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy {
            child,
            port,
            socket,
            backend: "web".into(),
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus server (Debian package `prometheus`) scraping every second the targets
/// listed in its `file_sd_configs` file, killed on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    pub targets_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start() -> Prometheus {
        let found = Command::new("prometheus").arg("--version").output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "prometheus is not installed: this test runs a real Prometheus server (Debian package `prometheus`; scripts/setup.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let targets_file = dir.path().join("targets.json");
        std::fs::write(&targets_file, "[]").expect("targets file");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: cairn\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
                targets_file.display()
            ),
        )
        .expect("config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready =
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut stream| {
                    use std::io::{Read, Write};
                    let _ = stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
                });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            child,
            url,
            targets_file,
            _dir: dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer seen by the load generator.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Duration,
    pub ok: bool,
    /// The version in the body (`hello from demo-service v2`), or the error.
    pub version: String,
    pub latency: Duration,
}

/// Workers sending `GET /` to the proxy until stopped (or for at most `limit`).
pub struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub started: Instant,
}

impl Load {
    pub fn start(port: u16, workers: usize, limit: Duration) -> Load {
        Load::paced(port, workers, Duration::from_millis(4), limit)
    }

    /// Like [`Load::start`], each worker pausing `pause` between requests: thin traffic.
    pub fn paced(port: u16, workers: usize, pause: Duration, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let tasks = (0..workers)
            .map(|_| {
                let (stop, answers, client) = (stop.clone(), answers.clone(), client.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                        let sent = Instant::now();
                        let answer =
                            match client.get(format!("http://127.0.0.1:{port}/")).send().await {
                                Ok(response) => {
                                    let ok = response.status().is_success();
                                    let body = response.text().await.unwrap_or_default();
                                    Answer {
                                        at: started.elapsed(),
                                        ok,
                                        version: body
                                            .split_whitespace()
                                            .skip_while(|w| *w != "demo-service")
                                            .nth(1)
                                            .unwrap_or("?")
                                            .trim_end_matches(':')
                                            .to_string(),
                                        latency: sent.elapsed(),
                                    }
                                }
                                Err(error) => Answer {
                                    at: started.elapsed(),
                                    ok: false,
                                    version: format!("error: {error}"),
                                    latency: sent.elapsed(),
                                },
                            };
                        if let Ok(mut list) = answers.lock() {
                            list.push(answer);
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            tasks,
            started,
        }
    }

    /// Answers so far, from index `from`.
    pub fn since(&self, from: usize) -> Vec<Answer> {
        self.answers
            .lock()
            .map(|a| a[from.min(a.len())..].to_vec())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.answers.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub async fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Busy-looping `sh` processes, one per core, killed on drop: load from other processes, as
/// on a shared machine where a `cargo build` runs beside the deploy.
pub struct CpuBurner {
    children: Vec<Child>,
}

impl CpuBurner {
    pub fn start() -> CpuBurner {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let children = (0..cores)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn a CPU burner")
            })
            .collect();
        CpuBurner { children }
    }
}

impl Drop for CpuBurner {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A webhook receiver on 127.0.0.1 recording every JSON body posted to it.
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    if let Ok(mut list) = recorded.lock() {
                        list.push(body);
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, bodies }
    }

    pub fn received(&self) -> Vec<Value> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// A stand-in for PagerDuty's Events API v2 on 127.0.0.1 (`POST /v2/enqueue`): it checks an
/// event the way PagerDuty documents (routing key of 32 characters, `event_action`, a
/// `dedup_key` up to 255, and for `trigger` a payload with summary, source and a severity of
/// critical, error, warning or info), answers `202 {"status":"success",…}` or `400 {"status":
/// "invalid event",…}`, and records the accepted events.
pub struct PagerDuty {
    pub url: String,
    events: Arc<Mutex<Vec<Value>>>,
    rejected: Arc<Mutex<usize>>,
}

impl PagerDuty {
    pub const ROUTING_KEY: &'static str = "R0123456789abcdef0123456789abcde";

    pub async fn start() -> PagerDuty {
        let events: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(0usize));
        let (kept, refused) = (events.clone(), rejected.clone());
        let app = axum::Router::new().route(
            "/v2/enqueue",
            axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
                let (kept, refused) = (kept.clone(), refused.clone());
                async move {
                    let mut errors = Vec::new();
                    if event["routing_key"].as_str().map(str::len) != Some(32) {
                        errors.push("'routing_key' must be 32 characters");
                    }
                    let action = event["event_action"].as_str().unwrap_or("");
                    if !["trigger", "acknowledge", "resolve"].contains(&action) {
                        errors.push("'event_action' is invalid");
                    }
                    if event["dedup_key"].as_str().is_some_and(|k| k.len() > 255) {
                        errors.push("'dedup_key' is too long");
                    }
                    if action == "trigger" {
                        let payload = &event["payload"];
                        if payload["summary"].as_str().is_none_or(|s| s.is_empty() || s.len() > 1024) {
                            errors.push("'payload.summary' is missing or too long");
                        }
                        if payload["source"].as_str().is_none_or(str::is_empty) {
                            errors.push("'payload.source' is missing");
                        }
                        if !["critical", "error", "warning", "info"]
                            .contains(&payload["severity"].as_str().unwrap_or(""))
                        {
                            errors.push("'payload.severity' is invalid");
                        }
                    }
                    if errors.is_empty() {
                        let dedup_key = event["dedup_key"].clone();
                        if let Ok(mut list) = kept.lock() {
                            list.push(event);
                        }
                        (
                            axum::http::StatusCode::ACCEPTED,
                            axum::Json(json!({ "status": "success", "message": "Event processed", "dedup_key": dedup_key })),
                        )
                    } else {
                        if let Ok(mut count) = refused.lock() {
                            *count += 1;
                        }
                        (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(json!({ "status": "invalid event", "message": "Event object is invalid", "errors": errors })),
                        )
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v2/enqueue", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PagerDuty {
            url,
            events,
            rejected,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn rejected(&self) -> usize {
        self.rejected.lock().map(|c| *c).unwrap_or(0)
    }
}

/// An engine with its own store and work directory.
pub struct TestEngine {
    pub engine: Engine,
    pub home: tempfile::TempDir,
}

pub struct DeployRun {
    pub run_id: i64,
    pub state: RunState,
    pub step: StepRecord,
    pub logs: Vec<String>,
}

impl DeployRun {
    pub fn outputs(&self) -> &Value {
        self.step.outputs.as_ref().unwrap_or_else(|| {
            panic!(
                "no outputs; error: {:?}; logs:\n{}",
                self.step.error,
                self.logs.join("\n")
            )
        })
    }

    pub fn error(&self) -> String {
        self.step.error.clone().unwrap_or_default()
    }
}

impl TestEngine {
    pub fn new() -> TestEngine {
        let home = tempfile::tempdir().expect("home");
        let store = Store::open(&home.path().join("cairn.db")).expect("open store");
        let settings = EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: home.path().join("work"),
        };
        TestEngine {
            engine: Engine::new(store, Arc::new(Registry::builtin(None)), settings),
            home,
        }
    }

    /// Runs one `deploy_agent` step with `with`, in a run whose context has `risk`.
    pub async fn deploy(&self, risk: &str, with: Value) -> DeployRun {
        self.deploy_in(json!({ "trigger": "manual", "risk": risk }), with)
            .await
    }

    /// Runs one `deploy_agent` step with `with`, in a run whose context is `context`.
    pub async fn deploy_in(&self, context: Value, with: Value) -> DeployRun {
        let definition = format!(
            "name: deploy\nsteps:\n  - id: deploy\n    agent: deploy_agent\n    timeout: 5m\n    retries: 0\n    with: {with}\n"
        );
        let (run_id, _) = self
            .engine
            .create_run(&definition, "deploy.yaml", None, context)
            .expect("create run");
        let state = self.engine.drive(run_id, None).await.expect("drive run");
        let store = self.engine.store();
        let step = store
            .steps(run_id)
            .expect("steps")
            .into_iter()
            .find(|s| s.step_id == "deploy")
            .expect("deploy step");
        let logs = store
            .logs(run_id, Some("deploy"), 0)
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect();
        DeployRun {
            run_id,
            state,
            step,
            logs,
        }
    }

    /// Runs a `deploy_agent` step and a `monitor_agent` step after it (with `watch`); returns
    /// the deploy's and the monitor's records.
    pub async fn deploy_and_monitor(
        &self,
        risk: &str,
        with: Value,
        watch: Value,
    ) -> (DeployRun, DeployRun) {
        let definition = format!(
            "name: deploy\nsteps:\n  - id: deploy\n    agent: deploy_agent\n    timeout: 5m\n    retries: 0\n    with: {with}\n  - id: monitor\n    agent: monitor_agent\n    depends_on: deploy\n    timeout: 5m\n    retries: 0\n    with: {watch}\n"
        );
        let context = json!({ "trigger": "manual", "risk": risk });
        let (run_id, _) = self
            .engine
            .create_run(&definition, "deploy.yaml", None, context)
            .expect("create run");
        let state = self.engine.drive(run_id, None).await.expect("drive run");
        let store = self.engine.store();
        let steps = store.steps(run_id).expect("steps");
        let record = |id: &str| {
            let step = steps
                .iter()
                .find(|s| s.step_id == id)
                .cloned()
                .expect("step");
            let logs = store
                .logs(run_id, Some(id), 0)
                .expect("logs")
                .into_iter()
                .map(|l| l.line)
                .collect();
            DeployRun {
                run_id,
                state,
                step,
                logs,
            }
        };
        (record("deploy"), record("monitor"))
    }

    /// The deploy and rollback history of `service`, as the store keeps it.
    pub fn history(&self, service: &str) -> Vec<Value> {
        self.engine
            .store()
            .deployment(service)
            .expect("deployment state")
            .and_then(|state| state["history"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// Failed answers and the versions seen, for one phase's report.
pub fn summarize(answers: &[Answer]) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut versions = std::collections::BTreeMap::new();
    for answer in answers {
        *versions
            .entry(if answer.ok {
                answer.version.clone()
            } else {
                "failed".into()
            })
            .or_insert(0) += 1;
    }
    (answers.iter().filter(|a| !a.ok).count(), versions)
}
