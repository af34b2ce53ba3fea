//! Secrets end to end with the real `cairn` binary: `cairn secret set` seals a value in the
//! store, a run's steps receive it (`${{ secrets.NAME }}` in `run:`, a whole `env:` value,
//! `secrets:`), and afterwards the value — and its base64, hex and URL encodings — appears in
//! none of: the step logs, the SQLite database file and its WAL, and the prompts a stand-in
//! OpenAI-compatible server received while the orchestrator judged a commit that contains
//! the value.

mod common_git;
mod common_remote;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use cairn_tests::Sandbox;
use common_git::Repo;
use common_remote::{FakeRemote, Mode};

/// Plain words: nothing about it looks like a credential, so only knowing it finds it.
const SECRET: &str = "correct horse battery staple";

fn encodings(value: &str) -> Vec<(&'static str, String)> {
    let standard = base64::engine::general_purpose::STANDARD;
    vec![
        ("plain", value.to_owned()),
        (
            "base64",
            standard.encode(value).trim_end_matches('=').to_owned(),
        ),
        (
            "base64 of the value and a newline",
            standard
                .encode(format!("{value}\n"))
                .trim_end_matches('=')
                .to_owned(),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
        ),
        ("hex", hex(value.as_bytes())),
        ("HEX", hex(value.as_bytes()).to_uppercase()),
        ("url-encoded", value.replace(' ', "%20")),
        ("form-encoded", value.replace(' ', "+")),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn sha256_hex(text: &str) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

#[test]
fn a_secret_reaches_its_step_and_nothing_else() {
    let remote = FakeRemote::start(Mode::Answer, 4, Duration::from_millis(10));
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!(
            "llm:\n  remote:\n    base_url: {}\n    model: fake\n    retries: 0\n  tasks:\n    assess_risk: remote\n  local:\n    model: {}\n",
            remote.base_url(),
            sandbox.path("no-model.gguf").display()
        ),
    )
    .expect("config");

    sandbox.set_secret("DEPLOY_TOKEN", SECRET);
    let listed = sandbox.cairn(&["secret", "list"]);
    assert!(listed.stdout.starts_with("DEPLOY_TOKEN\t"), "{listed}");
    assert!(!listed.stdout.contains(SECRET), "{listed}");

    // A commit that carries the value in plain sight, for the orchestrator to send a model.
    let repo = Repo::init(&sandbox.path("app"));
    repo.commit_file(
        "src/app.py",
        "def handle(request):\n    return 200\n",
        "initial",
    );
    repo.commit_file(
        "src/app.py",
        &format!("GREETING = \"{SECRET}\"\n\ndef handle(request):\n    if request.path == '/admin':\n        return 403\n    return 200\n"),
        "greet and guard the admin page",
    );

    let digest = sha256_hex(SECRET);
    let workflow = format!(
        r#"name: secrets
steps:
  - id: analyze
    agent: orchestrator
  - id: deploy
    depends_on: analyze
    env:
      ALIAS: ${{{{ secrets.DEPLOY_TOKEN }}}}
    run: |
      [ "$(printf %s "${{{{ secrets.DEPLOY_TOKEN }}}}" | sha256sum | cut -d' ' -f1)" = "{digest}" ] || exit 7
      [ "$ALIAS" = "$DEPLOY_TOKEN" ] || exit 8
      echo "the token is ${{{{ secrets.DEPLOY_TOKEN }}}}"
      printf %s "$DEPLOY_TOKEN" | base64
      echo "$DEPLOY_TOKEN" | base64
      printf %s "$DEPLOY_TOKEN" | od -An -tx1 | tr -d ' \n'; echo
      echo "leak=$DEPLOY_TOKEN" >> "$CAIRN_OUTPUT"
      echo "received the token"
  - id: listed
    depends_on: deploy
    secrets: [DEPLOY_TOKEN]
    run: |
      echo "$DEPLOY_TOKEN" >&2
      exit 3
    on_failure: continue
"#
    );
    let file = sandbox.write("secrets.yaml", &workflow);
    let run = sandbox.cairn_within(
        &[
            "run",
            file.to_str().expect("utf-8 path"),
            "--repo",
            &repo.url(),
        ],
        Duration::from_secs(180),
    );
    assert_eq!(run.code, Some(0), "{run}");
    let run_id = run.run_id();
    let logs = sandbox.cairn(&["logs", &run_id.to_string()]);
    assert_eq!(logs.code, Some(0), "{logs}");
    assert!(
        logs.stdout.contains("received the token"),
        "the step got the value:\n{logs}"
    );
    assert!(logs.stdout.contains("the token is ***"), "{logs}");
    let outputs: String = sandbox
        .db()
        .query_row(
            "SELECT outputs FROM steps WHERE run_id = ?1 AND step_id = 'deploy'",
            [run_id],
            |row| row.get(0),
        )
        .expect("deploy outputs");
    assert!(outputs.contains("\"leak\":\"***\""), "{outputs}");
    assert!(
        remote.requests() > 0,
        "the orchestrator asked the stand-in model"
    );

    let database = std::fs::read(sandbox.db_path()).expect("the database file");
    let wal = std::fs::read(sandbox.home().join("cairn.db-wal")).unwrap_or_default();
    let bodies = remote.bodies().join("\n");
    let printed = format!(
        "{}\n{}\n{}\n{}",
        run.stdout, run.stderr, logs.stdout, logs.stderr
    );
    for (form, text) in encodings(SECRET) {
        assert!(
            !contains(printed.as_bytes(), &text),
            "the {form} form is in the logs:\n{printed}"
        );
        assert!(
            !contains(&database, &text),
            "the {form} form is in the database file"
        );
        assert!(!contains(&wal, &text), "the {form} form is in the WAL");
        assert!(
            !contains(bodies.as_bytes(), &text),
            "the {form} form reached the model:\n{bodies}"
        );
    }

    // A step asking for a secret that is not set fails saying so; nothing else leaks.
    let missing = sandbox.write(
        "missing.yaml",
        "name: missing\nsteps:\n  - id: a\n    run: echo \"${{ secrets.NOT_SET }}\"\n",
    );
    let run = sandbox.cairn(&["run", missing.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, Some(1), "{run}");
    let status = sandbox.cairn(&["status", &run.run_id().to_string()]);
    assert!(
        format!("{status}").contains("secret `NOT_SET` is not set"),
        "{status}"
    );
}
