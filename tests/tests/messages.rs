//! Messages a person understands, tried as a new user would: what does not exist is named
//! (and is a mistake in the request: exit 2), a skipped step says why, tables line up and
//! show what a person looks for, and logs can be read by programs.

mod common_git;

use cairn_tests::Sandbox;
use common_git::Repo;

const EXIT_INVALID: i32 = 2;

#[test]
fn what_does_not_exist_is_named_and_exits_2() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write("w.yaml", "name: w\nsteps:\n  - id: a\n    run: 'true'\n");
    let run = sandbox.cairn(&["run", &workflow.display().to_string(), "-q"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("no --repo given"),
        "says there is no repository\n{run}"
    );

    for args in [
        vec!["status", "999"],
        vec!["logs", "999"],
        vec!["logs", "1", "nosuch"],
    ] {
        let output = sandbox.cairn(&args);
        assert_eq!(
            output.code,
            Some(EXIT_INVALID),
            "{}\n{output}",
            args.join(" ")
        );
        assert!(
            output.stderr.contains("no run with id 999")
                || output.stderr.contains("no step `nosuch`"),
            "{output}"
        );
    }

    let analyze = sandbox.cairn(&["analyze", "--repo", "/nope/missing", "--no-model"]);
    assert_eq!(analyze.code, Some(EXIT_INVALID), "{analyze}");
    assert!(
        analyze.stderr.contains("/nope/missing: no such directory"),
        "{analyze}"
    );
    assert!(!analyze.stderr.contains("failed to run git"), "{analyze}");

    let plain = sandbox.path("plain");
    std::fs::create_dir_all(&plain).expect("dir");
    let analyze = sandbox.cairn(&[
        "analyze",
        "--repo",
        &plain.display().to_string(),
        "--no-model",
    ]);
    assert_eq!(analyze.code, Some(EXIT_INVALID), "{analyze}");
    assert!(analyze.stderr.contains("not a git repository"), "{analyze}");

    let serve = sandbox.cairn(&["serve", "--once"]);
    assert_eq!(serve.code, Some(EXIT_INVALID), "{serve}");
    assert!(serve.stderr.contains("no ./workflows directory"), "{serve}");
    assert!(!serve.stderr.contains(":1:1:"), "{serve}");
}

#[test]
fn skipped_steps_say_why_and_tables_show_risk_and_branch() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.commit_file("docs/guide.md", "hello\n", "docs: a guide");
    let workflow = sandbox.write(
        "w.yaml",
        "name: w\nsteps:\n  - id: analyze\n    run: echo analyzing; echo risk=low > \"$CAIRN_OUTPUT\"\n  - id: deep\n    depends_on: analyze\n    when: risk >= high\n    run: echo deep\n",
    );
    let file = workflow.display().to_string();
    let validate = sandbox.cairn(&[
        "validate",
        &sandbox
            .write(
                "one.yaml",
                "name: one\nsteps:\n  - id: a\n    run: 'true'\n",
            )
            .display()
            .to_string(),
    ]);
    assert!(
        validate.stdout.contains("with 1 step\n") || validate.stdout.ends_with("with 1 step"),
        "{validate}"
    );
    assert!(!validate.stdout.contains("1 steps"), "{validate}");

    let run = sandbox.cairn(&["run", &file, "--repo", &repo.url(), "-q"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("(2 steps)"), "{run}");
    let id = run.run_id().to_string();

    let status = sandbox.cairn(&["status", &id]);
    assert_eq!(status.code, Some(0), "{status}");
    let deep = status
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("deep"))
        .unwrap_or_else(|| panic!("no line for `deep`\n{status}"));
    assert!(
        deep.contains("skipped") && deep.contains("`when: risk >= high` is false"),
        "{status}"
    );
    assert!(status.stdout.contains(&repo.url()), "{status}");
    assert!(status.stdout.contains("branch main"), "{status}");

    let logs = sandbox.cairn(&["logs", &id, "deep"]);
    assert_eq!(logs.code, Some(0), "{logs}");
    assert!(
        logs.stderr.contains("was skipped") && logs.stderr.contains("risk >= high"),
        "{logs}"
    );

    let runs = sandbox.cairn(&["runs"]);
    let mut lines = runs.stdout.lines();
    let header = lines.next().expect("a header");
    assert!(
        header.contains("RISK") && header.contains("BRANCH"),
        "{runs}"
    );
    let row = lines.next().expect("a row");
    assert!(row.contains("low") && row.contains("main"), "{runs}");
    let risk_column = header.find("RISK").expect("RISK");
    assert_eq!(
        row.get(risk_column..risk_column + 3),
        Some("low"),
        "columns line up\n{runs}"
    );

    let json = sandbox.cairn(&["logs", &id, "--json"]);
    assert_eq!(json.code, Some(0), "{json}");
    let parsed: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    assert!(!parsed.is_empty(), "{json}");
    assert!(
        parsed
            .iter()
            .all(|line| line["step_id"].is_string() && line["line"].is_string())
    );
}
