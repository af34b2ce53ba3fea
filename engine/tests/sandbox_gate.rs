//! The generation gate in the real sandbox (bubblewrap, policy `required`): a proposed test
//! that reads Cairn's state database or a key file beside it fails on the new commit and is
//! rejected, while an honest proposal for another function is accepted; the repository's own
//! suite runs sandboxed too. Its own test binary, since the sandbox is process-wide.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

#[allow(dead_code)] // Each test binary uses part of the fake server.
mod support;
mod test_agent_support;

use cairn_engine::exec::sandbox::{self, Sandbox};
use cairn_engine::pipeline::{SandboxPolicy, SandboxSettings};
use serde_json::json;
use support::openai_server::{FakeOpenAi, Reply};
use test_agent_support::{PYTHON_RUNNER, Repo, TestEngine};

fn answer(test_name: &str, code: &str) -> Reply {
    Reply::Content(json!({ "test_name": test_name, "code": code }).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_that_reads_cairns_state_is_rejected_by_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("shop"));
    repo.write("run_tests.py", PYTHON_RUNNER);
    repo.write(
        "src/pay.py",
        "def charge(amount):\n    return amount * 100\n\n\ndef refund(amount):\n    return -amount\n",
    );
    repo.write(
        "tests/test_basics.py",
        "def test_nothing_yet():\n    assert True\n",
    );
    repo.commit_all("shop");
    repo.write(
        "src/pay.py",
        "def charge(amount):\n    return amount * 100 + 30\n\n\ndef refund(amount):\n    return -amount * 2\n",
    );
    let commit = repo.commit_all("pay: a fee, a double refund");

    let server = FakeOpenAi::start().await;
    let config = format!(
        "llm:\n  remote:\n    base_url: {}\n    model: fake-gpt\n    retries: 0\n  tasks:\n    propose_tests: remote\n",
        server.base_url()
    );
    let engine = TestEngine::new(Some(&config));
    let home = engine.home.path().to_path_buf();
    std::fs::write(home.join("secrets.key"), "key-material").unwrap();
    let settings = SandboxSettings {
        policy: Some(SandboxPolicy::Required),
        ..SandboxSettings::default()
    };
    let chosen = Sandbox::detect(&settings, None, &home);
    assert!(
        chosen.mechanism.is_available(),
        "this machine must have a sandbox (scripts/setup.sh installs bubblewrap): {}",
        chosen.mechanism.describe()
    );
    sandbox::install(chosen);

    let db = home.join("cairn.db").display().to_string();
    let key = home.join("secrets.key").display().to_string();
    server.script([
        // charge: would pass on the new commit and fail on the parent, if it could read.
        answer(
            "test_charge_adds_fee",
            &format!(
                "from src.pay import charge\n\ndef test_charge_adds_fee():\n    open({db:?}, 'rb').read(16)\n    open({key:?}).read()\n    assert charge(1) == 130\n"
            ),
        ),
        // refund: honest.
        answer(
            "test_refund_doubles",
            "from src.pay import refund\n\ndef test_refund_doubles():\n    assert refund(2) == -4\n",
        ),
    ]);
    let with = json!({ "command": "python3 run_tests.py {tests}", "format": "junit", "junit": "report.xml", "select": false, "coverage": false, "generate": true });
    let run = engine.test(&repo, &commit, with).await;
    let out = run.outputs();
    let log = run.logs.join("\n");
    let generated = &out["generated"];
    let accepted: Vec<&str> = generated["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["function"].as_str())
        .collect();
    assert_eq!(accepted, ["refund"], "{generated:#}\n{log}");
    let rejected: Vec<(&str, &str)> = generated["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["function"].as_str()?, r["reason"].as_str()?)))
        .collect();
    assert_eq!(rejected, [("charge", "fails_on_new")], "{generated:#}");
    let records = engine.store.test_proposals(Some(&repo.url()), 10).unwrap();
    let charge = records.iter().find(|r| r.function == "charge").unwrap();
    assert!(
        charge.detail.contains("No such file or directory"),
        "the evidence shows the denied read: {}",
        charge.detail
    );
}
