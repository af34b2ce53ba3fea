//! Fix suggestions on failure, on a real Python repository (pytest) whose commit breaks
//! `charge`: the test agent asks the model for a patch, and the gate tries it in a scratch
//! worktree with the real pytest. The fake OpenAI server answers `propose_fix` over a real
//! socket: a correct patch is accepted and delivered as `cairn/fix/<sha12>` and a patch file
//! that fix the commit; a patch that breaks another test, an answer that is not a patch and a
//! patch that edits the test are each rejected with that reason. The real local model's
//! proposal goes through the same gate from the design brief's pipeline form
//! (`on_failure: "Generate fix suggestions, retry once"`) and is recorded whatever it is.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

#[allow(dead_code)] // Each test binary uses part of the fake server.
mod support;
mod test_agent_support;

use std::process::Command;

use cairn_engine::store::RunState;
use serde_json::json;
use support::openai_server::{FakeOpenAi, Reply};
use test_agent_support::{Repo, TestEngine, python_has};

const PAY: &str = "def charge(amount):\n    return amount * 100\n\n\ndef refund(amount):\n    return -amount * 100\n";
const BROKEN_PAY: &str = "def charge(amount):\n    return amount * 10\n\n\ndef refund(amount):\n    return -amount * 100\n";
const TESTS: &str = "from src.pay import charge, refund\n\n\ndef test_charge():\n    assert charge(2) == 200\n\n\ndef test_refund():\n    assert refund(1) == -100\n";

const GOOD_PATCH: &str = "--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,2 +1,2 @@\n def charge(amount):\n-    return amount * 10\n+    return amount * 100\n";
/// Fixes `charge` and breaks `refund`.
const BREAKING_PATCH: &str = "--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,6 +1,6 @@\n def charge(amount):\n-    return amount * 10\n+    return amount * 100\n \n \n def refund(amount):\n-    return -amount * 100\n+    return -amount\n";
/// Makes the test pass by changing what it expects.
const TEST_EDIT: &str = "--- a/tests/test_pay.py\n+++ b/tests/test_pay.py\n@@ -4,2 +4,2 @@\n def test_charge():\n-    assert charge(2) == 200\n+    assert charge(2) == 20\n";

/// A repository whose second commit breaks `charge`; returns it and that commit.
fn broken_repo(dir: &std::path::Path) -> (Repo, String) {
    let repo = Repo::init(&dir.join("shop"));
    repo.write("src/__init__.py", "");
    repo.write("src/pay.py", PAY);
    repo.write("tests/test_pay.py", TESTS);
    repo.write(".gitignore", "__pycache__/\n");
    repo.commit_all("shop");
    repo.write("src/pay.py", BROKEN_PAY);
    let commit = repo.commit_all("pay: charge in tenths");
    (repo, commit)
}

/// The tested branch did not move and its work tree still holds the broken code: a fix is
/// only ever delivered beside it.
fn assert_tested_branch_untouched(repo: &Repo, commit: &str) {
    assert_eq!(
        repo.git(&["rev-parse", "main"]),
        commit,
        "main is never committed to"
    );
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(repo.path.join("src/pay.py")).unwrap(),
        BROKEN_PAY
    );
}

fn config(server: &FakeOpenAi) -> String {
    format!(
        "llm:\n  remote:\n    base_url: {}\n    model: fake-gpt\n    retries: 0\n  tasks:\n    propose_fix: remote\n",
        server.base_url()
    )
}

fn pytest_missing() -> bool {
    if python_has("pytest") {
        return false;
    }
    eprintln!("SKIPPED: pytest is not installed (scripts/setup.sh installs it)");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_fix_is_accepted_and_delivered_beside_the_tested_branch() {
    if pytest_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = broken_repo(dir.path());
    let sha12 = &commit[..12];
    let server = FakeOpenAi::start().await;
    // Prose and a fence around the diff, as models write it.
    server.script([Reply::Content(format!(
        "The change divides the price by ten. Fix:\n```diff\n{GOOD_PATCH}```\n"
    ))]);
    let engine = TestEngine::new(Some(&config(&server)));
    let with = json!({ "command": "python3 -m pytest -q", "coverage": false, "reruns": 1, "fix": true, "proposals": "both" });
    let run = engine.test(&repo, &commit, with).await;
    let log = run.logs.join("\n");
    assert_eq!(run.state, RunState::Failed, "the tests still failed: {log}");
    let error = run.step.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("1 test(s) failed: tests.test_pay::test_charge")
            && error.contains("a validated fix is suggested")
            && error.contains(&format!("branch cairn/fix/{sha12}")),
        "{error}\n{log}"
    );

    // The model was shown the failure, the test and the change.
    let received = server.received();
    assert_eq!(received.len(), 1, "one proposal (max_fixes: 1)");
    let prompt = received[0].contents().join("\n");
    for expected in [
        "tests.test_pay::test_charge",
        "assert 20 == 200",
        "def test_charge():",
        "File src/pay.py, lines 1-6:",
        "-    return amount * 100\n+    return amount * 10",
    ] {
        assert!(
            prompt.contains(expected),
            "missing {expected:?} in:\n{prompt}"
        );
    }

    // Recorded with its verdict.
    let records = engine.store.test_proposals(Some(&repo.url()), 10).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(
        (
            record.kind.as_str(),
            record.status.as_str(),
            record.reason.as_str(),
            record.tier.as_str()
        ),
        ("fix", "accepted", "accepted", "remote")
    );
    assert_eq!(record.function, "tests.test_pay::test_charge");
    assert_eq!(record.source_path, "src/pay.py");
    assert_eq!(record.test_path, "tests/test_pay.py");
    assert_eq!(
        record.code, GOOD_PATCH,
        "the cleaned patch, without the prose"
    );
    assert!(
        record
            .detail
            .contains("1 failing test(s) now pass and the 1 that passed still pass"),
        "{}",
        record.detail
    );

    // The branch: one commit on the tested one, in the repository under test; the tested
    // branch did not move and the work tree is untouched.
    let branch = format!("cairn/fix/{sha12}");
    assert_eq!(repo.git(&["rev-parse", &format!("{branch}^")]), commit);
    assert_tested_branch_untouched(&repo, &commit);
    assert_eq!(
        repo.git(&["diff", "--name-only", &commit, &branch]),
        "src/pay.py",
        "the fix touches the source only"
    );
    // It fixes the commit: the whole suite passes on the branch.
    let fixed = dir.path().join("fixed");
    repo.git(&[
        "worktree",
        "add",
        "--quiet",
        &fixed.to_string_lossy(),
        &branch,
    ]);
    let pytest = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&fixed)
        .output()
        .unwrap();
    assert!(
        pytest.status.success(),
        "{}",
        String::from_utf8_lossy(&pytest.stdout)
    );

    // The patch file says the same and applies to the commit.
    let patch = run
        .run_dir
        .join("test-proposals")
        .join(format!("fix-{sha12}.patch"));
    let text = std::fs::read_to_string(&patch).unwrap();
    assert!(text.contains("+    return amount * 100"), "{text}");
    repo.git(&["apply", "--check", &patch.to_string_lossy()]);
    // No scratch worktree is left behind in the run's checkout.
    let worktrees = Command::new("git")
        .args(["worktree", "list"])
        .current_dir(run.run_dir.join("src"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&worktrees.stdout).lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&worktrees.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fixes_are_rejected_each_with_its_reason() {
    if pytest_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = broken_repo(dir.path());
    let server = FakeOpenAi::start().await;
    server.script([
        Reply::Content(BREAKING_PATCH.into()),
        Reply::Content("The bug is in charge(): it should multiply by 100, not 10.".into()),
        Reply::Content(TEST_EDIT.into()),
    ]);
    let engine = TestEngine::new(Some(&config(&server)));
    let with = json!({ "command": "python3 -m pytest -q", "select": false, "coverage": false, "reruns": 1, "fix": true, "max_fixes": 3, "proposals": "both" });
    let run = engine.test(&repo, &commit, with).await;
    let log = run.logs.join("\n");
    assert_eq!(run.state, RunState::Failed);
    let error = run.step.error.clone().unwrap_or_default();
    assert!(
        error.ends_with("; no fix accepted (rejected: breaks_tests, not_a_patch, edits_tests)"),
        "{error}\n{log}"
    );
    assert_eq!(
        server.received().len(),
        3,
        "max_fixes proposals, none accepted"
    );
    // Each retry tells the model why the one before was rejected.
    let second = server.received()[1].contents().join("\n");
    assert!(
        second.contains("An earlier fix was rejected: breaks_tests"),
        "{second}"
    );

    let mut records = engine.store.test_proposals(Some(&repo.url()), 10).unwrap();
    records.reverse();
    let reasons: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r.kind.as_str(), r.status.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("fix", "rejected", "breaks_tests"),
            ("fix", "rejected", "not_a_patch"),
            ("fix", "rejected", "edits_tests")
        ]
    );
    assert!(
        records[0].detail.starts_with(
            "fixes tests.test_pay::test_charge but breaks 1 test(s) that passed: tests.test_pay::test_refund"
        ),
        "{}",
        records[0].detail
    );
    assert!(
        records[1].code.starts_with("The bug is in charge()"),
        "the answer is kept as evidence"
    );
    assert!(
        records[2]
            .detail
            .contains("`tests/test_pay.py` is a test, test support"),
        "{}",
        records[2].detail
    );
    assert!(log.contains("fix: the patch applies (src/pay.py)"), "{log}");

    // Nothing delivered; nothing moved.
    let branches = repo.git(&["branch", "--list", "cairn/*"]);
    assert_eq!(branches, "", "no branch for a rejected fix");
    assert!(
        !run.run_dir
            .join("test-proposals")
            .join(format!("fix-{}.patch", &commit[..12]))
            .exists()
    );
    assert_eq!(repo.git(&["rev-parse", "main"]), commit);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");

    // `cairn tests proposals` lists the fixes with their decision and reason.
    let listing = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--home",
            &engine.home.path().to_string_lossy(),
            "tests",
            "proposals",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    for reason in ["breaks_tests", "not_a_patch", "edits_tests"] {
        let row = stdout
            .lines()
            .find(|l| l.contains(reason))
            .unwrap_or_else(|| panic!("{reason}: {stdout}"));
        assert!(
            row.contains(" fix ")
                && row.contains("rejected")
                && row.contains("failing tests.test_pay::test_charge"),
            "{stdout}"
        );
    }
}

/// SmolLM2-135M rarely writes a diff that applies; whatever it writes, the design brief's
/// pipeline runs to its end (the retry included), the verdict is recorded with its reason, and
/// nothing lands on the tested branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_models_fix_is_gated_and_recorded_whatever_it_is() {
    if pytest_missing() {
        return;
    }
    if let Err(error) = cairn_models::default_model_path() {
        eprintln!("SKIPPED: no local model ({error}); scripts/fetch-model.sh provides it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = broken_repo(dir.path());
    let engine = TestEngine::with_local_model();
    let pipeline = "pipeline:\n  stages:\n    - name: test\n      agent: test_agent\n      with: { command: \"python3 -m pytest -q\", coverage: false, reruns: 1, proposals: both }\n      on_failure: \"Generate fix suggestions, retry once\"\n";
    let run = engine.run_definition(&repo, &commit, pipeline).await;
    let log = run.logs.join("\n");
    assert_eq!(run.state, RunState::Failed, "{log}");
    assert_eq!(run.step.attempts, 2, "retried once: {log}");
    assert!(
        log.contains("fix: an earlier attempt of this step proposed 1 fix(es); not asking again"),
        "{log}"
    );
    let records = engine.store.test_proposals(Some(&repo.url()), 10).unwrap();
    assert_eq!(records.len(), 1, "{log}");
    let record = &records[0];
    eprintln!(
        "local model's fix: {} ({}): {}\n{}",
        record.status, record.reason, record.detail, record.code
    );
    let reasons = [
        "accepted",
        "no_answer",
        "not_a_patch",
        "partial_patch",
        "malformed_patch",
        "outside_repo",
        "edits_tests",
        "unsupported_change",
        "no_change",
        "does_not_apply",
        "build_error",
        "still_fails",
        "breaks_tests",
        "timed_out",
    ];
    assert_eq!(record.kind, "fix");
    assert!(reasons.contains(&record.reason.as_str()), "{record:?}");
    assert_eq!(record.status == "accepted", record.reason == "accepted");
    assert!(
        !record.detail.is_empty(),
        "a verdict carries its evidence: {record:?}"
    );
    assert_eq!(record.function, "tests.test_pay::test_charge");
    assert_tested_branch_untouched(&repo, &commit);
}
