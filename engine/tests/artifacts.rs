//! Artifacts and caches end to end: the real `cairn` binary runs workflows over a real git
//! repository with a real `$CAIRN_HOME` (SQLite file, blob files), and the tests read what it
//! left with `cairn artifacts`, `cairn logs`, `cairn gc` and the database itself.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        std::fs::create_dir_all(&path).unwrap();
        let repo = Repo { _dir: dir, path };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Cairn Tests"]);
        repo.git(&["config", "user.email", "tests@cairn.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn commit(&self, file: &str, content: &str) {
        std::fs::write(self.path.join(file), content).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", &format!("write {file}")]);
    }
}

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cairn(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .env("CAIRN_HOME", self.path())
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_SANDBOX");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    fn workflow(&self, name: &str, text: &str) -> String {
        let path = self.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Runs `workflow` for the repository's HEAD; returns the run id and the exit code.
    fn run(&self, workflow: &str, repo: &Repo, env: &[(&str, &str)]) -> (i64, Option<i32>) {
        let repo_path = repo.path.display().to_string();
        let output = self.cairn(&["run", workflow, "--repo", &repo_path, "--quiet"], env);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let run_id = stdout
            .trim()
            .lines()
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "no run id; stdout: {stdout}\nstderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        (run_id, output.status.code())
    }

    fn logs(&self, run_id: i64, step: &str) -> String {
        let output = self.cairn(&["logs", &run_id.to_string(), step], &[]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("cairn.db")).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn blob(&self, sha256: &str) -> PathBuf {
        self.path().join("blobs/sha256").join(sha256)
    }

    /// Cache keys of the home, oldest first.
    fn cache_keys(&self) -> Vec<String> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT key FROM caches ORDER BY created_at")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const HANDOFF: &str = r#"
name: handoff
steps:
  - id: a
    run: mkdir -p dist && echo "made by a in run $CAIRN_RUN_ID" > dist/out.txt
    artifacts: [dist/out.txt]
  - id: m
    run: rm dist/out.txt && test ! -e dist/out.txt
    depends_on: a
  - id: b
    run: cat dist/out.txt && test "$(cat dist/out.txt)" = "made by a in run $CAIRN_RUN_ID"
    depends_on: m
"#;

#[test]
fn a_dependant_receives_what_its_ancestor_stored_and_retention_removes_it() {
    let repo = Repo::new();
    repo.commit("README", "app\n");
    let home = Home::new();
    let workflow = home.workflow("handoff", HANDOFF);
    let (run_id, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(
        code,
        Some(0),
        "a: {}\nb: {}",
        home.logs(run_id, "a"),
        home.logs(run_id, "b")
    );

    // b read a's file although m deleted it in the shared workspace.
    let expected = format!("made by a in run {run_id}\n");
    let b_log = home.logs(run_id, "b");
    assert!(b_log.contains(expected.trim()), "{b_log}");
    assert!(b_log.contains("artifacts: restored 1 file"), "{b_log}");
    assert!(home.logs(run_id, "a").contains("artifacts: stored 1 file"));

    // `cairn artifacts list` shows step, path, size and the content's SHA-256.
    let listed = home.cairn(&["artifacts", "list", &run_id.to_string()], &[]);
    let text = String::from_utf8_lossy(&listed.stdout);
    let row = text
        .lines()
        .find(|line| line.contains("dist/out.txt"))
        .unwrap_or_else(|| panic!("{text}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "a",
            "dist/out.txt",
            &expected.len().to_string(),
            &sha256_hex(expected.as_bytes())
        ],
        "{text}"
    );
    let json = home.cairn(&["artifacts", "list", &run_id.to_string(), "--json"], &[]);
    let records: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let archive = records[0]["archive"].as_str().unwrap().to_owned();
    assert_eq!(records[0]["step_id"], "a");
    assert!(home.blob(&archive).is_file(), "blob {archive}");

    // `cairn artifacts get` extracts a copy.
    let out = home.path().join("copy");
    let got = home.cairn(
        &[
            "artifacts",
            "get",
            &run_id.to_string(),
            "--step",
            "a",
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("dist/out.txt")).unwrap(),
        expected
    );
    let none = home.cairn(
        &[
            "artifacts",
            "get",
            &run_id.to_string(),
            "--step",
            "m",
            "--out",
            "x",
        ],
        &[],
    );
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("stored no artifacts"));

    // Retention deletes the run, its rows, then the blob no row names (once past the grace
    // period, which the test stands in for by ageing the file).
    std::fs::write(
        home.path().join("cairn.yaml"),
        "retention:\n  runs: 1ms\n  keep_runs: 0\n",
    )
    .unwrap();
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(home.blob(&archive))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let gc = home.cairn(&["gc", "--json"], &[]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["database"]["runs"], serde_json::json!([run_id]));
    assert_eq!(report["blobs"], 1, "{report}");
    assert_eq!(home.count("SELECT count(*) FROM artifacts"), 0);
    assert!(!home.blob(&archive).exists());
    let gone = home.cairn(&["artifacts", "list", &run_id.to_string()], &[]);
    assert_eq!(gone.status.code(), Some(2));
}

#[test]
fn a_damaged_artifact_fails_the_dependant_naming_it() {
    let repo = Repo::new();
    repo.commit("README", "app\n");
    let home = Home::new();
    let blobs = home.path().join("blobs/sha256");
    // Without a sandbox a step can reach the home, so `m` plays the disk that went bad.
    let workflow = home.workflow(
        "damaged",
        &format!(
            r#"
name: damaged
steps:
  - id: a
    run: mkdir -p dist && echo ok > dist/out.txt
    artifacts: dist
  - id: m
    run: for blob in {}/*; do echo garbage > "$blob"; done
    depends_on: a
  - id: b
    run: cat dist/out.txt
    depends_on: m
"#,
            blobs.display()
        ),
    );
    let (run_id, code) = home.run(&workflow, &repo, &[("CAIRN_SANDBOX", "off")]);
    assert_eq!(code, Some(1));
    let log = home.logs(run_id, "b");
    assert!(
        log.contains("failed to restore the artifacts of step `a`: blob sha256:")
            && log.contains("is damaged"),
        "{log}"
    );
    let error: String = home
        .db()
        .query_row(
            "SELECT error FROM steps WHERE run_id = ?1 AND step_id = 'b'",
            [run_id],
            |row| row.get(0),
        )
        .unwrap();
    assert!(error.contains("step `a`"), "{error}");
}

#[test]
fn a_declared_artifact_that_matches_nothing_fails_its_step() {
    let repo = Repo::new();
    repo.commit("README", "app\n");
    let home = Home::new();
    let workflow = home.workflow(
        "missing",
        "name: missing\nsteps:\n  - id: a\n    run: 'true'\n    artifacts: [dist/*.tar]\n",
    );
    let (run_id, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(1));
    let log = home.logs(run_id, "a");
    assert!(
        log.contains("`dist/*.tar` matches no file in the workspace"),
        "{log}"
    );
}

const CACHED: &str = r#"
name: cached
steps:
  - id: deps
    run: |
      if [ -f cache/deps.txt ]; then echo "warm: $(cat cache/deps.txt)"; else echo cold; fi
      mkdir -p cache && cp Cargo.lock cache/deps.txt
    cache:
      key: "deps-{{ hash 'Cargo.lock' }}"
      paths: [cache]
      restore_keys: [deps-]
"#;

#[test]
fn caches_hit_miss_fall_back_to_a_prefix_and_stay_under_their_cap() {
    let repo = Repo::new();
    let home = Home::new();
    let workflow = home.workflow("cached", CACHED);
    let key = |lock: &str| format!("deps-{}", sha256_hex(lock.as_bytes()));

    // 1: cold, saved.
    repo.commit("Cargo.lock", "lock v1\n");
    let (first, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(0));
    let log = home.logs(first, "deps");
    assert!(log.contains("cold"), "{log}");
    assert!(
        log.contains(&format!(
            "cache: `{}` missed; nothing restored",
            key("lock v1\n")
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("cache: saved `{}`", key("lock v1\n"))),
        "{log}"
    );

    // 2: the same lockfile hits; nothing is saved again.
    let (second, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(0));
    let log = home.logs(second, "deps");
    assert!(log.contains("warm: lock v1"), "{log}");
    assert!(
        log.contains(&format!("cache: restored `{}`", key("lock v1\n"))),
        "{log}"
    );
    assert!(!log.contains("cache: saved"), "{log}");

    // 3: a changed lockfile misses; the prefix restores the old entry; the new key is saved.
    repo.commit("Cargo.lock", "lock v2\n");
    let (third, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(0));
    let log = home.logs(third, "deps");
    assert!(log.contains("warm: lock v1"), "{log}");
    assert!(
        log.contains(&format!(
            "cache: `{}` missed; restored `{}` by restore key `deps-`",
            key("lock v2\n"),
            key("lock v1\n")
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("cache: saved `{}`", key("lock v2\n"))),
        "{log}"
    );
    assert_eq!(home.cache_keys(), [key("lock v1\n"), key("lock v2\n")]);

    // 4: a cap smaller than one entry: nothing is saved.
    std::fs::write(
        home.path().join("cairn.yaml"),
        "retention:\n  cache_size: 100\n",
    )
    .unwrap();
    repo.commit("Cargo.lock", "lock v3\n");
    let (fourth, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(0));
    let log = home.logs(fourth, "deps");
    assert!(
        log.contains("warm: lock v2"),
        "the newest entry under the prefix: {log}"
    );
    assert!(
        log.contains(&format!(
            "cache: not saved: `{}` would hold",
            key("lock v3\n")
        )) && log.contains("more than the cache limit of 100 bytes"),
        "{log}"
    );
    assert_eq!(home.cache_keys().len(), 2);

    // 5: a cap of two entries and a half: saving a third evicts the least recently used (v1;
    // v2 was just restored).
    let size: i64 = home
        .db()
        .query_row("SELECT max(size) FROM caches", [], |row| row.get(0))
        .unwrap();
    let v1_blob: String = home
        .db()
        .query_row(
            "SELECT blob FROM caches WHERE key = ?1",
            [key("lock v1\n")],
            |row| row.get(0),
        )
        .unwrap();
    std::fs::write(
        home.path().join("cairn.yaml"),
        format!("retention:\n  cache_size: {}\n", size * 5 / 2),
    )
    .unwrap();
    repo.commit("Cargo.lock", "lock v4\n");
    let (fifth, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(0));
    let log = home.logs(fifth, "deps");
    assert!(
        log.contains(&format!("cache: saved `{}`", key("lock v4\n"))),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "cache: evicted `{}` (least recently used)",
            key("lock v1\n")
        )),
        "{log}"
    );
    assert_eq!(home.cache_keys(), [key("lock v2\n"), key("lock v4\n")]);
    assert!(
        !home.blob(&v1_blob).exists(),
        "the evicted entry's blob is deleted"
    );

    // A lowered cap applies at the next `cairn gc`, least recently used first.
    std::fs::write(
        home.path().join("cairn.yaml"),
        format!("retention:\n  cache_size: {}\n", size * 3 / 2),
    )
    .unwrap();
    let gc = home.cairn(&["gc", "--json"], &[]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["cache_evictions"], 1, "{report}");
    assert_eq!(home.cache_keys(), [key("lock v4\n")]);
}

#[test]
fn a_key_over_a_missing_file_fails_the_step_before_it_runs() {
    let repo = Repo::new();
    repo.commit("README", "app\n");
    let home = Home::new();
    let workflow = home.workflow("keyless", CACHED);
    let (run_id, code) = home.run(&workflow, &repo, &[]);
    assert_eq!(code, Some(1));
    let log = home.logs(run_id, "deps");
    assert!(
        log.contains("failed to compute the cache key `deps-{{ hash 'Cargo.lock' }}`: `Cargo.lock` matches no file"),
        "{log}"
    );
    assert!(!log.contains("cold"), "the step did not run: {log}");
}

#[test]
fn a_resumed_run_on_a_fresh_workspace_still_hands_on_artifacts() {
    let repo = Repo::new();
    repo.commit("README", "app\n");
    let home = Home::new();
    let ready = home.path().join("ready");
    let workflow = home.workflow(
        "resumed",
        &format!(
            r#"
name: resumed
steps:
  - id: a
    run: mkdir -p dist && echo "from a" > dist/out.txt
    artifacts: [dist/out.txt]
  - id: m
    depends_on: a
    run: |
      if [ "$CAIRN_ATTEMPT" = 1 ]; then touch {}; sleep 300; fi
  - id: b
    depends_on: m
    run: test "$(cat dist/out.txt)" = "from a"
"#,
            ready.display()
        ),
    );
    // Unsandboxed, so the step can signal the test through a file outside its workspace.
    let mut engine = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "run",
            &workflow,
            "--repo",
            &repo.path.display().to_string(),
            "-q",
        ])
        .env("CAIRN_HOME", home.path())
        .env("CAIRN_SANDBOX", "off")
        .env_remove("CAIRN_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(engine.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    let run_id: i64 = first_line.trim().parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "step m never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    engine.kill().unwrap();
    engine.wait().unwrap();

    // The checkout is gone: resume makes a fresh one, and `b` gets `a`'s file from the store.
    std::fs::remove_dir_all(home.path().join(format!("work/run-{run_id}"))).unwrap();
    let resumed = home.cairn(
        &["resume", &run_id.to_string(), "-q"],
        &[("CAIRN_SANDBOX", "off")],
    );
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}\nb: {}",
        String::from_utf8_lossy(&resumed.stderr),
        home.logs(run_id, "b")
    );
    assert!(
        home.logs(run_id, "b")
            .contains("artifacts: restored 1 file")
    );
}
