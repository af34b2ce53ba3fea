//! The test agent with a runner other than cargo, on real Python repositories made by the test:
//! the import graph selects the test files reaching a changed file, history only adds to it
//! (the `encoding.py` miss: a learned map that never saw a module's own test cannot leave it
//! out), `select_globs` add what they name, a build file selects everything, the step's and the
//! workflow's `env:` reach the runner, pytest gets Cairn's own JUnit report, failures of every
//! runner are re-run to tell flaky from broken, and coverage gaps are reported where
//! coverage.py exists.

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
async fn the_import_graph_selects_and_names_its_reasons() {
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
        json!([
            "imports src/users.py",
            "the test file named after src/users.py"
        ])
    );
    assert_eq!(out["command"], "python3 run_tests.py tests/test_users.py");
    assert_eq!(out["tests_run"], 1, "{out:#}");
    assert!(
        run.logs.iter().any(|l| l == "selected 1 of 3 test files"),
        "{}",
        run.logs.join("\n")
    );
}

/// The `encoding.py` miss: every commit that touched `encoding.py` also touched other test
/// files, never its own, so the learned map links it only to those. A bug in it must still
/// run `test_encoding.py` (imported through the package's `__init__` re-export, and named
/// after the module) and fail the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_s_own_test_is_selected_whatever_history_learned() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("lib"));
    repo.write("run_tests.py", PYTHON_RUNNER);
    repo.write(
        "lib/__init__.py",
        "from .encoding import encode\nfrom .models import Model\n",
    );
    repo.write(
        "lib/encoding.py",
        "def encode(text):\n    return text.encode('utf-8')\n",
    );
    repo.write("lib/models.py", "class Model:\n    pass\n");
    repo.write("lib/api.py", "def get():\n    return 1\n");
    repo.write(
        "tests/test_encoding.py",
        "from lib import encode\n\ndef test_encode():\n    assert encode('é') == b'\\xc3\\xa9'\n",
    );
    for name in ["models", "api", "client", "cli"] {
        repo.write(
            &format!("tests/test_{name}.py"),
            "def test_ok():\n    assert True\n",
        );
    }
    repo.commit_all("lib");
    for round in 0..3 {
        repo.write(
            "lib/encoding.py",
            &format!("def encode(text):\n    # round {round}\n    return text.encode('utf-8')\n"),
        );
        for name in ["models", "api", "client", "cli"] {
            repo.write(
                &format!("tests/test_{name}.py"),
                &format!("def test_ok():\n    assert {round} >= 0\n"),
            );
        }
        repo.commit_all(&format!("sweep {round}"));
    }
    repo.write(
        "lib/encoding.py",
        "def encode(text):\n    return text.encode('latin-1')\n",
    );
    let commit = repo.commit_all("encoding: the bug");

    let engine = TestEngine::new(None);
    let run = engine
        .test(&repo, &commit, with(json!({ "reruns": 0 })))
        .await;
    assert_eq!(
        run.step.error.as_deref(),
        Some("1 test(s) failed: tests.test_encoding::test_encode"),
        "the bug must not pass the pipeline:\n{}",
        run.logs.join("\n")
    );
    let selected = run
        .logs
        .iter()
        .find(|l| l.starts_with("selected: tests/test_encoding.py:"))
        .unwrap_or_else(|| panic!("{}", run.logs.join("\n")));
    assert!(
        selected.contains("imports lib/__init__.py → imports lib/encoding.py"),
        "{selected}"
    );
    assert!(
        selected.contains("the test file named after lib/encoding.py"),
        "{selected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_failed_after_a_change_is_selected_the_next_time_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    let engine = TestEngine::new(None);
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
        out["selection"]["why"]["tests/test_orders.py"][2],
        "failed after src/orders.py changed (1 run)"
    );
    assert_eq!(out["failed"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_add_and_a_build_file_selects_everything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop(dir.path());
    let engine = TestEngine::new(None);
    let globs = json!({ "select_globs": { "src/payments/**": ["tests/test_orders.py"] } });

    repo.write(
        "src/payments/charge.py",
        "def charge(amount):\n    return int(amount * 100)\n",
    );
    let commit = repo.commit_all("payments: int");
    let run = engine.test(&repo, &commit, with(globs.clone())).await;
    let out = run.outputs();
    assert_eq!(
        out["selection"]["tests"],
        json!(["tests/test_orders.py", "tests/test_payments.py"]),
        "{out:#}"
    );
    assert_eq!(
        out["selection"]["why"]["tests/test_orders.py"],
        json!(["select_globs `src/payments/**` matched src/payments/charge.py"])
    );
    assert_eq!(out["tests_run"], 2);

    // A data file no code names selects nothing; a build file, everything.
    repo.write("data/rates.xyz", "1.5\n");
    let commit = repo.commit_all("rates");
    let out = engine
        .test(&repo, &commit, with(json!({})))
        .await
        .outputs()
        .clone();
    assert_eq!(
        (out["selection"]["all"].clone(), out["tests_run"].clone()),
        (json!(false), json!(0)),
        "{out:#}"
    );
    repo.write("requirements.txt", "requests==2.0\n");
    let commit = repo.commit_all("requirements");
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
            .starts_with("requirements.txt: "),
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

/// `PYTHONPATH=src` in the workflow's `env:` and a variable in the step's own reach pytest; a
/// `command: pytest` without `--junitxml` gets Cairn's report; a test failing once is re-run
/// and told flaky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_reaches_pytest_which_gets_cairn_s_report_and_failures_are_re_run() {
    if !python_has("pytest") {
        eprintln!("SKIPPED: pytest is not installed (python3 -m pytest)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("calc"));
    repo.write("src/calc/__init__.py", "");
    repo.write("src/calc/ops.py", "def add(a, b):\n    return a + b\n");
    repo.write(
        "tests/test_ops.py",
        "from calc.ops import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    );
    // Fails on its first run, passes on the next: the counter file lives outside the checkout.
    repo.write(
        "tests/test_sometimes.py",
        "import os\nfrom calc.ops import add\n\ndef test_sometimes():\n    path = os.environ['COUNTER']\n    runs = int(open(path).read()) if os.path.exists(path) else 0\n    open(path, 'w').write(str(runs + 1))\n    assert runs % 2 == 1 and add(1, 1) == 2\n",
    );
    repo.write(
        "tests/test_other.py",
        "def test_other():\n    assert True\n",
    );
    repo.commit_all("calc");
    repo.write("src/calc/ops.py", "def add(a, b):\n    return b + a\n");
    let commit = repo.commit_all("ops: commute");
    let counter = dir.path().join("counter");
    let definition = format!(
        "name: tests\nenv:\n  PYTHONPATH: src\nsteps:\n  - id: test\n    agent: test_agent\n    env:\n      COUNTER: {}\n    with:\n      command: python3 -m pytest -q -p no:cacheprovider\n      coverage: false\n",
        counter.display()
    );
    let engine = TestEngine::new(None);
    let run = engine.run_definition(&repo, &commit, &definition).await;
    let out = run.outputs();
    let command = out["command"].as_str().unwrap();
    assert!(
        command.starts_with("python3 -m pytest --junitxml=")
            && !command.contains(repo.path.to_str().unwrap()),
        "Cairn's report, outside the checkout: {command}"
    );
    assert!(
        command.ends_with(" -q -p no:cacheprovider tests/test_ops.py tests/test_sometimes.py"),
        "{command}"
    );
    assert_eq!(out["tests_run"], 2, "{out:#}\n{}", run.logs.join("\n"));
    assert_eq!(
        out["flaky"],
        json!(["tests.test_sometimes::test_sometimes"]),
        "{out:#}"
    );
    assert_eq!(out["failed"], json!([]));
    assert!(
        run.logs.iter().any(|l| l
            .contains("re-running tests.test_sometimes::test_sometimes (1/2)")
            && l.ends_with("tests/test_sometimes.py::test_sometimes")),
        "{}",
        run.logs.join("\n")
    );
}

/// Per-test coverage (as pytest-testmon does it): a coverage run records which lines each test
/// file executed; a later change inside a function body then selects only the test files that
/// executed that body, where the import graph alone would select every importer. A test file
/// the record does not know (added since) still runs, and a change outside function bodies
/// (module-level code runs at import, for every importer) selects every importer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_test_coverage_selects_the_test_files_that_ran_the_changed_lines() {
    if !python_has("pytest") || !python_has("coverage") {
        eprintln!("SKIPPED: pytest and coverage.py are needed (scripts/setup.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("calc"));
    let calc = |add: &str, mul: &str| {
        format!(
            "def add(a, b):\n    return {add}\n\n\ndef mul(a, b):\n    product = {mul}\n    return product\n"
        )
    };
    repo.write("src/calc.py", &calc("a + b", "a * b"));
    repo.write(
        "tests/test_adding.py",
        "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    );
    repo.write(
        "tests/test_multiplying.py",
        "from src.calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
    );
    repo.write("README.md", "# calc\n");
    let first = repo.commit_all("calc");
    let engine = TestEngine::new(None);
    let command = "python3 -m pytest -q -p no:cacheprovider";

    // The recording run: everything, under coverage with one context per test.
    let run = engine
        .test(
            &repo,
            &first,
            json!({ "command": command, "select": false, "coverage": true }),
        )
        .await;
    let out = run.outputs();
    assert_eq!(out["tests_run"], 2, "{out:#}\n{}", run.logs.join("\n"));
    assert!(
        run.logs
            .iter()
            .any(|l| l == "coverage: recorded what 2 test file(s) executed"),
        "{}",
        run.logs.join("\n")
    );
    let records = engine.store.test_coverage(&repo.url()).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let adding = &records[0];
    assert_eq!(adding.test_file, "tests/test_adding.py");
    assert!(
        adding.lines["src/calc.py"].contains(&2) && !adding.lines["src/calc.py"].contains(&6),
        "test_adding ran add's body, not mul's: {adding:?}"
    );

    // A test file added since the record: unknown to it.
    repo.write(
        "tests/test_late.py",
        "from src.calc import add\n\n\ndef test_late():\n    assert add(1, 1) == 2\n",
    );
    repo.commit_all("a late test");
    // A change inside mul's body: only the test file that ran it, and the unknown one.
    repo.write("src/calc.py", &calc("a + b", "b * a"));
    let commit = repo.commit_all("mul: b * a");
    let run = engine
        .test(
            &repo,
            &commit,
            json!({ "command": command, "coverage": false }),
        )
        .await;
    let out = run.outputs();
    assert_eq!(
        out["selection"]["tests"],
        json!(["tests/test_late.py", "tests/test_multiplying.py"]),
        "{out:#}"
    );
    let reasons = out["selection"]["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r.as_str().is_some_and(|r| r
            .starts_with("tests/test_adding.py: left out for src/calc.py: its tests never ran the changed mul"))),
        "{out:#}"
    );
    assert_eq!(out["tests_run"], 2, "{out:#}");

    // Module-level code runs at import, for every importer: no narrowing. (The record is also
    // stale now — calc.py changed since — which alone would keep every importer.)
    repo.write(
        "src/calc.py",
        &format!("SCALE = 1\n\n\n{}", calc("a + b", "b * a")),
    );
    let commit = repo.commit_all("calc: a constant");
    let run = engine
        .test(
            &repo,
            &commit,
            json!({ "command": command, "coverage": false }),
        )
        .await;
    let out = run.outputs();
    assert_eq!(
        out["selection"]["tests"],
        json!([
            "tests/test_adding.py",
            "tests/test_late.py",
            "tests/test_multiplying.py"
        ]),
        "{out:#}"
    );
}

/// A stale record is unknown: after a change to a file a test executed, its record says
/// nothing until a coverage run records it again, and then it narrows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_older_than_a_change_to_what_the_test_ran_is_not_trusted() {
    if !python_has("pytest") || !python_has("coverage") {
        eprintln!("SKIPPED: pytest and coverage.py are needed (scripts/setup.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("calc"));
    let calc = |add: &str, mul: &str| {
        format!("def add(a, b):\n    return {add}\n\n\ndef mul(a, b):\n    return {mul}\n")
    };
    repo.write("src/calc.py", &calc("a + b", "a * b"));
    repo.write(
        "tests/test_adding.py",
        "from src.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    );
    repo.write(
        "tests/test_multiplying.py",
        "from src.calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
    );
    let first = repo.commit_all("calc");
    let engine = TestEngine::new(None);
    let command = "python3 -m pytest -q -p no:cacheprovider";
    let record = json!({ "command": command, "select": false, "coverage": true });
    engine.test(&repo, &first, record.clone()).await.outputs();
    // add changes (not recorded), then mul: the record predates the add change, which
    // test_adding executed, so test_adding is unknown and runs.
    repo.write("src/calc.py", &calc("b + a", "a * b"));
    repo.commit_all("add: b + a");
    repo.write("src/calc.py", &calc("b + a", "b * a"));
    let commit = repo.commit_all("mul: b * a");
    let selected = |out: &Value| out["selection"]["tests"].clone();
    let run = engine
        .test(
            &repo,
            &commit,
            json!({ "command": command, "coverage": false }),
        )
        .await;
    assert_eq!(
        selected(run.outputs()),
        json!(["tests/test_adding.py", "tests/test_multiplying.py"]),
        "{:#}",
        run.outputs()
    );
    // Recorded again at this commit: the next change to mul narrows.
    engine.test(&repo, &commit, record).await.outputs();
    repo.write("src/calc.py", &calc("b + a", "(b * a)"));
    let next = repo.commit_all("mul: parenthesised");
    let run = engine
        .test(
            &repo,
            &next,
            json!({ "command": command, "coverage": false }),
        )
        .await;
    assert_eq!(
        selected(run.outputs()),
        json!(["tests/test_multiplying.py"]),
        "{:#}",
        run.outputs()
    );
}
