//! Repository polling end to end: `cairn serve WORKFLOW --once -q` against real git
//! repositories the tests commit to, with the state read back from the database and from a
//! journal the runs' steps write.
//!
//! What it proves (see `DESIGN.md`, "Durable execution model", and `trigger/poller.rs`):
//!
//! - the first poll starts one run per watched branch head, and an unreachable repository is
//!   reported (exit 1, named on stderr, `failing` in `cairn status`) without stopping the
//!   others;
//! - new commits get exactly one run each, created oldest first per branch;
//! - SIGKILL of the engine after it created runs neither loses nor repeats a commit: the next
//!   `serve` resumes the interrupted runs and polls nothing twice;
//! - a force-push runs only the new commit and says so in the repository's note;
//! - a watched branch that is deleted is a note, not an error;
//! - `commits: latest` runs only the newest of several new commits;
//! - branch patterns (`release/**`, `!release/old`) watch the branches they match, new ones too.

mod common_git;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use cairn_tests::{Output, Sandbox, sh_quote, wait_until};
use common_git::{Repo, short};

/// Longest a `cairn serve --once` may take here.
const SERVE_LIMIT: Duration = Duration::from_secs(40);

/// One row of the `runs` table, with the trigger context the poller stored.
#[derive(Debug, Clone)]
struct RunRow {
    id: i64,
    state: String,
    commit: String,
    repo_url: String,
    branch: String,
    trigger: String,
}

fn runs(sandbox: &Sandbox) -> Vec<RunRow> {
    let Some(conn) = sandbox.try_db() else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT id, state, context FROM runs ORDER BY id") else {
        // Killed before the schema existed.
        return Vec::new();
    };
    stmt.query_map([], |row| {
        let context: String = row.get(2)?;
        let context: Value = serde_json::from_str(&context).unwrap_or(Value::Null);
        let text = |key: &str| context[key].as_str().unwrap_or("").to_string();
        Ok(RunRow {
            id: row.get(0)?,
            state: row.get(1)?,
            commit: text("commit"),
            repo_url: text("repo_url"),
            branch: text("branch"),
            trigger: text("trigger"),
        })
    })
    .expect("failed to query runs")
    .collect::<rusqlite::Result<_>>()
    .expect("failed to read runs")
}

/// The trigger block of a workflow: `(url, branches)` per repository.
fn workflow(name: &str, commits: &str, repositories: &[(&str, &[&str])], journal: &Path) -> String {
    let mut text = format!(
        "name: {name}\nenv:\n  JOURNAL: {}\ntrigger:\n  schedule: \"*/5 * * * *\"\n  commits: {commits}\n  repositories:\n",
        sh_quote(journal)
    );
    for (url, branches) in repositories {
        text.push_str(&format!(
            "    - url: {url}\n      branches: [{}]\n",
            branches.join(", ")
        ));
    }
    // The record step sleeps a little so that a SIGKILL soon after the runs are created
    // lands while they are still running.
    text.push_str(
        "steps:\n  - id: analyze\n    agent: orchestrator\n  - id: record\n    depends_on: analyze\n    run: |\n      sleep 0.3\n      echo \"$CAIRN_RUN_ID $CAIRN_COMMIT $CAIRN_BRANCH $CAIRN_RISK\" >> \"$JOURNAL\"\n",
    );
    text
}

/// `cairn serve WORKFLOW --once -q EXTRA...`, which must finish within [`SERVE_LIMIT`].
fn serve_once(sandbox: &Sandbox, workflow: &Path, extra: &[&str]) -> Output {
    let workflow = workflow.display().to_string();
    let mut args = vec!["serve", workflow.as_str(), "--once", "-q"];
    args.extend(extra);
    sandbox.cairn_within(&args, SERVE_LIMIT)
}

/// `(run id, commit)` per journal line, in the order the steps wrote them.
fn journal(path: &Path) -> Vec<(i64, String)> {
    journal_lines(path)
        .into_iter()
        .map(|fields| (fields.run, fields.commit))
        .collect()
}

/// One line the `record` step wrote: `$CAIRN_RUN_ID $CAIRN_COMMIT $CAIRN_BRANCH $CAIRN_RISK`.
struct JournalLine {
    run: i64,
    commit: String,
    branch: String,
    risk: String,
}

fn journal_lines(path: &Path) -> Vec<JournalLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields[..] {
                [run, commit, branch, risk] => JournalLine {
                    run: run
                        .parse()
                        .unwrap_or_else(|_| panic!("malformed journal line {line:?}")),
                    commit: commit.to_string(),
                    branch: branch.to_string(),
                    risk: risk.to_string(),
                },
                _ => panic!("malformed journal line {line:?}"),
            }
        })
        .collect()
}

/// `cairn status --json` prints one document: `{ "runs": [...], "repositories": [...] }`.
fn status_repositories(sandbox: &Sandbox) -> Vec<Value> {
    let output = sandbox.cairn(&["status", "--json"]);
    assert_eq!(
        output.code,
        Some(0),
        "`cairn status --json` failed\n{output}"
    );
    let document: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("`cairn status --json` printed invalid JSON ({e})\n{output}"));
    assert!(document["runs"].is_array(), "expected runs\n{output}");
    document["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("repositories are not a list\n{output}"))
}

fn repository<'a>(repositories: &'a [Value], url: &str) -> &'a Value {
    repositories
        .iter()
        .find(|r| r["url"] == url)
        .unwrap_or_else(|| {
            panic!("no repository {url} in `cairn status --json`: {repositories:#?}")
        })
}

/// The commits that have runs, per repository url, with how many runs each.
fn runs_per_commit(rows: &[RunRow]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts
            .entry((row.repo_url.clone(), row.commit.clone()))
            .or_insert(0) += 1;
    }
    counts
}

/// Every run finished `succeeded`.
fn assert_all_succeeded(rows: &[RunRow], when: &str) {
    let bad: Vec<&RunRow> = rows.iter().filter(|r| r.state != "succeeded").collect();
    assert!(
        bad.is_empty(),
        "{when}: runs that did not succeed: {bad:#?}"
    );
}

/// After a poll that may or may not have tried the unreachable repository again (it backs off
/// after its second failure): the only acceptable failure is that repository.
fn assert_only_missing_failed(output: &Output, missing: &str, good: &[&Repo]) {
    for repo in good {
        assert!(
            !output
                .stderr
                .contains(&format!("repository {} could not be polled", repo.url())),
            "a reachable repository failed to poll\n{output}"
        );
    }
    let missing_reported = output
        .stderr
        .contains(&format!("repository {missing} could not be polled"));
    let expected = if missing_reported { Some(1) } else { Some(0) };
    assert_eq!(
        output.code, expected,
        "exit code 1 exactly when the missing repository was polled\n{output}"
    );
}

#[test]
fn polling_runs_each_commit_once_across_a_restart_and_a_force_push() {
    let started = Instant::now();
    let sandbox = Sandbox::new();
    let a = Repo::init(&sandbox.path("repo-a"));
    let b = Repo::init(&sandbox.path("repo-b"));
    let mut a_commits = a.add_commits("a-base", 2);
    let mut b_commits = b.add_commits("b-base", 2);
    let missing = sandbox
        .path("repo-that-does-not-exist")
        .display()
        .to_string();
    let journal_path = sandbox.path("journal.txt");
    let workflow_path = sandbox.write(
        "watch.yaml",
        &workflow(
            "watch-two",
            "each",
            &[
                (&a.url(), &["main"]),
                (&b.url(), &["main"]),
                (&missing, &["main"]),
            ],
            &journal_path,
        ),
    );
    // What must have exactly one run each by the end: each branch head at the first poll, then
    // every commit made after it.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let mut timings = Vec::new();

    // 1. The first poll: one run per branch head, the missing repository reported.
    let output = serve_once(&sandbox, &workflow_path, &[]);
    timings.push(("first poll", started.elapsed()));
    assert_eq!(
        output.code,
        Some(1),
        "an unreachable repository makes `serve --once` exit 1\n{output}"
    );
    assert!(
        output
            .stderr
            .contains(&format!("repository {missing} could not be polled")),
        "stderr names the unreachable repository\n{output}"
    );
    assert!(
        output.stderr.contains("started 2 run(s)"),
        "two runs started\n{output}"
    );
    let rows = runs(&sandbox);
    assert_eq!(rows.len(), 2, "one run per watched branch head: {rows:#?}");
    assert_all_succeeded(&rows, "first poll");
    let heads: BTreeSet<(String, String)> = [(a.url(), a.head()), (b.url(), b.head())].into();
    let got: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.repo_url.clone(), r.commit.clone()))
        .collect();
    assert_eq!(got, heads, "the runs are for the two heads");
    assert!(
        rows.iter()
            .all(|r| r.branch == "main" && r.trigger == "poll"),
        "poll runs of main: {rows:#?}"
    );
    expected.extend(heads);
    let repositories = status_repositories(&sandbox);
    let failing = repository(&repositories, &missing);
    assert!(
        failing["failures"].as_u64() >= Some(1),
        "the missing repository counts a failure: {failing:#}"
    );
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ls-remote")),
        "its last error says what failed: {failing:#}"
    );
    for repo in [&a, &b] {
        let ok = repository(&repositories, &repo.url());
        assert!(
            ok["last_error"].is_null() && ok["failures"] == 0,
            "{} polls fine: {ok:#}",
            repo.url()
        );
    }
    let human = sandbox.cairn(&["status"]);
    let line = human
        .stdout
        .lines()
        .find(|l| l.starts_with(&missing))
        .unwrap_or_else(|| panic!("`cairn status` lists no {missing}\n{human}"));
    assert!(
        line.contains("failing"),
        "`cairn status` shows the missing repository failing: {line}"
    );
    // The orchestrator analyzed the polled commit inside the run's checkout.
    let conn = sandbox.db();
    let outputs: String = conn
        .query_row(
            "SELECT outputs FROM steps WHERE run_id = ?1 AND step_id = 'analyze'",
            [rows[0].id],
            |row| row.get(0),
        )
        .expect("the analyze step has outputs");
    let outputs: Value = serde_json::from_str(&outputs).expect("analyze outputs are JSON");
    assert_eq!(
        outputs["change"]["categories"],
        serde_json::json!(["docs"]),
        "notes/*.txt are docs: {outputs:#}"
    );
    assert_eq!(
        outputs["risk"], "low",
        "a docs commit routes low: {outputs:#}"
    );
    drop(conn);
    // ... and the step after it saw the commit, the branch and the risk in its environment.
    let lines = journal_lines(&journal_path);
    assert_eq!(lines.len(), 2, "one journal line per run");
    for line in &lines {
        let row = rows
            .iter()
            .find(|r| r.id == line.run)
            .expect("journal names a known run");
        assert_eq!(
            (
                line.commit.as_str(),
                line.branch.as_str(),
                line.risk.as_str()
            ),
            (row.commit.as_str(), "main", "low")
        );
    }

    // 2. 3 commits on A, 1 on B: exactly 4 new runs, oldest first per branch. One run at a
    // time, so the journal's order is the order the engine ran them in.
    let a_before = a.head();
    let b_before = b.head();
    a_commits.extend(a.add_commits("a-second", 3));
    b_commits.extend(b.add_commits("b-second", 1));
    let output = serve_once(&sandbox, &workflow_path, &["--max-runs", "1"]);
    timings.push(("second poll", started.elapsed()));
    assert_only_missing_failed(&output, &missing, &[&a, &b]);
    assert!(
        output.stderr.contains("started 4 run(s)"),
        "four runs started\n{output}"
    );
    let rows = runs(&sandbox);
    assert_eq!(rows.len(), 6, "exactly 4 new runs: {rows:#?}");
    assert_all_succeeded(&rows, "second poll");
    let lines = journal(&journal_path);
    for (repo, before) in [(&a, &a_before), (&b, &b_before)] {
        let new = repo.rev_list_reverse(&format!("{before}..main"));
        let created: Vec<String> = rows[2..]
            .iter()
            .filter(|r| r.repo_url == repo.url())
            .map(|r| r.commit.clone())
            .collect();
        assert_eq!(
            created,
            new,
            "{}: runs created oldest first (by run id)",
            repo.url()
        );
        let ran: Vec<String> = lines
            .iter()
            .filter(|(_, commit)| new.contains(commit))
            .map(|(_, commit)| commit.clone())
            .collect();
        assert_eq!(
            ran,
            new,
            "{}: the journal lists the new commits oldest first",
            repo.url()
        );
        expected.extend(new.into_iter().map(|c| (repo.url(), c)));
    }
    // Each journal line's run is the run of that commit: the step saw the right CAIRN_COMMIT.
    for (run, commit) in &lines {
        let row = rows
            .iter()
            .find(|r| r.id == *run)
            .expect("journal names a known run");
        assert_eq!(
            &row.commit, commit,
            "run {run} ran with the commit of its context"
        );
    }

    // 3. SIGKILL after the runs are created, then serve again: every commit exactly once.
    let a_new = a.add_commits("a-third", 2);
    let b_new = b.add_commits("b-third", 2);
    a_commits.extend(a_new.clone());
    b_commits.extend(b_new.clone());
    let new: BTreeSet<(String, String)> = a_new
        .iter()
        .map(|c| (a.url(), c.clone()))
        .chain(b_new.iter().map(|c| (b.url(), c.clone())))
        .collect();
    let mut engine = sandbox.spawn(&[
        "serve",
        &workflow_path.display().to_string(),
        "--once",
        "-q",
    ]);
    wait_until("runs for the new commits", SERVE_LIMIT, || {
        let rows = runs(&sandbox);
        let have: BTreeSet<(String, String)> = rows
            .iter()
            .map(|r| (r.repo_url.clone(), r.commit.clone()))
            .collect();
        new.is_subset(&have) || engine.try_wait().is_some()
    });
    let killed = engine.kill9();
    assert!(
        killed,
        "`cairn serve` ended before the SIGKILL\n{}",
        engine.output()
    );
    // What the dead engine left running (its git and step processes), for the log.
    let orphans: Vec<String> = sandbox
        .processes()
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .collect();
    eprintln!("after the SIGKILL, still running: {orphans:?}");
    let after_kill = runs(&sandbox);
    let unfinished: Vec<i64> = after_kill
        .iter()
        .filter(|r| r.state != "succeeded")
        .map(|r| r.id)
        .collect();
    assert!(
        !unfinished.is_empty(),
        "the SIGKILL landed after every run had finished: {after_kill:#?}"
    );
    let output = serve_once(&sandbox, &workflow_path, &[]);
    timings.push(("kill and restart", started.elapsed()));
    assert_only_missing_failed(&output, &missing, &[&a, &b]);
    assert!(
        output.stderr.contains(&format!(
            "resumed {} run(s), started 0 run(s)",
            unfinished.len()
        )),
        "the restart resumes the {} interrupted runs and starts none\n{output}",
        unfinished.len()
    );
    expected.extend(new);
    let rows = runs(&sandbox);
    assert_all_succeeded(&rows, "after the restart");
    let counts = runs_per_commit(&rows);
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "commits with more than one run: {repeated:#?}"
    );
    let have: BTreeSet<(String, String)> = counts.keys().cloned().collect();
    assert_eq!(
        have, expected,
        "exactly the expected commits have runs (none missing, none extra)"
    );
    assert_eq!(rows.len(), 10, "2 heads + 4 + 4 commits: {rows:#?}");
    // The cursors moved with the runs: one more poll finds nothing.
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_only_missing_failed(&output, &missing, &[&a, &b]);
    assert!(
        output.stderr.contains("resumed 0 run(s), started 0 run(s)"),
        "nothing left to do\n{output}"
    );
    assert_eq!(runs(&sandbox).len(), 10, "a quiet poll starts no run");

    // 4. Force-push A: back two commits, then a different commit on top.
    let old_head = a.head();
    a.git(&["reset", "--quiet", "--hard", "HEAD~2"]);
    let rewritten = a.commit_file(
        "notes/rewritten.txt",
        "history was rewritten\n",
        "rewrite: replaces two commits",
    );
    let output = serve_once(&sandbox, &workflow_path, &[]);
    timings.push(("force-push", started.elapsed()));
    assert_only_missing_failed(&output, &missing, &[&a, &b]);
    let rows = runs(&sandbox);
    assert_eq!(
        rows.len(),
        11,
        "one run for the force-pushed commit: {rows:#?}"
    );
    let last = &rows[10];
    assert_eq!(
        (last.repo_url.as_str(), last.commit.as_str()),
        (a.url().as_str(), rewritten.as_str()),
        "{last:#?}"
    );
    assert_all_succeeded(&rows, "after the force-push");
    let repositories = status_repositories(&sandbox);
    let note = repository(&repositories, &a.url())["last_note"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        note.contains("force-pushed")
            && note.contains(short(&old_head))
            && note.contains(short(&rewritten)),
        "repository A's note reports the force-push from {} to {}: {note:?}",
        short(&old_head),
        short(&rewritten)
    );
    let human = sandbox.cairn(&["status"]);
    assert!(
        human.stdout.contains("force-pushed"),
        "`cairn status` shows the note\n{human}"
    );

    eprintln!(
        "timings (cumulative): {timings:?}; {} runs in all",
        rows.len()
    );
}

#[test]
fn a_deleted_watched_branch_is_a_note_not_an_error() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 1);
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    let feature_head = repo.add_commits("feature", 1).remove(0);
    repo.git(&["checkout", "--quiet", "main"]);
    let journal_path = sandbox.path("journal.txt");
    let workflow_path = sandbox.write(
        "watch.yaml",
        &workflow(
            "watch-branches",
            "each",
            &[(&repo.url(), &["main", "feature"])],
            &journal_path,
        ),
    );

    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    let rows = runs(&sandbox);
    let heads: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.branch.clone(), r.commit.clone()))
        .collect();
    assert_eq!(
        heads,
        [
            ("main".to_string(), repo.rev_parse("main")),
            ("feature".to_string(), feature_head)
        ]
        .into(),
        "one run per watched branch head"
    );

    // Delete `feature` and move `main`: the poll succeeds, runs main's commit, and notes it.
    repo.git(&["branch", "--quiet", "-D", "feature"]);
    let main_new = repo.add_commits("main", 1).remove(0);
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(
        output.code,
        Some(0),
        "a deleted watched branch is not an error\n{output}"
    );
    let rows = runs(&sandbox);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(
        (rows[2].branch.as_str(), rows[2].commit.as_str()),
        ("main", main_new.as_str())
    );
    assert_all_succeeded(&rows, "after the deletion");
    let repositories = status_repositories(&sandbox);
    let status = repository(&repositories, &repo.url());
    assert!(
        status["last_error"].is_null() && status["failures"] == 0,
        "{status:#}"
    );
    assert!(
        status["last_note"]
            .as_str()
            .is_some_and(|n| n.contains("`feature` was deleted")),
        "the note says the branch was deleted: {status:#}"
    );

    // Polling again stays quiet; a branch created again under the same name is new.
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    assert_eq!(runs(&sandbox).len(), 3, "a quiet poll starts no run");
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    let again = repo.add_commits("feature-again", 2);
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    let rows = runs(&sandbox);
    assert_eq!(
        rows.len(),
        4,
        "a recreated branch runs its head only: {rows:#?}"
    );
    assert_eq!(
        (rows[3].branch.as_str(), rows[3].commit.as_str()),
        ("feature", again[1].as_str())
    );
    assert_all_succeeded(&rows, "after the branch came back");
}

#[test]
fn commits_latest_runs_only_the_newest_commit() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 2);
    let journal_path = sandbox.path("journal.txt");
    let workflow_path = sandbox.write(
        "watch.yaml",
        &workflow(
            "watch-latest",
            "latest",
            &[(&repo.url(), &["main"])],
            &journal_path,
        ),
    );
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    assert_eq!(runs(&sandbox).len(), 1, "the first poll runs the head");

    let new = repo.add_commits("burst", 4);
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    let rows = runs(&sandbox);
    assert_eq!(rows.len(), 2, "one run for a burst of 4 commits: {rows:#?}");
    assert_eq!(rows[1].commit, new[3], "the run is for the newest commit");
    assert_all_succeeded(&rows, "latest");
    let ran: Vec<String> = journal(&journal_path).into_iter().map(|(_, c)| c).collect();
    assert!(
        !new[..3].iter().any(|c| ran.contains(c)),
        "the older commits of the burst never ran: {ran:?}"
    );
}

/// Branch patterns in GitHub's filter syntax: `release/**` takes in every release branch,
/// `!release/old` leaves one out again, and a branch created after the first poll that the
/// patterns match is watched from the next poll on.
#[test]
fn branch_patterns_watch_the_branches_they_match() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 1);
    for branch in ["release/1.0", "release/old", "feature/x"] {
        repo.git(&["branch", branch]);
    }
    repo.git(&["checkout", "-q", "-b", "release/2.0/rc"]);
    let rc = repo.add_commits("rc", 1);
    repo.git(&["checkout", "-q", "main"]);
    let journal_path = sandbox.path("journal.txt");
    let workflow_path = sandbox.write(
        "watch.yaml",
        &workflow(
            "watch-patterns",
            "latest",
            &[(&repo.url(), &["main", "'release/**'", "'!release/old'"])],
            &journal_path,
        ),
    );
    let validated = sandbox.cairn(&["validate", &workflow_path.display().to_string()]);
    assert_eq!(validated.code, Some(0), "{validated}");

    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    let branches: BTreeSet<String> = runs(&sandbox).into_iter().map(|r| r.branch).collect();
    assert_eq!(
        branches,
        BTreeSet::from(["main".into(), "release/1.0".into(), "release/2.0/rc".into()]),
        "`feature/x` is not matched and `release/old` is left out"
    );
    assert!(
        runs(&sandbox).iter().any(|r| r.commit == rc[0]),
        "the rc branch's own commit ran"
    );

    // A new branch the patterns match, and a commit on the left-out one.
    repo.git(&["branch", "release/3.0"]);
    repo.git(&["checkout", "-q", "release/old"]);
    repo.add_commits("old", 1);
    repo.git(&["checkout", "-q", "main"]);
    let output = serve_once(&sandbox, &workflow_path, &[]);
    assert_eq!(output.code, Some(0), "{output}");
    let rows = runs(&sandbox);
    let branches: Vec<&str> = rows.iter().map(|r| r.branch.as_str()).collect();
    assert_eq!(
        branches.iter().filter(|b| **b == "release/3.0").count(),
        1,
        "{branches:?}"
    );
    assert!(!branches.contains(&"release/old"), "{branches:?}");
    assert_all_succeeded(&rows, "patterns");

    // A pattern that cannot be read is refused with its place.
    let bad = sandbox.write(
        "bad.yaml",
        &workflow(
            "bad",
            "each",
            &[(&repo.url(), &["'release/[1-'"])],
            &journal_path,
        ),
    );
    let refused = sandbox.cairn(&["validate", &bad.display().to_string()]);
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(
        refused.stderr.contains("bad.yaml:9:17")
            && refused
                .stderr
                .contains("branch pattern `release/[1-`: `[` is not closed"),
        "{refused}"
    );
}

/// Three `cairn serve` on one home poll the same repository at the same moments: the cursor's
/// compare-and-set in the run-creating transaction makes one of them create each commit's run,
/// and the mirror lock keeps their fetches apart.
#[test]
fn serves_sharing_a_home_run_each_commit_once() {
    let sandbox = Sandbox::new();
    let repo = Repo::init(&sandbox.path("repo"));
    repo.add_commits("base", 1);
    let journal_path = sandbox.path("journal.txt");
    let workflow_path = sandbox.write(
        "watch.yaml",
        &workflow(
            "watch-twice",
            "each",
            &[(&repo.url(), &["main"])],
            &journal_path,
        ),
    );
    let workflow = workflow_path.display().to_string();
    let mut expected = vec![repo.head()];
    for round in 0..5 {
        if round > 0 {
            expected.extend(repo.add_commits(&format!("round{round}"), 2));
        }
        let mut serves: Vec<_> = (0..3)
            .map(|_| sandbox.spawn(&["serve", &workflow, "--once", "-q"]))
            .collect();
        for serve in &mut serves {
            serve
                .wait_within(SERVE_LIMIT)
                .expect("serve --once finishes");
            let output = serve.output();
            assert_eq!(output.code, Some(0), "round {round}: {output}");
        }
    }
    let rows = runs(&sandbox);
    let per_commit = runs_per_commit(&rows);
    for commit in &expected {
        let count = per_commit
            .iter()
            .filter(|((_, c), _)| c == commit)
            .map(|(_, n)| *n)
            .sum::<usize>();
        assert_eq!(
            count,
            1,
            "commit {} ran {count} times: {rows:#?}",
            short(commit)
        );
    }
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    assert_all_succeeded(&rows, "two serves");
}
