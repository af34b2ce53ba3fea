//! Fixtures for the build agent's tests: static binaries compiled with `gcc -static` (the only
//! way to have something to run in a `FROM scratch` image when no image can be pulled), real
//! git repositories, a real engine over a SQLite file, and cleanup of the images made.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cairn_engine::agents::Registry;
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::{RunState, StepRecord, Store};
use serde_json::{Value, json};

/// The "dependency installer" a test image runs in a `RUN` step: it takes 1.5 s, as installs
/// do, so a build that reuses its layer is measurably faster than one that does not.
pub const INSTALLER_C: &str = r#"#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec pause = {1, 500000000};
    nanosleep(&pause, 0);
    FILE *marker = fopen("/deps/installed", "w");
    if (!marker) return 1;
    fputs("ok\n", marker);
    fclose(marker);
    puts("dependencies installed");
    return 0;
}
"#;

/// Layers: the dependency manifest, the installer and its run, then the application.
pub const DOCKERFILE: &str = "FROM scratch\nCOPY requirements.txt /deps/requirements.txt\nCOPY install /install\nRUN [\"/install\"]\nCOPY app /app\nUSER 65534\nENTRYPOINT [\"/app\"]\n";

/// Compiles `source` with `gcc -static` into `out`.
pub fn compile_static(source: &str, out: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c_file = dir.path().join("main.c");
    std::fs::write(&c_file, source).expect("write C source");
    let output = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(out)
        .arg(&c_file)
        .output()
        .expect("run gcc");
    assert!(
        output.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn hello_c(message: &str) -> String {
    format!("#include <stdio.h>\nint main(void) {{ puts(\"{message}\"); return 0; }}\n")
}

pub fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `git init` with the identity the tests commit as.
pub fn init_repo(path: &Path) {
    git(path, &["init", "--quiet", "--initial-branch=main"]);
    for (key, value) in [
        ("user.name", "Cairn Tests"),
        ("user.email", "tests@cairn.invalid"),
        ("commit.gpgsign", "false"),
    ] {
        git(path, &["config", key, value]);
    }
}

/// A repository holding a buildable FROM-scratch service.
pub struct ServiceRepo {
    pub path: PathBuf,
}

impl ServiceRepo {
    pub fn create(path: &Path) -> ServiceRepo {
        std::fs::create_dir_all(path).expect("mkdir repo");
        init_repo(path);
        std::fs::write(path.join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
        std::fs::write(path.join(".dockerignore"), "notes/\n*.c\n").expect(".dockerignore");
        std::fs::write(path.join("requirements.txt"), "flask==3.0.0\n").expect("requirements");
        std::fs::create_dir_all(path.join("notes")).expect("notes");
        std::fs::write(path.join("notes/todo.md"), "not in the context\n").expect("notes");
        compile_static(INSTALLER_C, &path.join("install"));
        compile_static(&hello_c("hello v1"), &path.join("app"));
        let repo = ServiceRepo {
            path: path.to_path_buf(),
        };
        repo.commit("initial service");
        repo
    }

    pub fn commit(&self, message: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "--quiet", "-m", message]);
        git(&self.path, &["rev-parse", "HEAD"])
    }
}

/// An engine with its own store and work directory.
pub struct TestEngine {
    pub engine: Engine,
    pub home: tempfile::TempDir,
}

impl TestEngine {
    pub fn new() -> TestEngine {
        TestEngine::create(false)
    }

    /// With the language-model router and the real default local model (which
    /// `scripts/fetch-model.sh` provides), as `cairn` runs agents.
    pub fn with_local_model() -> TestEngine {
        TestEngine::create(true)
    }

    fn create(with_router: bool) -> TestEngine {
        let home = tempfile::tempdir().expect("home");
        let store = Store::open(&home.path().join("cairn.db")).expect("open store");
        let router = with_router.then(|| {
            Arc::new(
                cairn_engine::llm::Router::new(
                    cairn_engine::llm::Settings::default(),
                    store.clone(),
                )
                .expect("router"),
            )
        });
        let settings = EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: home.path().join("work"),
        };
        let engine = Engine::new(store, Arc::new(Registry::builtin(router)), settings);
        TestEngine { engine, home }
    }

    /// Runs `orchestrator` then `build_agent` with `with` on `commit`; returns the run's end
    /// state, the build step's record and its log lines.
    pub async fn build(&self, repo: &Path, commit: &str, with: Value) -> BuildRun {
        let definition = format!(
            "name: build\nsteps:\n  - id: analyze\n    agent: orchestrator\n  - id: build\n    agent: build_agent\n    depends_on: analyze\n    with: {with}\n"
        );
        let context = json!({ "repo": repo.to_string_lossy(), "commit": commit, "branch": "main", "trigger": "manual" });
        let (run_id, _) = self
            .engine
            .create_run(&definition, "build.yaml", None, context)
            .expect("create run");
        let state = self.engine.drive(run_id, None).await.expect("drive run");
        let store = self.engine.store();
        let step = store
            .steps(run_id)
            .expect("steps")
            .into_iter()
            .find(|s| s.step_id == "build")
            .expect("build step");
        let logs = store
            .logs(run_id, Some("build"), 0)
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect();
        BuildRun {
            state,
            step,
            logs,
            run_id,
        }
    }
}

pub struct BuildRun {
    pub run_id: i64,
    pub state: RunState,
    pub step: StepRecord,
    pub logs: Vec<String>,
}

impl BuildRun {
    pub fn outputs(&self) -> &Value {
        self.step.outputs.as_ref().unwrap_or_else(|| {
            panic!(
                "no outputs; error: {:?}; logs:\n{}",
                self.step.error,
                self.logs.join("\n")
            )
        })
    }
}

/// Removes every image of `repository` when dropped, whatever the test's outcome.
pub struct Images {
    pub repository: String,
}

impl Images {
    pub fn new(case: &str) -> Images {
        Images {
            repository: format!("cairn-test-{}-{case}", std::process::id()),
        }
    }

    /// The image id a reference points at, if any.
    pub fn id_of(reference: &str) -> Option<String> {
        let output = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", reference])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let listed = Command::new("docker")
            .args([
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
                &self.repository,
            ])
            .output();
        if let Ok(listed) = listed {
            let references: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !references.is_empty() {
                let _ = Command::new("docker")
                    .args(["rmi", "--force"])
                    .args(&references)
                    .output();
            }
        }
    }
}

/// A git repository holding a copy of `demo/service` with its static binary committed (the
/// checkout the engine builds from has only committed files). Returns the repository and
/// the head commit.
pub fn demo_service_repo(path: &Path) -> ServiceRepo {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/service");
    std::fs::create_dir_all(path.join("src")).expect("mkdir");
    for file in [
        "Cargo.toml",
        "Dockerfile",
        ".dockerignore",
        "src/main.rs",
        "src/config.rs",
        "src/http.rs",
        "src/metrics.rs",
    ] {
        std::fs::copy(source.join(file), path.join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    init_repo(path);
    let repo = ServiceRepo {
        path: path.to_path_buf(),
    };
    repo.build_demo_binary();
    repo.commit("demo service");
    repo
}

impl ServiceRepo {
    /// `cargo build --release` of the demo, static, into the repository's own `target/`.
    pub fn build_demo_binary(&self) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let output = Command::new(cargo)
            .current_dir(&self.path)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", self.path.join("target"))
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .output()
            .expect("run cargo");
        assert!(
            output.status.success(),
            "demo build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        git(
            &self.path,
            &[
                "add",
                "--force",
                "target/x86_64-unknown-linux-gnu/release/demo-service",
            ],
        );
    }
}

/// A container of `image` with port 8080 published on a free 127.0.0.1 port; removed on drop.
pub struct Container {
    pub id: String,
    pub address: String,
}

impl Container {
    pub fn start(image: &str, env: &[(&str, &str)]) -> Container {
        let mut command = Command::new("docker");
        command.args(["run", "--detach", "--publish", "127.0.0.1::8080"]);
        for (name, value) in env {
            command.args(["--env", &format!("{name}={value}")]);
        }
        let output = command.arg(image).output().expect("docker run");
        assert!(
            output.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let port = Command::new("docker")
            .args(["port", &id, "8080/tcp"])
            .output()
            .expect("docker port");
        let address = String::from_utf8_lossy(&port.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        Container { id, address }
    }

    /// `GET path` → (status, body), retried for up to 5 s while the server starts.
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let attempt = (|| -> std::io::Result<(u16, String)> {
                let mut stream = std::net::TcpStream::connect(&self.address)?;
                stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
                )?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                let status = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or(std::io::ErrorKind::InvalidData)?;
                Ok((
                    status,
                    text.split_once("\r\n\r\n")
                        .map(|(_, b)| b.to_string())
                        .unwrap_or_default(),
                ))
            })();
            match attempt {
                Ok(answer) => return answer,
                Err(error) if std::time::Instant::now() > deadline => {
                    panic!("GET {path} on {}: {error}", self.address)
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", &self.id])
            .output();
    }
}
