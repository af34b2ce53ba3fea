//! Fixtures for the test agent's selection, coverage and generation tests: real git
//! repositories written by the test, a tiny JUnit-writing Python runner (so nothing beyond
//! `python3` is needed), and a real engine over a SQLite file, optionally with a router whose
//! `propose_tests` goes to the fake OpenAI server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cairn_engine::agents::Registry;
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::llm::{Router, Settings};
use cairn_engine::store::{RunState, StepRecord, Store};
use serde_json::{Value, json};

/// Runs the test functions of the files it is given (or every `tests/test_*.py`) and writes
/// `report.xml` in JUnit form: a real runner, as small as a runner can be.
pub const PYTHON_RUNNER: &str = r#"import glob, runpy, sys, traceback
from xml.sax.saxutils import escape, quoteattr
files = sys.argv[1:] or sorted(glob.glob("tests/test_*.py"))
cases = []
for path in files:
    namespace = runpy.run_path(path, run_name="under_test")
    module = path[:-3].replace("/", ".")
    for name, function in sorted(namespace.items()):
        if name.startswith("test") and callable(function):
            try:
                function()
                cases.append((module, name, None))
            except Exception:
                cases.append((module, name, traceback.format_exc()))
with open("report.xml", "w") as out:
    out.write("<testsuite>")
    for module, name, error in cases:
        out.write(f"<testcase classname={quoteattr(module)} name={quoteattr(name)} time=\"0.001\">")
        if error:
            out.write(f"<failure message=\"failed\">{escape(error)}</failure>")
        out.write("</testcase>")
    out.write("</testsuite>")
print(f"ran {len(cases)} tests from {len(files)} files")
sys.exit(1 if any(error for _, _, error in cases) else 0)
"#;

/// A git repository in a temporary directory.
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn init(path: &Path) -> Repo {
        std::fs::create_dir_all(path).expect("create repo dir");
        let repo = Repo {
            path: path.to_path_buf(),
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Test"]);
        repo.git(&["config", "user.email", "test@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write file");
    }

    /// Commits everything; returns the commit id.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// An engine over a fresh store; `yaml` is `cairn.yaml` for its router (none when `None`).
pub struct TestEngine {
    pub engine: Engine,
    pub store: Store,
    pub home: tempfile::TempDir,
}

impl TestEngine {
    pub fn new(yaml: Option<&str>) -> TestEngine {
        TestEngine::create(yaml.map(|yaml| Settings::parse("cairn.yaml", yaml).expect("settings")))
    }

    /// With the router's defaults: `propose_tests` goes to the real local model.
    pub fn with_local_model() -> TestEngine {
        TestEngine::create(Some(Settings::default()))
    }

    fn create(settings: Option<Settings>) -> TestEngine {
        let home = tempfile::tempdir().expect("home");
        let store = Store::open(&home.path().join("cairn.db")).expect("open store");
        let router = settings
            .map(|settings| Arc::new(Router::new(settings, store.clone()).expect("router")));
        let settings = EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: home.path().join("work"),
        };
        let engine = Engine::new(store.clone(), Arc::new(Registry::builtin(router)), settings);
        TestEngine {
            engine,
            store,
            home,
        }
    }

    /// Runs one `test_agent` step with `with` on `commit` of `repo`.
    pub async fn test(&self, repo: &Repo, commit: &str, with: Value) -> TestRun {
        let definition =
            format!("name: tests\nsteps:\n  - id: test\n    agent: test_agent\n    with: {with}\n");
        self.run_definition(repo, commit, &definition).await
    }

    /// Runs a workflow whose step `test` is the test agent, on `commit` of `repo`.
    pub async fn run_definition(&self, repo: &Repo, commit: &str, definition: &str) -> TestRun {
        let context =
            json!({ "repo": repo.url(), "commit": commit, "branch": "main", "trigger": "manual" });
        let (run_id, _) = self
            .engine
            .create_run(definition, "tests.yaml", None, context)
            .expect("create run");
        let state = self.engine.drive(run_id, None).await.expect("drive run");
        let step = self
            .store
            .steps(run_id)
            .expect("steps")
            .into_iter()
            .find(|s| s.step_id == "test")
            .expect("test step");
        let logs = self
            .store
            .logs(run_id, Some("test"), 0)
            .expect("logs")
            .into_iter()
            .map(|l| l.line)
            .collect();
        TestRun {
            run_id,
            state,
            step,
            logs,
            run_dir: self.home.path().join("work").join(format!("run-{run_id}")),
        }
    }
}

pub struct TestRun {
    pub run_id: i64,
    pub state: RunState,
    pub step: StepRecord,
    pub logs: Vec<String>,
    pub run_dir: PathBuf,
}

impl TestRun {
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

/// Whether `python3 -c code` runs.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
