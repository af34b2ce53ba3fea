//! No secret leaves the machine: a corpus of 150+ generated secrets in the syntaxes real
//! repositories hold them in (`support/secret_corpus.rs`), placed in a commit the way they turn
//! up (added, removed and context lines, whole added and deleted files, the commit message),
//! sent through the router to a capture server speaking the OpenAI wire format on 127.0.0.1.
//! Every request body, raw and JSON-decoded, is searched for every form of every secret.
//!
//! The diff goes both as the router's `diff` (which the remote sees minimized) and whole in
//! the request's input (which is not minimized), so redaction alone is proven on whole files
//! and every context line, not only what minimization happens to drop. A redaction pattern
//! that does not compile stops every remote call (fail closed).

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

mod support;

use std::collections::BTreeMap;

use cairn_engine::llm::{Request, Router, Settings, Task, Tier};
use cairn_engine::store::Store;
use serde_json::json;
use support::openai_server::{FakeOpenAi, Reply};
use support::secret_corpus::{self, ORDINARY, Place};

const INSTRUCTION: &str =
    "You assess how risky it is to deploy a code change. Answer only with JSON.";

fn router(server: &FakeOpenAi, home: &std::path::Path) -> Router {
    let yaml = format!(
        "llm:\n  remote:\n    base_url: {}\n    model: fake-gpt\n    retries: 0\n  tasks:\n    assess_risk: remote\n  local:\n    model: {}\n",
        server.base_url(),
        home.join("absent.gguf").display()
    );
    let settings = Settings::parse("cairn.yaml", &yaml).unwrap();
    let store = Store::open(&home.join("cairn.db")).unwrap();
    Router::new(settings, store).unwrap()
}

/// Everything the server received, as text: raw bodies and the decoded message contents (a
/// secret holding `"` or `\\` would be escaped in the raw body).
fn sent(server: &FakeOpenAi) -> Vec<String> {
    server
        .received()
        .iter()
        .flat_map(|r| {
            let mut texts = vec![String::from_utf8_lossy(&r.body).into_owned()];
            texts.extend(r.contents());
            texts
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_the_corpus_reaches_the_capture_server() {
    let corpus = secret_corpus::corpus();
    let (diff, message) = secret_corpus::commit_text(&corpus);
    assert!(
        corpus.len() >= 150,
        "only {} secrets in the corpus",
        corpus.len()
    );
    let server = FakeOpenAi::start().await;
    // The first answer breaks the schema, so the repair request (the conversation again, plus
    // the answer) is searched too.
    server.script([Reply::BreaksSchema]);
    let home = tempfile::tempdir().unwrap();
    let router = router(&server, home.path());
    let request = Request {
        task: Task::AssessRisk,
        instruction: INSTRUCTION.into(),
        input: format!("{message}\nThe whole change, unminimized:\n{diff}"),
        diff: Some(diff.clone()),
    };
    let answer = router.ask(None, request, || json!(null)).await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    assert_eq!(server.request_count(), 2);

    let sent = sent(&server);
    let leaked = secret_corpus::leaks(&corpus, &sent);
    let mut classes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for seeded in &corpus {
        classes.entry(seeded.class).or_default().0 += 1;
    }
    for (seeded, _) in &leaked {
        classes.entry(seeded.class).or_default().1 += 1;
    }
    let places = [
        Place::Added,
        Place::Removed,
        Place::Context,
        Place::NewFile,
        Place::DeletedFile,
        Place::Message,
    ]
    .map(|place| (place, corpus.iter().filter(|s| s.place == place).count()));
    println!(
        "redaction corpus: {} secrets in {} classes, placed {places:?}; {} reached the server",
        corpus.len(),
        classes.len(),
        leaked.len()
    );
    for (class, (count, leaks)) in &classes {
        println!("  {class:<36} {count:>3} seeded, {leaks} leaked");
    }
    assert!(
        leaked.is_empty(),
        "secrets reached the server:\n{}",
        leaked
            .iter()
            .map(|(s, form)| format!("{} ({:?} in {}): `{form}`", s.class, s.place, s.file))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Redaction that blanked everything would pass the search above: the change must still
    // be readable.
    let first = &sent[0];
    let contents = server.received()[0].contents().join("\n");
    for line in ORDINARY {
        let near: Vec<&str> = contents
            .lines()
            .skip_while(|l| !l.contains(ORDINARY[0]))
            .take(4)
            .collect();
        assert!(
            contents.contains(line),
            "`{line}` did not reach the remote: {near:#?}"
        );
    }
    for file in [
        "src/integrations.py",
        "Dockerfile",
        "k8s/secret.yaml",
        "config/app.xml",
    ] {
        assert!(first.contains(file), "{file} is not named in what was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_sees_changed_lines_and_summaries_not_whole_files() {
    let corpus = secret_corpus::corpus();
    let (diff, _) = secret_corpus::commit_text(&corpus);
    let server = FakeOpenAi::start().await;
    let home = tempfile::tempdir().unwrap();
    let router = router(&server, home.path());
    let request = Request {
        task: Task::AssessRisk,
        instruction: INSTRUCTION.into(),
        input: "Commit subject: configuration".into(),
        diff: Some(diff.clone()),
    };
    let answer = router.ask(None, request, || json!(null)).await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    let contents = server.received()[0].contents().join("\n");
    // Whole added and deleted files are named with their size, never shown.
    for file in [
        ".env.production",
        "config/secrets.yml",
        "deploy/keys/rsa.pem",
    ] {
        assert!(
            contents.contains(&format!("new file {file} (+")),
            "{file} not summarized:\n{contents}"
        );
    }
    assert!(
        contents.contains("deleted file config/credentials.json (-"),
        "{contents}"
    );
    assert!(
        !contents.contains("service_account"),
        "a deleted file's content was sent"
    );
    assert!(
        !contents.contains("BEGIN RSA PRIVATE KEY-----\n"),
        "a new file's content was sent"
    );
    // No `index` lines (object ids) and far less text than the diff.
    assert!(!contents.contains("\nindex "), "{contents}");
    println!(
        "least context: diff of {} bytes, sent {} bytes",
        diff.len(),
        contents.len()
    );
    assert!(
        contents.len() < diff.len(),
        "more was sent than the whole diff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_pattern_that_does_not_compile_stops_every_remote_call() {
    let server = FakeOpenAi::start().await;
    let home = tempfile::tempdir().unwrap();
    // A user pattern with an unclosed group: the rule set is incomplete, so nothing may go.
    let yaml = format!(
        "llm:\n  remote:\n    base_url: {}\n    model: fake-gpt\n    retries: 0\n  redact:\n    patterns: ['ACME-(\\d+']\n  tasks:\n    assess_risk: remote\n  local:\n    model: {}\n",
        server.base_url(),
        home.path().join("absent.gguf").display()
    );
    let settings = Settings::parse("cairn.yaml", &yaml).unwrap();
    let router = Router::new(
        settings,
        Store::open(&home.path().join("cairn.db")).unwrap(),
    )
    .expect("a bad pattern disables the remote tier, not the router");
    for subject in ["first", "second"] {
        let request = Request {
            task: Task::AssessRisk,
            instruction: INSTRUCTION.into(),
            input: format!("Commit subject: {subject}\nDB_PASSWORD=hunter2-{subject}"),
            diff: None,
        };
        let answer = router.ask(None, request, || json!(null)).await;
        println!("fail closed: {:?}", answer.fallbacks);
        assert_eq!(answer.tier, Tier::Rules, "{answer:?}");
        assert!(
            answer.fallbacks[0].contains("does not compile")
                && answer.fallbacks[0].contains("nothing is sent"),
            "{:?}",
            answer.fallbacks
        );
    }
    assert_eq!(server.connection_count(), 0, "a socket was opened");
    assert_eq!(server.request_count(), 0);
}
