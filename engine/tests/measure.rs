//! `cairn tests measure` end to end on a tiny Rust repository the test writes, with real git
//! commits and real cargo builds: a module change is measured by mutation (the fault is
//! revealed and every revealing test was selected), a docs change selects nothing, a manifest
//! change selects everything, and the repository itself is left untouched.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn commit(dir: &Path, path: &str, text: &str, message: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(file, text).expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", message]);
}

/// `cairn tests measure --repo REPO --json --command "cargo test --offline" ARGS`, with its
/// scratch directory and home in `sandbox`; the report, after checking it succeeded.
fn measure(sandbox: &Path, repo: &Path, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["tests", "measure", "--repo"])
        .arg(repo)
        .args(args)
        .args(["--json", "--command", "cargo test --offline", "--scratch"])
        .arg(sandbox.join("scratch"))
        .env("CAIRN_HOME", sandbox.join("home"))
        .output()
        .expect("cairn runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

const MANIFEST: &str =
    "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n";
const MATH: &str = "pub fn double(x: i32) -> i32 {\n    x * 2\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n";

#[test]
fn measure_reports_fraction_and_safety_per_commit() {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let repo = sandbox.path().join("tiny");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("Cargo.toml"), MANIFEST).expect("write");
    std::fs::write(repo.join("README.md"), "# tiny\n").expect("write");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    std::fs::write(repo.join("src/lib.rs"), "pub mod math;\npub mod text;\n").expect("write");
    std::fs::write(repo.join("src/math.rs"), MATH).expect("write");
    std::fs::write(
        repo.join("src/text.rs"),
        "pub fn shout(s: &str) -> String {\n    s.to_uppercase()\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn shouts() {\n        assert_eq!(super::shout(\"a\"), \"A\");\n    }\n}\n",
    )
    .expect("write");
    commit(
        &repo,
        "tests/loud.rs",
        "#[test]\nfn loud() {\n    assert_eq!(tiny::text::shout(\"b\"), \"B\");\n}\n",
        "tiny crate",
    );
    commit(
        &repo,
        "src/math.rs",
        &MATH.replace("x * 2", "x + x"),
        "math: add instead of multiply",
    );
    commit(&repo, "README.md", "# tiny\n\nA crate.\n", "docs");
    commit(
        &repo,
        "Cargo.toml",
        &format!("{MANIFEST}\n[features]\nextra = []\n"),
        "a feature",
    );
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let status = git(&repo, &["status", "--porcelain"]);

    let report = measure(sandbox.path(), &repo, &["--commits", "3"]);
    let commits = report["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 3, "{report:#}");

    // The math change: only math's tests are selected (1 of 3), and the fault planted in
    // `double` is revealed by `math::tests::doubles`, which the selection kept.
    let math = &commits[0];
    assert_eq!(math["subject"], "math: add instead of multiply");
    assert_eq!(
        (math["selected"].as_u64(), math["total"].as_u64()),
        (Some(1), Some(3)),
        "{math:#}"
    );
    assert_eq!(
        math["mutants"].as_array().map(Vec::len),
        Some(1),
        "{math:#}"
    );
    assert_eq!(
        math["revealing"],
        serde_json::json!(["tiny lib::math::tests::doubles"]),
        "{math:#}"
    );
    assert_eq!(math["missed"], serde_json::json!([]));

    // Docs: nothing selected, nothing to mutate.
    assert_eq!(commits[1]["fraction"], 0.0, "{:#}", commits[1]);
    assert!(
        commits[1]["safety_skipped"]
            .as_str()
            .is_some_and(|s| s.contains("no Rust function"))
    );
    // The manifest: everything.
    assert_eq!(commits[2]["selection_all"], true);
    assert_eq!(commits[2]["fraction"], 1.0);

    let summary = &report["summary"];
    assert_eq!(summary["kept_percent"], 100.0, "{summary:#}");
    assert_eq!(summary["revealing"], 1);
    let average = summary["average_fraction"].as_f64().expect("an average");
    assert!(
        (average - (1.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-9,
        "{average}"
    );

    // The measured repository is untouched.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&repo, &["status", "--porcelain"]), status);
    assert!(
        !repo.join("target").exists(),
        "builds happen in the scratch directory only"
    );
}

/// A fault that aborts the test process (a panic while a guard's `Drop` runs during
/// unwinding) takes every test of its binary down with it; those that never met the fault
/// must not count as fault-revealing (and so as missed when not selected): they are re-run
/// one at a time, and only the one that really dies with the fault counts.
#[test]
fn a_binary_aborted_by_a_fault_counts_only_the_tests_that_fail_on_their_own() {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let repo = sandbox.path().join("tiny");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("Cargo.toml"), MANIFEST).expect("write");
    std::fs::write(repo.join("src/lib.rs"), "pub mod math;\npub mod text;\n").expect("write");
    // Aborts when `double` panics: the guard's drop panics again while unwinding.
    let math = |body: &str| {
        format!(
            "pub fn double(x: i32) -> i32 {{\n    {body}\n}}\n\n#[cfg(test)]\nmod tests {{\n    struct Bomb;\n    impl Drop for Bomb {{\n        fn drop(&mut self) {{\n            if std::thread::panicking() {{\n                std::process::abort();\n            }}\n        }}\n    }}\n\n    #[test]\n    fn doubles_or_aborts() {{\n        let _bomb = Bomb;\n        assert_eq!(super::double(2), 4);\n    }}\n}}\n"
        )
    };
    std::fs::write(repo.join("src/math.rs"), math("x * 2")).expect("write");
    // Tests of another module that run after the abort (libtest runs them by name): with
    // the whole binary gone they report nothing.
    let mut text = String::from(
        "pub fn shout(s: &str) -> String {\n    s.to_uppercase()\n}\n\n#[cfg(test)]\nmod tests {\n",
    );
    for index in 0..6 {
        text.push_str(&format!(
            "    #[test]\n    fn shouts_{index}() {{\n        assert_eq!(super::shout(\"a\"), \"A\");\n    }}\n"
        ));
    }
    text.push_str("}\n");
    std::fs::write(repo.join("src/text.rs"), text).expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "tiny crate"]);
    commit(&repo, "src/math.rs", &math("x + x"), "math: add");

    let report = measure(sandbox.path(), &repo, &["--commits", "1"]);
    let measured = &report["commits"][0];
    assert_eq!(
        (measured["selected"].as_u64(), measured["total"].as_u64()),
        (Some(1), Some(7)),
        "{measured:#}"
    );
    assert_eq!(
        measured["revealing"],
        serde_json::json!(["tiny lib::math::tests::doubles_or_aborts"]),
        "{measured:#}"
    );
    assert_eq!(measured["missed"], serde_json::json!([]), "{measured:#}");
    assert_eq!(report["summary"]["kept_percent"], 100.0);
}

const CALC: &str = "const FACTOR: i32 = 1;\n\npub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\npub fn mul(a: i32, b: i32) -> i32 {\n    a * b * FACTOR\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 3), 5);\n    }\n\n    #[test]\n    fn muls() {\n        assert_eq!(super::mul(2, 3), 6);\n    }\n\n    #[test]\n    fn both() {\n        assert_eq!(super::add(1, super::mul(2, 2)), 5);\n    }\n}\n";

/// Per-test coverage of a Cargo suite (`--per-test-coverage`): where the module graph can
/// only say "the `calc` module changed", each test's own coverage, recorded at the parent
/// under `-C instrument-coverage`, leaves out the tests that never executed the changed
/// function; a record stays until something its test executed changes (only those tests are
/// recorded again), a new test is unknown and runs, and a changed `const` reaches the tests
/// that executed a function naming it. Every fault-revealing test is kept.
#[test]
fn per_test_coverage_leaves_out_the_tests_that_never_ran_a_changed_function() {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let repo = sandbox.path().join("tiny");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("Cargo.toml"), MANIFEST).expect("write");
    std::fs::write(repo.join("src/lib.rs"), "pub mod calc;\n").expect("write");
    std::fs::write(repo.join("src/calc.rs"), CALC).expect("write");
    commit(
        &repo,
        "tests/api.rs",
        "#[test]\nfn api_mul() {\n    assert_eq!(tiny::calc::mul(3, 3), 9);\n}\n",
        "tiny crate",
    );
    let add_changed = CALC.replace("    a + b\n", "    b + a\n");
    commit(
        &repo,
        "src/calc.rs",
        &add_changed,
        "calc: add the other way",
    );
    let mul_changed = add_changed
        .replace("    a * b * FACTOR\n", "    b * a * FACTOR\n")
        .replace(
            "    #[test]\n    fn both()",
            "    #[test]\n    fn muls_zero() {\n        assert_eq!(super::mul(0, 3), 0);\n    }\n\n    #[test]\n    fn both()",
        );
    commit(
        &repo,
        "src/calc.rs",
        &mul_changed,
        "calc: mul the other way, and a test",
    );
    commit(
        &repo,
        "src/calc.rs",
        &mul_changed.replace("FACTOR: i32 = 1", "FACTOR: i32 = 1 * 1"),
        "calc: a const",
    );

    let report = measure(
        sandbox.path(),
        &repo,
        &["--commits", "3", "--per-test-coverage"],
    );
    let commits = report["commits"].as_array().expect("commits");
    let selected = |c: &Value| (c["selected"].as_u64(), c["total"].as_u64());
    let notes = |c: &Value| c["notes"].to_string();

    // `add` changed: `adds` and `both` executed it; `muls` and the integration test did not.
    let add = &commits[0];
    assert_eq!(selected(add), (Some(2), Some(4)), "{add:#}");
    assert!(notes(add).contains("recorded for 4 tests"), "{add:#}");
    let mut revealing: Vec<&str> = add["revealing"]
        .as_array()
        .expect("revealing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    revealing.sort_unstable();
    assert_eq!(
        revealing,
        ["tiny lib::calc::tests::adds", "tiny lib::calc::tests::both"],
        "{add:#}"
    );

    // `mul` changed and a test added: only the two records that executed `add` were out of
    // date; `adds` never ran `mul`; the new test is unknown and runs.
    let mul = &commits[1];
    assert_eq!(selected(mul), (Some(4), Some(5)), "{mul:#}");
    assert!(notes(mul).contains("recorded for 2 tests"), "{mul:#}");

    // A const reaches what names it: `mul`, so every test that executed `mul` runs (the
    // new one among them) and `adds`, which never did, is left out.
    let constant = &commits[2];
    assert_eq!(selected(constant), (Some(4), Some(5)), "{constant:#}");
    assert!(
        notes(constant).contains("through 1 names (FACTOR)"),
        "{constant:#}"
    );

    for commit in commits {
        assert_eq!(commit["missed"], serde_json::json!([]), "{commit:#}");
    }
    assert_eq!(report["summary"]["kept_percent"], 100.0, "{report:#}");
}
