//! Workflows in the forms teams already have, run by the real `cairn` binary over real git
//! repositories: a GitHub Actions workflow with `needs`, `if`, a matrix, job outputs and
//! `$GITHUB_ENV`; and `cairn convert`/`cairn validate` on the design brief's pipeline and on
//! Actions workflows. See `engine/src/pipeline/actions/` and `brief.rs`.

mod common_git;

use std::time::Duration;

use cairn_tests::Sandbox;
use common_git::Repo;
use serde_json::Value;

/// An Actions workflow: `analyze` judges the commit and exposes `risk` and `files`; `test`
/// runs two matrix shards when the risk is not low; `docs` only when it is; `deploy` needs
/// the tests (the implicit `success()`); `notify` reacts to a failure; `report` always runs.
const WORKFLOW: &str = r#"
name: ci
on:
  push:
    branches: [main]
env:
  GREETING: hello
jobs:
  analyze:
    runs-on: ubuntu-latest
    outputs:
      risk: ${{ steps.judge.outputs.risk }}
      files: ${{ steps.count.outputs.files }}
    steps:
      - uses: actions/checkout@v4
      - id: count
        run: echo "files=$(git ls-files | wc -l | tr -d ' ')" >> "$GITHUB_OUTPUT"
      - id: judge
        run: |
          if git show --name-only --format= HEAD | grep -q '^migrations/'; then
            echo "risk=high" >> "$GITHUB_OUTPUT"
          else
            echo "risk=low" >> "$GITHUB_OUTPUT"
          fi
  test:
    needs: analyze
    if: ${{ needs.analyze.outputs.risk != 'low' }}
    timeout-minutes: 5
    strategy:
      matrix:
        shard: [1, 2]
    steps:
      - uses: actions/checkout@v4
      - run: echo "SHARD_LABEL=shard-${{ matrix.shard }}" >> "$GITHUB_ENV"
      - run: ./check.sh ${{ matrix.shard }} "$SHARD_LABEL" "$GREETING"
  docs:
    needs: analyze
    if: needs.analyze.outputs.risk == 'low'
    steps:
      - run: echo "docs only"
  deploy:
    needs: test
    steps:
      - run: echo "deploying after ${{ needs.test.outputs.passed }}"
  notify:
    needs: test
    if: failure()
    steps:
      - run: echo "a test shard failed"
  report:
    needs: [analyze, test]
    if: always()
    steps:
      - run: echo "report risk=${{ needs.analyze.outputs.risk }} files=${{ needs.analyze.outputs.files }}"
"#;

const CHECK_PASSING: &str = "#!/bin/sh\necho \"checking shard $1 ($2, $3)\"\n";
const CHECK_FAILING_SHARD_2: &str = "#!/bin/sh\necho \"checking shard $1 ($2, $3)\"\nif [ \"$1\" = 2 ]; then echo 'shard 2 broke' >&2; exit 1; fi\n";

fn repository(sandbox: &Sandbox) -> Repo {
    let repo = Repo::init(&sandbox.path("repo"));
    repo.write("check.sh", CHECK_PASSING);
    make_executable(&repo.path.join("check.sh"));
    repo.write("README.md", "a service\n");
    repo.commit_all("first");
    repo
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// State and outputs of every step of a run.
fn steps(sandbox: &Sandbox, run: i64) -> std::collections::BTreeMap<String, (String, Value)> {
    let db = sandbox.db();
    let mut statement = db
        .prepare("SELECT step_id, state, outputs FROM steps WHERE run_id = ?1")
        .expect("prepare");
    statement
        .query_map([run], |row| {
            let outputs: Option<String> = row.get(2)?;
            Ok((
                row.get::<_, String>(0)?,
                (
                    row.get::<_, String>(1)?,
                    outputs
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or(Value::Null),
                ),
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn state(steps: &std::collections::BTreeMap<String, (String, Value)>, id: &str) -> String {
    steps
        .get(id)
        .unwrap_or_else(|| panic!("no step `{id}` in {steps:?}"))
        .0
        .clone()
}

#[test]
fn an_actions_workflow_runs_with_needs_if_matrix_and_outputs() {
    let sandbox = Sandbox::new();
    let repo = repository(&sandbox);
    let workflow = sandbox.write("ci.yml", WORKFLOW);
    let workflow = workflow.to_str().expect("utf-8 path");
    let repo_path = repo.url();

    let validated = sandbox.cairn(&["validate", workflow]);
    assert_eq!(validated.code, Some(0), "{validated}");
    assert!(
        validated
            .stdout
            .contains("with 7 steps (read as GitHub/Gitea Actions"),
        "{validated}"
    );

    // A change with a migration: high risk, both shards run and pass.
    repo.commit_file(
        "migrations/0001.sql",
        "CREATE TABLE t (id INT);\n",
        "add a table",
    );
    let limit = Duration::from_secs(120);
    let run = sandbox.cairn_within(&["run", workflow, "--repo", &repo_path], limit);
    assert_eq!(run.code, Some(0), "{run}");
    let first = run.run_id();
    let steps_of_first = steps(&sandbox, first);
    assert_eq!(state(&steps_of_first, "analyze"), "succeeded");
    let outputs = &steps_of_first["analyze"].1;
    assert_eq!(outputs["risk"], "high", "{outputs}");
    assert_eq!(outputs["files"], 3, "{outputs}");
    for id in ["test-1", "test-2", "deploy", "report"] {
        assert_eq!(
            state(&steps_of_first, id),
            "succeeded",
            "{id}: {steps_of_first:?}"
        );
    }
    assert_eq!(state(&steps_of_first, "docs"), "skipped");
    assert_eq!(state(&steps_of_first, "notify"), "skipped");
    let logs = sandbox.cairn(&["logs", &first.to_string()]);
    assert!(
        logs.stdout.contains("checking shard 1 (shard-1, hello)"),
        "{logs}"
    );
    assert!(
        logs.stdout.contains("checking shard 2 (shard-2, hello)"),
        "{logs}"
    );
    assert!(logs.stdout.contains("report risk=high files=3"), "{logs}");

    // A docs change: low risk, the tests are skipped and so is what needs them.
    repo.commit_file("README.md", "a service, documented\n", "docs");
    let run = sandbox.cairn_within(&["run", workflow, "--repo", &repo_path], limit);
    assert_eq!(run.code, Some(0), "{run}");
    let second = steps(&sandbox, run.run_id());
    assert_eq!(second["analyze"].1["risk"], "low");
    assert_eq!(state(&second, "docs"), "succeeded");
    for id in ["test-1", "test-2", "deploy", "notify"] {
        assert_eq!(state(&second, id), "skipped", "{id}: {second:?}");
    }
    assert_eq!(state(&second, "report"), "succeeded", "always() runs");

    // Shard 2 fails: the run fails, the other shard still finishes, `deploy` does not run,
    // `notify` (failure()) and `report` (always()) do.
    repo.write("check.sh", CHECK_FAILING_SHARD_2);
    repo.commit_file(
        "migrations/0002.sql",
        "CREATE TABLE u (id INT);\n",
        "break shard 2",
    );
    let run = sandbox.cairn_within(&["run", workflow, "--repo", &repo_path], limit);
    assert_eq!(run.code, Some(1), "{run}");
    let third = steps(&sandbox, run.run_id());
    assert_eq!(state(&third, "test-1"), "succeeded");
    assert_eq!(state(&third, "test-2"), "failed");
    assert_eq!(state(&third, "deploy"), "skipped", "{third:?}");
    assert_eq!(state(&third, "notify"), "succeeded", "{third:?}");
    assert_eq!(state(&third, "report"), "succeeded", "{third:?}");
    let status = sandbox.cairn(&["status", &run.run_id().to_string()]);
    assert!(status.stdout.contains("failed"), "{status}");
}

/// Steps of one job as a runner runs them: a step's `if:` is read between steps, a failed
/// step skips the rest but `failure()`/`always()` steps, `continue-on-error` lets the job go
/// on, and `$GITHUB_OUTPUT`/`$GITHUB_ENV` take values of several lines; `$GITHUB_PATH`
/// reaches later steps.
const STEPS_WORKFLOW: &str = r#"
on: push
env:
  STAGE: ci
jobs:
  notes:
    outputs:
      text: ${{ steps.write.outputs.text }}
      mode: ${{ steps.write.outputs.mode }}
    steps:
      - id: write
        run: |
          {
            echo "text<<END"
            echo "line one"
            echo "mode=not this"
            echo "END"
            echo "mode=fast"
          } >> "$GITHUB_OUTPUT"
          printf 'MESSAGE<<END\nfirst\nsecond\nEND\n' >> "$GITHUB_ENV"
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\necho "tool on the path"\n' > "$RUNNER_TEMP/bin/cairn-tool"
          chmod +x "$RUNNER_TEMP/bin/cairn-tool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
      - name: Read them
        run: |
          echo "message has $(printf '%s\n' "$MESSAGE" | wc -l | tr -d ' ') lines"
          cairn-tool
          echo "mode is ${{ steps.write.outputs.mode }}"
      - name: Production only
        if: env.STAGE == 'PRODUCTION'
        run: echo "deploying to production"
      - name: Fast mode
        if: ${{ steps.write.outputs.mode == 'fast' && startsWith(env.STAGE, 'c') }}
        run: echo "fast mode step ran"
      - name: Allowed to fail
        continue-on-error: true
        run: exit 4
      - name: After the allowed failure
        run: echo "still going"
  checks:
    needs: notes
    steps:
      - name: Receives
        run: |
          printf '%s\n' "${{ needs.notes.outputs.text }}" > received.txt
          echo "received $(wc -l < received.txt | tr -d ' ') lines"
      - id: breaks
        run: exit 3
      - name: Skipped after the failure
        run: echo "must not run"
      - name: Cleanup
        if: failure() && steps.breaks.outcome == 'failure'
        run: echo "cleaning up"
      - name: Report
        if: always()
        run: echo "report ran"
"#;

#[test]
fn steps_follow_their_if_and_values_keep_their_lines() {
    let sandbox = Sandbox::new();
    let repo = repository(&sandbox);
    let workflow = sandbox.write("steps.yml", STEPS_WORKFLOW);
    let workflow = workflow.to_str().expect("utf-8 path");
    let run = sandbox.cairn_within(
        &["run", workflow, "--repo", &repo.url()],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(1), "the `checks` job fails\n{run}");
    let steps = steps(&sandbox, run.run_id());
    assert_eq!(state(&steps, "notes"), "succeeded", "{steps:?}");
    assert_eq!(state(&steps, "checks"), "failed", "{steps:?}");
    let outputs = &steps["notes"].1;
    assert_eq!(outputs["text"], "line one\nmode=not this", "{outputs}");
    assert_eq!(outputs["mode"], "fast", "{outputs}");

    let logs = sandbox.cairn(&["logs", &run.run_id().to_string()]).stdout;
    for expected in [
        "message has 2 lines",
        "tool on the path",
        "mode is fast",
        "fast mode step ran",
        "(continue-on-error: the step failed, the job goes on)",
        "still going",
        "received 2 lines",
        "cleaning up",
        "report ran",
        "the job failed at step `breaks` of job `checks`",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in\n{logs}");
    }
    for absent in ["deploying to production", "must not run"] {
        assert!(!logs.contains(absent), "{absent:?} ran\n{logs}");
    }
    assert!(
        logs.contains("step 3 (`Production only`) of job `notes` skipped: its if is false"),
        "{logs}"
    );

    // A mistake in a step's `if:` is found by `validate`, with its place.
    let bad = sandbox.write(
        "bad.yml",
        "on: push\njobs:\n  build:\n    steps:\n      - run: 'true'\n        if: success() && hashFiles('x') != ''\n",
    );
    let out = sandbox.cairn(&["validate", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr
            .contains("bad.yml:6:13: in `if` of step 1 of job `build`: function `hashFiles(…)` is not supported"),
        "{out}"
    );
}

/// `actions/upload-artifact` hands a job's files to the jobs after it, even when a job in
/// between deletes them; `actions/cache` restores a directory between runs, keyed by the hash
/// of a lockfile as `hashFiles` would be.
const FILES_WORKFLOW: &str = r#"
on: push
jobs:
  build:
    steps:
      - uses: actions/cache@v4
        with:
          path: .deps
          key: deps-${{ runner.os }}-${{ hashFiles('deps.lock') }}
      - run: |
          if [ -f .deps/fetched ]; then echo "deps from the cache: $(cat .deps/fetched)"; else mkdir -p .deps && echo "fetched once" > .deps/fetched && echo "deps fetched"; fi
          mkdir -p dist && echo "built from $(git rev-parse --short HEAD)" > dist/app.txt
      - uses: actions/upload-artifact@v4
        with:
          name: app
          path: |
            dist/app.txt
  clean:
    needs: build
    steps:
      - run: rm -rf dist && echo "dist removed"
  ship:
    needs: clean
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: app
      - run: echo "shipping $(cat dist/app.txt)"
"#;

#[test]
fn artifacts_reach_later_jobs_and_caches_outlive_runs() {
    let sandbox = Sandbox::new();
    let repo = repository(&sandbox);
    repo.write("deps.lock", "one = 1\n");
    repo.commit_all("a lockfile");
    let workflow = sandbox.write("files.yml", FILES_WORKFLOW);
    let workflow = workflow.to_str().expect("utf-8 path");
    let limit = Duration::from_secs(120);

    let first = sandbox.cairn_within(&["run", workflow, "--repo", &repo.url()], limit);
    assert_eq!(first.code, Some(0), "{first}");
    let logs = sandbox.cairn(&["logs", &first.run_id().to_string()]).stdout;
    let head = repo.git(&["rev-parse", "--short", "HEAD"]);
    for expected in [
        "deps fetched".to_string(),
        "dist removed".to_string(),
        format!("shipping built from {}", head.trim()),
    ] {
        assert!(logs.contains(&expected), "missing {expected:?} in\n{logs}");
    }

    // A new commit, a fresh workspace: the cache brings `.deps` back.
    repo.commit_file("README.md", "a service, again\n", "docs");
    let second = sandbox.cairn_within(&["run", workflow, "--repo", &repo.url()], limit);
    assert_eq!(second.code, Some(0), "{second}");
    let logs = sandbox
        .cairn(&["logs", &second.run_id().to_string()])
        .stdout;
    assert!(logs.contains("deps from the cache: fetched once"), "{logs}");

    // The lockfile changed: a new key, fetched again.
    repo.commit_file("deps.lock", "one = 2\n", "bump");
    let third = sandbox.cairn_within(&["run", workflow, "--repo", &repo.url()], limit);
    assert_eq!(third.code, Some(0), "{third}");
    let logs = sandbox.cairn(&["logs", &third.run_id().to_string()]).stdout;
    assert!(logs.contains("deps fetched"), "{logs}");

    let listed = sandbox.cairn(&["artifacts", "list", &third.run_id().to_string()]);
    assert!(listed.stdout.contains("dist/app.txt"), "{listed}");
}

#[test]
fn marketplace_actions_are_refused_naming_the_step() {
    let sandbox = Sandbox::new();
    let workflow = sandbox.write(
        "ci.yml",
        "on: push\njobs:\n  build:\n    steps:\n      - uses: actions/checkout@v4\n      - name: Set up Node\n        uses: actions/setup-node@v4\n",
    );
    let out = sandbox.cairn(&["validate", workflow.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains(
            "ci.yml:7:15: step 2 (`Set up Node`) of job `build` uses `actions/setup-node@v4`: only `actions/checkout`, `actions/upload-artifact`"
        ),
        "{out}"
    );
}

#[test]
fn convert_prints_the_native_workflow_that_loads_the_same() {
    let sandbox = Sandbox::new();
    let brief = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../engine/tests/fixtures/valid/design_brief.yaml"),
    )
    .expect("the design brief fixture");
    // The brief's file names no service for its deploy stage; convert translates it anyway
    // (validate checks agents' settings), and a team names its service and proxy to run it.
    let strategy = "      strategy: \"AI-selected based on risk score\"\n";
    assert!(brief.contains(strategy), "the fixture's deploy stage");
    let brief = brief.replacen(
        strategy,
        &format!("{strategy}      with: {{ service: shop, listen: \"127.0.0.1:18999\" }}\n"),
        1,
    );
    let file = sandbox.write("pipeline.yaml", &brief);
    let converted = sandbox.cairn(&["convert", file.to_str().expect("utf-8 path")]);
    assert_eq!(converted.code, Some(0), "{converted}");
    let native = &converted.stdout;
    for expected in [
        "name: \"pipeline\"",
        "agent: monitor_agent",
        "with: { \"window\": \"10m\" }",
        "when: \"risk >= medium\"",
        "retries: 1",
        "on_failure: retry",
        // "Generate fix suggestions": the test agent's own fix suggestions.
        "with: { \"fix\": true }",
    ] {
        assert!(
            native.contains(expected),
            "missing {expected:?} in:\n{native}"
        );
    }
    let again = sandbox.write("native.yaml", native);
    let validated = sandbox.cairn(&["validate", again.to_str().expect("utf-8 path")]);
    assert_eq!(validated.code, Some(0), "{validated}");
    assert!(validated.stdout.contains("with 5 steps\n"), "{validated}");
}

/// The templates for teams that keep their CI validate, and the GitHub one runs under Cairn's
/// own Actions support: `cairn analyze --json` gives `risk` as the job's output and the other
/// jobs route on it.
#[test]
fn the_ci_templates_expose_risk_as_a_job_output() {
    let sandbox = Sandbox::new();
    let templates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    for template in ["github-cairn-risk.yml", "gitea-cairn-risk.yml"] {
        let path = templates.join(template);
        let out = sandbox.cairn(&["validate", path.to_str().expect("utf-8 path")]);
        assert_eq!(out.code, Some(0), "{template}: {out}");
    }
    let repo = Repo::init(&sandbox.path("app"));
    repo.write(
        "Makefile",
        "test:\n\techo running the tests\ntest-extra:\n\techo running the extra checks\n",
    );
    repo.write("src/app.py", "def handle(request):\n    return 200\n");
    repo.commit_all("initial");
    repo.commit_file(
        "migrations/0001_users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, password TEXT);\n",
        "add users",
    );
    let cairn_dir = cairn_tests::cairn_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        cairn_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let template = templates.join("github-cairn-risk.yml");
    let run = |sandbox: &Sandbox| {
        let output = sandbox
            .command(&[
                "run",
                template.to_str().expect("utf-8 path"),
                "--repo",
                &repo.url(),
            ])
            .env("PATH", &path)
            .output()
            .expect("cairn run");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
        stdout
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no run id:\n{stdout}\n{stderr}"))
    };
    let high = steps(&sandbox, run(&sandbox));
    assert_eq!(high["analyze"].1["risk"], "high", "{high:?}");
    assert_eq!(state(&high, "tests"), "succeeded");
    assert_eq!(state(&high, "extra-checks"), "succeeded");

    repo.commit_file("README.md", "the app\n", "docs");
    let low = steps(&sandbox, run(&sandbox));
    assert_eq!(low["analyze"].1["risk"], "low", "{low:?}");
    assert_eq!(state(&low, "tests"), "skipped");
    assert_eq!(state(&low, "extra-checks"), "skipped");
}
