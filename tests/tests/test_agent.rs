//! The test agent on a real Cargo workspace made by the test: change-based selection through
//! the crate graph, flaky detection by re-running failures, quarantine, and a real failure
//! failing the pipeline.

mod common_git;

use std::time::Duration;

use cairn_tests::Sandbox;
use common_git::Repo;
use serde_json::Value;

const WORKFLOW: &str = "name: tests\nsteps:\n  - id: test\n    agent: test_agent\n    with:\n      command: cargo test --workspace --offline\n      reruns: 2\n";

/// `core` ← `app` (app depends on core), and `other` alone. `app` has a test that fails on
/// every odd-numbered run of it (a counter file outside the checkout), a flaky test.
fn workspace(sandbox: &Sandbox) -> Repo {
    let repo = Repo::init(&sandbox.path("ws"));
    let counter = sandbox.path("flaky-counter");
    repo.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"core\", \"app\", \"other\"]\nresolver = \"2\"\n",
    );
    for (name, deps) in [
        ("core", ""),
        ("app", "core = { path = \"../core\" }\n"),
        ("other", ""),
    ] {
        repo.write(
            &format!("{name}/Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"),
        );
    }
    repo.write("core/src/lib.rs", "pub fn double(x: i32) -> i32 { x * 2 }\n#[cfg(test)]\nmod tests { #[test] fn doubles() { assert_eq!(super::double(2), 4); } }\n");
    repo.write(
        "app/src/lib.rs",
        format!(
            "pub fn quadruple(x: i32) -> i32 {{ core::double(core::double(x)) }}\n\
             #[cfg(test)]\nmod tests {{\n    #[test] fn quadruples() {{ assert_eq!(super::quadruple(1), 4); }}\n\
             #[test] fn sometimes() {{\n        let path = {counter:?};\n        let n: u32 = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);\n        std::fs::write(path, (n + 1).to_string()).unwrap();\n        assert!(n % 2 == 1, \"fails on even runs\");\n    }}\n}}\n"
        ),
    );
    repo.write(
        "other/src/lib.rs",
        "#[cfg(test)]\nmod tests { #[test] fn alone() {} }\n",
    );
    repo.write("README.md", "# ws\n");
    repo.commit_all("workspace");
    repo
}

fn run(sandbox: &Sandbox, repo: &Repo, commit: &str) -> (Option<i32>, Value) {
    let file = sandbox.write("tests.yaml", WORKFLOW);
    let output = sandbox.cairn_within(
        &[
            "run",
            file.to_str().unwrap_or_default(),
            "--repo",
            &repo.url(),
            "--commit",
            commit,
            "-q",
        ],
        Duration::from_secs(240),
    );
    let run_id = output.run_id();
    let status = sandbox.cairn(&["status", &run_id.to_string(), "--json"]);
    let document: Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}\n{status}"));
    let step = document["steps"][0].clone();
    eprintln!(
        "run {run_id}: exit {:?}, outputs {}",
        output.code, step["outputs"]
    );
    (output.code, step)
}

#[test]
fn selection_follows_the_crate_graph_and_flaky_tests_are_told_apart() {
    let sandbox = Sandbox::new();
    let repo = workspace(&sandbox);

    // A change in `core` selects core and app (which depends on it), not `other`.
    repo.write("core/src/lib.rs", "pub fn double(x: i32) -> i32 { x + x }\n#[cfg(test)]\nmod tests { #[test] fn doubles() { assert_eq!(super::double(2), 4); } }\n");
    let commit = repo.commit_all("core: add instead of multiply");
    let (code, step) = run(&sandbox, &repo, &commit);
    assert_eq!(code, Some(0), "{step}");
    let outputs = &step["outputs"];
    assert_eq!(
        outputs["selection"]["packages"],
        serde_json::json!(["app", "core"])
    );
    assert_eq!(outputs["selection"]["all"], false);
    // `sometimes` failed on its first run and passed on the re-run: flaky, not blocking.
    assert_eq!(
        outputs["flaky"],
        serde_json::json!(["app::tests::sometimes"]),
        "{outputs}"
    );
    assert_eq!(outputs["failed"], serde_json::json!([]));
    assert_eq!(outputs["tests_run"], 3, "core 1 + app 2, `other` not run");

    // A docs-only change can affect no test.
    let commit = repo.commit_file("README.md", "# ws\n\nmore words\n", "docs");
    let (code, step) = run(&sandbox, &repo, &commit);
    assert_eq!(code, Some(0));
    assert_eq!(step["outputs"]["tests_run"], 0);

    // The lockfile is something the crate graph cannot place: everything runs.
    let commit = repo.commit_file("Cargo.lock", "# placeholder lock\nversion = 3\n", "lock");
    let (_, step) = run(&sandbox, &repo, &commit);
    assert_eq!(step["outputs"]["selection"]["all"], true, "{step}");

    // A real failure fails the pipeline and names the test.
    repo.write("core/src/lib.rs", "pub fn double(x: i32) -> i32 { x * 3 }\n#[cfg(test)]\nmod tests { #[test] fn doubles() { assert_eq!(super::double(2), 4); } }\n");
    let commit = repo.commit_all("core: break it");
    let (code, step) = run(&sandbox, &repo, &commit);
    assert_eq!(code, Some(1));
    let error = step["error"].as_str().unwrap_or_default();
    assert!(error.contains("core::tests::doubles"), "{error}");

    let flaky = sandbox.cairn(&["tests", "flaky", "--json"]);
    let rows: Value =
        serde_json::from_str(&flaky.stdout).unwrap_or_else(|e| panic!("{e}\n{flaky}"));
    let names: Vec<&str> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["test"].as_str())
        .collect();
    assert!(names.contains(&"app::tests::sometimes"), "{flaky}");
}
