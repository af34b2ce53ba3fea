//! Risk learned from history, on git repositories the tests build: SZZ traces a fix to the
//! commit that wrote the lines it changed (whitespace ignored, docs not traced); `cairn risk
//! calibrate` stores a model and `cairn risk report` prints its figures; the model may raise
//! the rule floor, never lower it; bad input is a clear error with exit code 2.
//! See `ARCHITECTURE.md`, "Risk learned from history".

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_engine::agents::orchestrator::history::{Explanation, introducers, raise};
use cairn_engine::agents::orchestrator::{Level, analyze};
use cairn_engine::store::Store;

struct Repo {
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// Commit time of the next commit: one day apart, so the history has a time order.
    clock: std::cell::Cell<i64>,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let repo = Repo {
            path: dir.path().to_path_buf(),
            _dir: dir,
            clock: std::cell::Cell::new(1_600_000_000),
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Cairn Tests"]);
        repo.git(&["config", "user.email", "tests@cairn.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_as(args, "tests@cairn.invalid")
    }

    fn git_as(&self, args: &[&str], author: &str) -> String {
        let date = format!("{} +0000", self.clock.get());
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_AUTHOR_EMAIL", author)
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn write(&self, path: &str, text: &str) {
        let full = self.path.join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path.join(path)).unwrap_or_default()
    }

    fn commit_as(&self, message: &str, author: &str) -> String {
        self.clock.set(self.clock.get() + 86_400);
        self.git(&["add", "-A"]);
        self.git_as(&["commit", "--quiet", "-m", message], author);
        self.git(&["rev-parse", "HEAD"])
    }

    fn commit(&self, message: &str) -> String {
        self.commit_as(message, "tests@cairn.invalid")
    }
}

fn cairn(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_HOME", home)
        .env_remove("CAIRN_CONFIG")
        .output()
        .expect("cairn runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_fix_is_traced_to_the_commit_that_wrote_the_lines_it_changed() {
    let repo = Repo::new();
    repo.write(
        "src/calc.py",
        "def add(a, b):\n    return a + b\n\n\ndef scale(x):\n    return x * 2\n",
    );
    let first = repo.commit("add calc");
    repo.write(
        "src/calc.py",
        "def add(a, b):\n    return a - b\n\n\ndef scale(x):\n    return x * 2\n",
    );
    let buggy = repo.commit_as("simplify add", "newcomer@example.org");
    repo.write("README.md", "calc\n");
    repo.commit("docs");
    // Re-indenting a line does not make its re-indenter its author (blame -w).
    repo.write(
        "src/calc.py",
        "def add(a, b):\n    return a - b\n\n\ndef scale(x):\n      return x * 2\n",
    );
    let reindent = repo.commit("reindent");
    repo.write(
        "src/calc.py",
        "def add(a, b):\n    return a + b\n\n\ndef scale(x):\n      return x * 3\n",
    );
    let fix = repo.commit("Fix wrong sum and scale (closes #7)");
    let found = introducers(&repo.path, &fix);
    assert!(found.contains(&buggy), "{found:?}");
    assert!(
        found.contains(&first),
        "the scale line is the first commit's: {found:?}"
    );
    assert!(!found.contains(&reindent), "{found:?}");
    assert_eq!(found.len(), 2, "{found:?}");

    // A fix of documentation is not traced: docs carry no defect of the program.
    repo.write("README.md", "calc, the calculator\n");
    let docs_fix = repo.commit("fix typo in readme");
    assert!(introducers(&repo.path, &docs_fix).is_empty());
}

/// A history where large changes by newcomers are fixed a few days later and small changes
/// by the maintainer are not: there is something to learn.
fn history_with_a_pattern(repo: &Repo, commits: usize) {
    for file in 0..6 {
        repo.write(&format!("src/m{file}.py"), "def base():\n    return 0\n");
    }
    repo.commit("start");
    let mut pending_fix: Option<(usize, String)> = None;
    for i in 0..commits {
        if let Some((file, line)) = pending_fix.take() {
            let path = format!("src/m{file}.py");
            let fixed = repo.read(&path).replacen(&line, &format!("{line} + 1"), 1);
            repo.write(&path, &fixed);
            repo.commit(&format!("fix crash in m{file}"));
            continue;
        }
        let file = i % 6;
        let path = format!("src/m{file}.py");
        let mut body = repo.read(&path);
        if i % 4 == 0 {
            let mut line = String::new();
            for k in 0..30 {
                line = format!("    v{i}_{k} = {k}");
                body.push_str(&format!("\ndef f{i}_{k}():\n{line}\n    return v{i}_{k}\n"));
            }
            repo.write(&path, &body);
            repo.commit_as(&format!("feature {i}"), &format!("new{i}@example.org"));
            pending_fix = Some((file, line));
        } else {
            body.push_str(&format!("\n# note {i}\nsmall_{i} = {i}\n"));
            repo.write(&path, &body);
            repo.commit(&format!("tweak {i}"));
        }
    }
}

#[test]
fn calibration_stores_a_model_that_the_report_and_analyze_show() {
    let repo = Repo::new();
    history_with_a_pattern(&repo, 90);
    let home = tempfile::tempdir().expect("a home");
    let repo_arg = repo.path.display().to_string();

    // Cairn saw a test fail on the first commit, which no fix traces to: a label of its own.
    let root = repo.git(&["rev-list", "--max-parents=0", "HEAD"]);
    let store = Store::open(&home.path().join("cairn.db")).expect("a store");
    store
        .write(|txn| txn.record_test_result(1, "test", "local", &root, "t::one", "failed", None))
        .expect("recorded");
    drop(store);

    let output = cairn(
        home.path(),
        &["risk", "calibrate", "--repo", &repo_arg, "--gap-days", "0"],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 labelled from Cairn's own outcomes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reliability  predicted→observed"),
        "{stdout}"
    );
    assert!(stderr.contains("tracing fixes with git blame"), "{stderr}");
    assert!(stdout.contains("AUC          model"), "{stdout}");

    let output = cairn(home.path(), &["risk", "report", "--json"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let evaluation = &report[0]["evaluation"];
    let auc = evaluation["auc"].as_f64().expect("an AUC");
    assert!(
        auc > 0.8,
        "large newcomer changes are the ones fixed later: {auc}"
    );
    let labelled = evaluation["window"]["defect_inducing"]
        .as_u64()
        .expect("a count");
    // Every fourth change is fixed by the commit after it.
    assert!(labelled >= 20, "{evaluation}");
    let precision = evaluation["high_combined"]["precision"].as_f64();
    assert!(precision.is_some(), "{evaluation}");

    let output = cairn(home.path(), &["risk", "report", "--repo", &repo_arg]);
    let (stdout, _) = text(&output);
    assert!(stdout.contains("rules or model: precision"), "{stdout}");

    // A new large change by a newcomer: the model rates it above the repository's base rate
    // and `cairn analyze` shows the probability and its top features.
    let mut body = repo.read("src/m0.py");
    for k in 0..30 {
        body.push_str(&format!("\ndef late_{k}():\n    return {k}\n"));
    }
    repo.write("src/m0.py", &body);
    repo.commit_as("feature late", "late@example.org");
    let output = cairn(
        home.path(),
        &["analyze", "--repo", &repo_arg, "--no-model", "--json"],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let analysis: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let history = &analysis["history"];
    let probability = history["probability"].as_f64().expect("a probability");
    assert!(
        probability > history["base_rate"].as_f64().expect("a base rate"),
        "{history}"
    );
    assert!(!history["top"].as_array().expect("features").is_empty());
    if history["says_high"] == serde_json::json!(true) {
        assert_eq!(analysis["risk"]["level"], "high", "{analysis}");
        assert_eq!(analysis["decided_by"], "history model");
    }

    // A run's orchestrator step works in a clone of the repository: it finds the model by the
    // root commit and publishes the same probability as its `history` output.
    let workflow = home.path().join("judge.yaml");
    std::fs::write(
        &workflow,
        "name: judge\nsteps:\n  - id: analyze\n    agent: orchestrator\n    with: { model: off }\n",
    )
    .expect("workflow written");
    let output = cairn(
        home.path(),
        &[
            "run",
            &workflow.display().to_string(),
            "--repo",
            &repo_arg,
            "-q",
        ],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let store = Store::open(&home.path().join("cairn.db")).expect("a store");
    let run = store.runs(1).expect("runs").remove(0);
    let step = store.steps(run.id).expect("steps").remove(0);
    let outputs = step.outputs.expect("the step has outputs");
    let in_run = outputs["history"]["probability"]
        .as_f64()
        .unwrap_or_else(|| panic!("no history in {outputs}"));
    assert!(
        (in_run - probability).abs() < 1e-9,
        "{in_run} vs {probability}"
    );
}

#[test]
fn the_model_raises_a_level_but_never_lowers_a_floor() {
    let repo = Repo::new();
    repo.write("src/app.py", "def run():\n    return 1\n");
    let code = repo.commit("app");
    repo.write(
        "db/migrations/0001_init.sql",
        "CREATE TABLE t (id INTEGER);\n",
    );
    let migration = repo.commit("migration");
    let calm = Explanation {
        probability: 0.01,
        high_threshold: 0.5,
        base_rate: 0.2,
        says_high: false,
        top: Vec::new(),
    };
    let mut high = analyze(&repo.path, &migration).expect("analyses");
    assert_eq!(high.risk.level, Level::High);
    raise(&mut high, &calm);
    assert_eq!(
        high.risk.level,
        Level::High,
        "a low probability never lowers"
    );
    assert_eq!(high.decided_by, "rules");

    let mut medium = analyze(&repo.path, &code).expect("analyses");
    assert!(medium.risk.level < Level::High);
    raise(&mut medium, &calm);
    assert!(medium.risk.level < Level::High);
    let alarmed = Explanation {
        probability: 0.9,
        says_high: true,
        ..calm
    };
    raise(&mut medium, &alarmed);
    assert_eq!(medium.risk.level, Level::High);
    assert_eq!(medium.route.deploy, "canary");
    assert_eq!(medium.risk.reasons[0].rule, "history_model");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let home = tempfile::tempdir().expect("a home");
    let output = cairn(
        home.path(),
        &["risk", "calibrate", "--repo", "/nonexistent/cairn-repo"],
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");

    let plain = tempfile::tempdir().expect("a directory");
    let output = cairn(
        home.path(),
        &[
            "risk",
            "calibrate",
            "--repo",
            &plain.path().display().to_string(),
        ],
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a git repository"), "{stderr}");

    let repo = Repo::new();
    for i in 0..5 {
        repo.write("src/a.py", &format!("x = {i}\n"));
        repo.commit(&format!("fix {i}"));
    }
    let output = cairn(
        home.path(),
        &[
            "risk",
            "calibrate",
            "--repo",
            &repo.path.display().to_string(),
            "--gap-days",
            "0",
        ],
    );
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("too little history"), "{stderr}");

    let output = cairn(home.path(), &["risk", "report"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no risk model has been calibrated"),
        "{stderr}"
    );
}
