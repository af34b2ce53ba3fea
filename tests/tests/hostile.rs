//! Hostile workflow and configuration files through the real binary: nesting deep enough to
//! overflow a recursive walker, files too large to read, huge but honest workflows (which must
//! validate in linear time), a second YAML document, a cron that never fires, NUL characters,
//! and configuration mistakes that must be reported where they are, before anything runs.

use cairn_tests::{Output, Sandbox};

const EXIT_INVALID: i32 = 2;

fn assert_invalid(output: &Output, expected: &str) {
    assert_eq!(output.code, Some(EXIT_INVALID), "{output}");
    assert!(
        output.stderr.contains(expected),
        "expected `{expected}`\n{output}"
    );
    assert!(!output.stderr.contains("panicked"), "{output}");
    assert!(!output.stderr.contains("overflow"), "{output}");
}

#[test]
fn deep_nesting_is_an_error_in_validate_run_and_serve() {
    let sandbox = Sandbox::new();
    let depth = 30_000;
    let flow = format!(
        "name: deep\nsteps:\n  - id: a\n    agent: noop\n    with: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let block: String = (0..1_000)
        .map(|level| format!("{}- \n", " ".repeat(level)))
        .collect();
    let flow_path = sandbox.write("flow.yaml", &flow);
    let block_path = sandbox.write("block.yaml", &format!("name: deep\nsteps:\n{block}"));
    for path in [&flow_path, &block_path] {
        let file = path.display().to_string();
        assert_invalid(&sandbox.cairn(&["validate", &file]), "nested more than");
        let run = sandbox.cairn(&["run", &file, "-q"]);
        assert_invalid(&run, "nested more than");
        assert!(run.stdout.is_empty(), "no run starts\n{run}");
    }
    // One such file among good ones must not take `serve` down.
    std::fs::create_dir_all(sandbox.path("workflows")).expect("workflows dir");
    std::fs::copy(&flow_path, sandbox.path("workflows/deep.yaml")).expect("copy");
    let serve = sandbox.cairn(&["serve", "--once"]);
    assert_invalid(&serve, "workflows/deep.yaml:5:");
}

#[test]
fn twenty_thousand_steps_validate() {
    let sandbox = Sandbox::new();
    let steps = 20_000;
    let mut text = String::from("name: huge\nsteps:\n  - id: s0\n    run: 'true'\n");
    for index in 1..steps {
        text.push_str(&format!(
            "  - id: s{index}\n    run: 'true'\n    depends_on: s{}\n    when: steps.s{}.state == 'succeeded' || risk >= low\n",
            index - 1,
            index - 1
        ));
    }
    let path = sandbox.write("huge.yaml", &text);
    // A quadratic check took minutes here; the command's own time limit (60 s) fails it.
    let output = sandbox.cairn(&["validate", &path.display().to_string()]);
    assert_eq!(output.code, Some(0), "{output}");
    assert!(output.stdout.contains("with 20000 steps"), "{output}");
}

#[test]
fn a_file_beyond_the_size_limit_is_refused_unread() {
    let sandbox = Sandbox::new();
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = format!(
        "name: big\nsteps:\n  - id: a\n    run: 'true'\n{}",
        line.repeat(80_000)
    );
    let path = sandbox.write("big.yaml", &text);
    let output = sandbox.cairn(&["validate", &path.display().to_string()]);
    assert_invalid(&output, "larger than 4 MiB");
}

#[test]
fn documents_schedules_and_nul_characters_are_named() {
    let sandbox = Sandbox::new();
    let second = sandbox.write(
        "two.yaml",
        "name: one\nsteps:\n  - id: a\n    run: 'true'\n---\nname: two\nsteps:\n  - id: b\n    run: 'true'\n",
    );
    let output = sandbox.cairn(&["validate", &second.display().to_string()]);
    assert_invalid(&output, &format!("{}:5:", second.display()));
    assert!(output.stderr.contains("second YAML document"), "{output}");

    let never = sandbox.write(
        "never.yaml",
        "name: never\ntrigger:\n  schedule: '0 0 30 2 *'\n  repositories: [/tmp/x.git]\nsteps:\n  - id: a\n    run: 'true'\n",
    );
    let output = sandbox.cairn(&["validate", &never.display().to_string()]);
    assert_invalid(
        &output,
        &format!("{}:3:13: invalid cron schedule", never.display()),
    );
    assert!(output.stderr.contains("never fires"), "{output}");

    let nul = sandbox.write(
        "nul.yaml",
        "name: nul\nenv:\n  TOKEN: \"abc\\0def\"\nsteps:\n  - id: a\n    run: 'true'\n",
    );
    let output = sandbox.cairn(&["validate", &nul.display().to_string()]);
    assert_invalid(&output, &format!("{}:3:10:", nul.display()));
    assert!(
        output.stderr.contains("`TOKEN`"),
        "names the variable\n{output}"
    );
    assert!(output.stderr.contains("NUL"), "{output}");
}

#[test]
fn configuration_mistakes_stop_a_run_before_it_starts_with_their_position() {
    let workflow = "name: w\nsteps:\n  - id: a\n    run: 'true'\n";
    let cases = [
        (
            "llm:\n  local:\n    threads: 100000000\n",
            "cairn.yaml:3:5:",
            "between 1 and",
        ),
        (
            "llm:\n  budgets:\n    remote:\n      day_tokens: -100\n",
            "cairn.yaml:4:",
            "must not be negative",
        ),
        (
            "llm:\n  remote:\n    base_url: localhost:8080\n    model: m\n",
            "cairn.yaml:3:",
            "base_url",
        ),
        ("llm:\n  tasks: [\n", "cairn.yaml:", "invalid YAML"),
        (
            "llm:\n  cache_ttl: 7d\n---\nllm: {}\n",
            "cairn.yaml:3:",
            "second YAML document",
        ),
        (
            "retention:\n  runs: soon\n",
            "cairn.yaml:2:9:",
            "retention.runs",
        ),
    ];
    for (config, position, message) in cases {
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(sandbox.home()).expect("home");
        std::fs::write(sandbox.home().join("cairn.yaml"), config).expect("config");
        let path = sandbox.write("w.yaml", workflow);
        let output = sandbox.cairn(&["run", &path.display().to_string(), "-q"]);
        assert_invalid(&output, message);
        assert!(
            output.stderr.contains(position),
            "expected {position}\n{output}"
        );
        // Not `cairn.yaml:1:1: 3:1: …`: one position, the real one.
        assert!(!output.stderr.contains(": 1:1:"), "{output}");
        assert!(output.stdout.is_empty(), "nothing ran\n{output}");
    }
}

#[test]
fn agent_configuration_is_checked_by_validate_with_its_position() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "agents.yaml",
        "name: agents\nsteps:\n  - id: image\n    agent: build_agent\n    with:\n      max_image_sise: 500MB\n  - id: deploy\n    agent: deploy_agent\n    depends_on: image\n    with:\n      service: app\n      listen: 127.0.0.1:18080\n      health_timeout: -1\n  - id: monitor\n    agent: monitor_agent\n    depends_on: deploy\n    with: { window: 1e300 }\n",
    );
    let file = path.display().to_string();
    let output = sandbox.cairn(&["validate", &file]);
    assert_eq!(output.code, Some(EXIT_INVALID), "{output}");
    for (position, text) in [
        (format!("{file}:6:7:"), "max_image_sise"),
        (format!("{file}:13:7:"), "health_timeout"),
        (format!("{file}:17:13:"), "window"),
    ] {
        let line = output
            .stderr
            .lines()
            .find(|line| line.starts_with(&position))
            .unwrap_or_else(|| panic!("nothing at {position}\n{output}"));
        assert!(line.contains(text), "{line}");
    }
    assert!(!output.stderr.contains("panicked"), "{output}");
    // `cairn run` refuses it the same way, before anything runs.
    let run = sandbox.cairn(&["run", &file, "-q"]);
    assert_eq!(run.code, Some(EXIT_INVALID), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn agent_options_are_checked_by_validate() {
    let sandbox = Sandbox::new();
    let typo = sandbox.write(
        "typo.yaml",
        "name: typo\nsteps:\n  - id: analyze\n    agent: orchestrator\n    with: { model: off }\n  - id: test\n    agent: test_agent\n    depends_on: analyze\n    with: { comand: pytest }\n",
    );
    let output = sandbox.cairn(&["validate", &typo.display().to_string()]);
    assert_invalid(&output, "unknown key `comand`");
    assert!(output.stderr.contains("typo.yaml:9:"), "{output}");

    let model = sandbox.write(
        "model.yaml",
        "name: model\nsteps:\n  - id: analyze\n    agent: orchestrator\n    with: { model: sometimes }\n",
    );
    let output = sandbox.cairn(&["validate", &model.display().to_string()]);
    assert_invalid(&output, "model must be on or off");
}
