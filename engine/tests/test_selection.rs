//! The test agent with a runner other than cargo, on a real Python repository made by the test:
//! the learned file→test map selects the test file that changed together with the source file,
//! `select_globs` select what they name, an unknown file type selects everything, and coverage
//! gaps are reported where coverage.py exists.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

mod test_agent_support;

use serde_json::{Value, json};
use test_agent_support::{PYTHON_RUNNER, Repo, TestEngine, python_has};

fn with(extra: Value) -> Value {
    let mut with = json!({ "command": "python3 run_tests.py {tests}", "format": "junit", "junit": "report.xml", "coverage": false });
    if let (Some(map), Value::Object(extra)) = (with.as_object_mut(), extra) {
        map.extend(extra);
    }
    with
}

/// payments, users and orders, each with its test file; returns the repository after its
/// initial commit.
fn shop(dir: &std::path::Path) -> Repo {
    let repo = Repo::init(&dir.join("shop"));
    repo.write("run_tests.py", PYTHON_RUNNER);
    repo.write("README.md", "# shop\n");
    repo.write(
        "src/payments/charge.py",
        "def charge(amount):\n    return amount * 100\n",
    );
    repo.write(
        "src/users.py",
        "def greet(name):\n    return 'hi ' + name\n",
    );
    repo.write(
        "src/orders.py",
        "def total(items):\n    return sum(items)\n",
    );
    repo.write("tests/test_payments.py", "from src.payments.charge import charge\n\ndef test_charge():\n    assert charge(1) == 100\n");
    repo.write(
        "tests/test_users.py",
        "from src.users import greet\n\ndef test_greet():\n    assert greet('a') == 'hi a'\n",
    );
    repo.write(
        "tests/test_orders.py",
        "from src.orders import total\n\ndef test_total():\n    assert total([1, 2]) == 3\n",
    );
    repo.commit_all("shop");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learned_map_selects_the_co_changed_test_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    // users.py and its test changed together once: that is what the map learns.
    repo.write(
        "src/users.py",
        "def greet(name):\n    return 'hello ' + name\n",
    );
    repo.write(
        "tests/test_users.py",
        "from src.users import greet\n\ndef test_greet():\n    assert greet('a') == 'hello a'\n",
    );
    repo.commit_all("users: hello");
    repo.write(
        "src/users.py",
        "def greet(name):\n    return 'hello ' + name.strip()\n",
    );
    let commit = repo.commit_all("users: strip");

    let engine = TestEngine::new(None);
    let run = engine.test(&repo, &commit, with(json!({}))).await;
    let out = run.outputs();
    assert_eq!(out["selection"]["all"], false, "{out:#}");
    assert_eq!(
        out["selection"]["tests"],
        json!(["tests/test_users.py"]),
        "{out:#}"
    );
    assert_eq!(
        (
            out["selection"]["selected"].as_u64(),
            out["selection"]["total"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(
        out["selection"]["why"]["tests/test_users.py"],
        json!(["changed together with src/users.py in 1 commit"])
    );
    assert_eq!(out["command"], "python3 run_tests.py tests/test_users.py");
    assert_eq!(out["tests_run"], 1, "{out:#}");
    assert!(
        run.logs.iter().any(|l| l == "selected 1 of 3 test files"),
        "{}",
        run.logs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_failed_after_a_change_is_selected_the_next_time_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    let engine = TestEngine::new(None);
    // Unmapped, so everything runs, and test_orders fails for real.
    repo.write(
        "src/orders.py",
        "def total(items):\n    return sum(items) + 1\n",
    );
    let commit = repo.commit_all("orders: off by one");
    let run = engine
        .test(&repo, &commit, with(json!({ "reruns": 0 })))
        .await;
    assert_eq!(
        run.step.error.as_deref(),
        Some("1 test(s) failed: tests.test_orders::test_total"),
        "{}",
        run.logs.join("\n")
    );

    repo.write(
        "src/orders.py",
        "def total(items):\n    return sum(items)\n",
    );
    let commit = repo.commit_all("orders: fix");
    let out = engine
        .test(&repo, &commit, with(json!({})))
        .await
        .outputs()
        .clone();
    assert_eq!(
        out["selection"]["tests"],
        json!(["tests/test_orders.py"]),
        "{out:#}"
    );
    assert_eq!(
        out["selection"]["why"]["tests/test_orders.py"],
        json!(["failed after src/orders.py changed (1 run)"])
    );
    assert_eq!(out["failed"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_select_and_an_unknown_file_selects_everything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    let engine = TestEngine::new(None);
    let globs = json!({ "select_globs": { "src/payments/**": ["tests/test_pay*.py"] } });

    repo.write(
        "src/payments/charge.py",
        "def charge(amount):\n    return int(amount * 100)\n",
    );
    let commit = repo.commit_all("payments: int");
    let run = engine.test(&repo, &commit, with(globs.clone())).await;
    let out = run.outputs();
    assert_eq!(
        out["selection"]["tests"],
        json!(["tests/test_payments.py"]),
        "{out:#}"
    );
    assert_eq!(
        out["selection"]["why"]["tests/test_payments.py"],
        json!(["select_globs `src/payments/**` matched src/payments/charge.py"])
    );
    assert_eq!(out["tests_run"], 1);

    // Without the globs, the same kind of change is unmapped: everything runs.
    repo.write(
        "src/payments/charge.py",
        "def charge(amount):\n    return int(round(amount * 100))\n",
    );
    let commit = repo.commit_all("payments: round");
    let out = engine
        .test(&repo, &commit, with(json!({})))
        .await
        .outputs()
        .clone();
    assert_eq!(out["selection"]["all"], true, "{out:#}");
    assert!(
        out["selection"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no learned or configured test maps it"),
        "{out:#}"
    );

    // A file type nothing knows: everything, even with the globs.
    repo.write("data/rates.xyz", "1.5\n");
    let commit = repo.commit_all("rates");
    let out = engine
        .test(&repo, &commit, with(globs))
        .await
        .outputs()
        .clone();
    assert_eq!(out["selection"]["all"], true, "{out:#}");
    assert_eq!(
        (
            out["selection"]["selected"].as_u64(),
            out["selection"]["total"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert!(
        out["selection"]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("data/rates.xyz: "),
        "{out:#}"
    );
    assert_eq!(out["command"], "python3 run_tests.py");
    assert_eq!(out["tests_run"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_gaps_are_reported_per_file_for_python() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    repo.write("src/orders.py", "def total(items):\n    return sum(items)\n\n\ndef discount(items):\n    return total(items) * 0.9\n");
    let commit = repo.commit_all("orders: discount");
    let engine = TestEngine::new(None);
    let run = engine
        .test(
            &repo,
            &commit,
            with(json!({ "select": false, "coverage": true })),
        )
        .await;
    let out = run.outputs();
    if !python_has("coverage") {
        eprintln!(
            "SKIPPED coverage gaps: coverage.py is not installed (python3 -m coverage); checking it says so once"
        );
        assert!(
            out["coverage"]["unavailable"]
                .as_str()
                .unwrap()
                .contains("coverage.py is not installed"),
            "{out:#}"
        );
        return;
    }
    assert_eq!(out["coverage"]["tool"], "coverage.py", "{out:#}");
    assert_eq!(
        out["coverage"]["files"],
        json!({ "src/orders.py": { "lines": [6], "ranges": "6" } }),
        "the `def` line runs on import, its body never: {out:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_is_narrowed_to_the_selected_files_and_its_junit_option_is_read() {
    if !python_has("pytest") {
        eprintln!(
            "SKIPPED: pytest is not installed (python3 -m pytest); the {{tests}} runner covers narrowing without it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    let engine = TestEngine::new(None);
    let globs = json!({ "src/payments/**": "tests/test_payments.py" });
    repo.write(
        "src/payments/charge.py",
        "def charge(amount):\n    return int(amount * 100)\n",
    );
    let commit = repo.commit_all("payments: int");
    // No `format:` or `junit:`: `--junitxml=` says both.
    let with = json!({ "command": "python3 -m pytest -q -p no:cacheprovider --junitxml=report.xml", "select_globs": globs, "coverage": false });
    let run = engine.test(&repo, &commit, with).await;
    let out = run.outputs();
    assert_eq!(
        out["command"],
        "python3 -m pytest -q -p no:cacheprovider --junitxml=report.xml tests/test_payments.py",
        "{out:#}"
    );
    assert_eq!(out["tests_run"], 1, "{out:#}\n{}", run.logs.join("\n"));
    assert_eq!(out["passed"], 1);
}
