//! Shared helpers for Cairn's end-to-end tests: find the real `cairn` binary, give each test
//! its own `CAIRN_HOME`, run the binary with a time limit (killing it on drop), read the state
//! database the way an operator would, and look for processes a test left behind.
//!
//! Every test drives the binary exactly as a user does; the database is only read, never
//! written, except by the store tests that corrupt it on purpose. See `DESIGN.md`, "Durable
//! execution model", for what the tests prove.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use tempfile::TempDir;

/// How long a `cairn` command may take before a test calls it hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The `cairn` binary under test: `$CAIRN_BIN`, or `target/<profile>/cairn` next to the test
/// executable (`target/<profile>/deps/<test>-<hash>`).
pub fn cairn_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CAIRN_BIN points at {}, which does not exist",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.is_file(),
        "the cairn binary is missing at {}: build it first with `cargo build -p cairn-engine` \
         (or point CAIRN_BIN at one)",
        bin.display()
    );
    bin
}

/// What a finished `cairn` command left behind.
#[derive(Debug)]
pub struct Output {
    /// `None` when the process died from a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The run id `cairn run` prints on stdout's first line.
    pub fn run_id(&self) -> i64 {
        first_line_id(&self.stdout)
            .unwrap_or_else(|| panic!("no run id on stdout's first line:\n{self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn first_line_id(stdout: &str) -> Option<i64> {
    stdout
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
}

/// One test's private world: a temporary directory holding `home/` (the `CAIRN_HOME`),
/// workflow files and whatever the steps write. Dropping it kills every process that still
/// carries its `CAIRN_HOME` (engines and the steps they started), then deletes the directory.
pub struct Sandbox {
    dir: TempDir,
    home: PathBuf,
    spawned: AtomicUsize,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("cairn-e2e-")
            .tempdir()
            .expect("failed to create a temporary directory");
        let home = dir.path().join("home");
        Sandbox {
            dir,
            home,
            spawned: AtomicUsize::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn db_path(&self) -> PathBuf {
        self.home.join("cairn.db")
    }

    /// A path inside the sandbox (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// Writes a file inside the sandbox and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
        path
    }

    /// The text of a sandbox file, empty when it does not exist.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// `cairn ARGS` with this sandbox's `CAIRN_HOME`, run from the sandbox root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(cairn_bin());
        command
            .args(args)
            .current_dir(self.root())
            .env("CAIRN_HOME", &self.home)
            // These tests exercise the engine with steps that keep journals beside the test's
            // files, outside their workspaces: what the sandbox denies. `tests/sandbox.rs`
            // turns it on (`CAIRN_SANDBOX=required`).
            .env("CAIRN_SANDBOX", "off")
            .env_remove("CAIRN_LOG")
            .stdin(Stdio::null());
        command
    }

    /// `cairn secret set NAME` with `value` on stdin, as an operator types it.
    pub fn set_secret(&self, name: &str, value: &str) {
        use std::io::Write as _;
        let mut set = self
            .command(&["secret", "set", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn secret set");
        set.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{value}\n").as_bytes())
            .expect("write the value");
        let set = set.wait_with_output().expect("cairn secret set");
        assert!(
            set.status.success(),
            "cairn secret set {name}: {}",
            String::from_utf8_lossy(&set.stderr)
        );
    }

    /// Runs `cairn ARGS` to completion (at most [`COMMAND_TIMEOUT`]).
    pub fn cairn(&self, args: &[&str]) -> Output {
        self.cairn_within(args, COMMAND_TIMEOUT)
    }

    /// Runs `cairn ARGS` to completion, failing the test if it takes longer than `limit`.
    pub fn cairn_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut running = self.spawn(args);
        match running.wait_within(limit) {
            Some(_) => running.output(),
            None => {
                running.kill9();
                panic!(
                    "`cairn {}` did not finish within {limit:?}\n{}",
                    args.join(" "),
                    running.output()
                );
            }
        }
    }

    /// Starts `cairn ARGS` in the background; stdout and stderr go to files in the sandbox (so
    /// a full pipe never blocks the engine, and a killed engine leaves them readable).
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_with_env(args, &[])
    }

    /// [`Sandbox::spawn`] with extra environment variables.
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let number = self.spawned.fetch_add(1, Ordering::Relaxed);
        let logs = self.root().join("cairn-output");
        std::fs::create_dir_all(&logs).expect("failed to create the output directory");
        let stdout = logs.join(format!("{number}.stdout"));
        let stderr = logs.join(format!("{number}.stderr"));
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(File::create(&stdout).expect("failed to create a stdout file"))
            .stderr(File::create(&stderr).expect("failed to create a stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", cairn_bin().display()));
        Running {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// A connection to the state database, or `None` when it does not exist yet (this never
    /// creates it).
    pub fn try_db(&self) -> Option<Connection> {
        let path = self.db_path();
        if !path.exists() {
            return None;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        conn.busy_timeout(Duration::from_secs(10)).ok()?;
        Some(conn)
    }

    pub fn db(&self) -> Connection {
        self.try_db()
            .unwrap_or_else(|| panic!("no state database at {}", self.db_path().display()))
    }

    /// Pids of live processes started under this sandbox's `CAIRN_HOME`: engines, and step
    /// processes (which get only `CAIRN_WORKSPACE`, a directory below it, of the engine's).
    pub fn processes(&self) -> Vec<i32> {
        let needle = format!("CAIRN_HOME={}", self.home.display());
        let workspace = format!("CAIRN_WORKSPACE={}/", self.home.display());
        processes_where(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|environ| {
                    environ.split(|b| *b == 0).any(|var| {
                        var == needle.as_bytes() || var.starts_with(workspace.as_bytes())
                    })
                })
                .unwrap_or(false)
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A `cairn` process started in the background; killed with SIGKILL when dropped.
pub struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .expect("failed to poll a child process");
        }
        self.status
    }

    /// SIGKILL (the engine only: its steps run in their own process groups and survive, as
    /// they would after a crash) and reap it. Returns whether the SIGKILL is what ended it
    /// (false if it had exited on its own first).
    pub fn kill9(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        if self.try_wait().is_some() {
            return false;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("failed to reap a killed child");
        self.status = Some(status);
        status.signal() == Some(Signal::SIGKILL as i32)
    }

    /// Stdout and stderr so far, and the exit code if it has exited.
    pub fn output(&mut self) -> Output {
        let status = self.try_wait();
        Output {
            code: status.and_then(|s| s.code()),
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    /// The run id once `cairn run` has printed it.
    pub fn printed_run_id(&self) -> Option<i64> {
        first_line_id(&std::fs::read_to_string(&self.stdout).unwrap_or_default())
    }

    /// Waits for `cairn run` to print its run id.
    pub fn wait_for_run_id(&mut self, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(id) = self.printed_run_id() {
                return id;
            }
            if self.try_wait().is_some() || Instant::now() >= deadline {
                panic!("`cairn run` printed no run id\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids (other than this process) for which `matches(pid)` holds.
pub fn processes_where(mut matches: impl FnMut(i32) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && matches(pid))
        .collect()
}

/// Live processes whose command line contains `marker`, with that command line. Zombies have
/// an empty command line, so a killed process that is not yet reaped does not count.
pub fn processes_with_marker(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for pid in processes_where(|_| true) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            found.push((pid, text));
        }
    }
    found
}

/// Makes `<dir>/<marker>`, a symlink to `sleep`, so that a step can start sleepers whose
/// command line carries a unique marker; returns the path to run.
pub fn marked_sleep(sandbox: &Sandbox, marker: &str) -> PathBuf {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("no sleep binary in /usr/bin or /bin");
    let bin = sandbox.path("bin");
    std::fs::create_dir_all(&bin).expect("failed to create bin/");
    let link = bin.join(marker);
    std::os::unix::fs::symlink(&sleep, &link).expect("failed to link the marked sleep");
    // A multi-call coreutils would not know itself under this name.
    let works = Command::new(&link)
        .arg("0")
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        works,
        "{} does not run as `sleep` under another name",
        sleep.display()
    );
    link
}

/// A unique marker for process command lines.
pub fn unique_marker(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// One row of the `events` table.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    pub run_id: i64,
    pub step_id: Option<String>,
    pub attempt: Option<i64>,
    pub kind: String,
    pub data: Value,
    pub at: i64,
}

/// One row of the `attempts` table.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i64,
    pub state: String,
    pub failure: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A run's events in order.
pub fn events(conn: &Connection, run_id: i64) -> Vec<Event> {
    let mut stmt = conn
        .prepare(
            "SELECT seq, run_id, step_id, attempt, kind, data, at FROM events
             WHERE run_id = ?1 ORDER BY seq",
        )
        .expect("failed to query events");
    stmt.query_map([run_id], |row| {
        let data: String = row.get(5)?;
        Ok(Event {
            seq: row.get(0)?,
            run_id: row.get(1)?,
            step_id: row.get(2)?,
            attempt: row.get(3)?,
            kind: row.get(4)?,
            data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
            at: row.get(6)?,
        })
    })
    .expect("failed to query events")
    .collect::<rusqlite::Result<_>>()
    .expect("failed to read events")
}

/// A run's state as stored (`running`, `succeeded`, ...), or `None` if there is no such run.
pub fn run_state(conn: &Connection, run_id: i64) -> Option<String> {
    conn.query_row("SELECT state FROM runs WHERE id = ?1", [run_id], |row| {
        row.get(0)
    })
    .optional()
    .expect("failed to query runs")
}

/// A run's stored `reason`.
pub fn run_reason(conn: &Connection, run_id: i64) -> Option<String> {
    conn.query_row("SELECT reason FROM runs WHERE id = ?1", [run_id], |row| {
        row.get(0)
    })
    .optional()
    .expect("failed to query runs")
    .flatten()
}

/// Every run id, ascending.
pub fn run_ids(conn: &Connection) -> Vec<i64> {
    let mut stmt = conn
        .prepare("SELECT id FROM runs ORDER BY id")
        .expect("failed to query runs");
    stmt.query_map([], |row| row.get(0))
        .expect("failed to query runs")
        .collect::<rusqlite::Result<_>>()
        .expect("failed to read runs")
}

/// Step id → stored state for one run.
pub fn step_states(conn: &Connection, run_id: i64) -> BTreeMap<String, String> {
    let mut stmt = conn
        .prepare("SELECT step_id, state FROM steps WHERE run_id = ?1")
        .expect("failed to query steps");
    stmt.query_map([run_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("failed to query steps")
        .collect::<rusqlite::Result<_>>()
        .expect("failed to read steps")
}

/// One step's attempts in order.
pub fn attempts(conn: &Connection, run_id: i64, step_id: &str) -> Vec<Attempt> {
    let mut stmt = conn
        .prepare(
            "SELECT attempt, state, failure, exit_code, error, started_at, finished_at
             FROM attempts WHERE run_id = ?1 AND step_id = ?2 ORDER BY attempt",
        )
        .expect("failed to query attempts");
    stmt.query_map(rusqlite::params![run_id, step_id], |row| {
        Ok(Attempt {
            attempt: row.get(0)?,
            state: row.get(1)?,
            failure: row.get(2)?,
            exit_code: row.get(3)?,
            error: row.get(4)?,
            started_at: row.get(5)?,
            finished_at: row.get(6)?,
        })
    })
    .expect("failed to query attempts")
    .collect::<rusqlite::Result<_>>()
    .expect("failed to read attempts")
}

/// `PRAGMA integrity_check`, lines joined with "; ".
pub fn integrity_check(conn: &Connection) -> String {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .expect("failed to prepare");
    let lines: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .expect("failed to run integrity_check")
        .collect::<rusqlite::Result<_>>()
        .expect("failed to read integrity_check");
    lines.join("; ")
}

/// `cairn status RUN --json`, parsed.
pub fn status_json(sandbox: &Sandbox, run_id: i64) -> Value {
    let output = sandbox.cairn(&["status", &run_id.to_string(), "--json"]);
    assert_eq!(
        output.code,
        Some(0),
        "`cairn status --json` failed\n{output}"
    );
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("`cairn status --json` printed invalid JSON ({e})\n{output}"))
}

/// The lines of a text file, none when it does not exist (yet): journals steps append to.
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Quotes a path for a `sh -c` command inside YAML (single quotes, which YAML block scalars
/// and `sh` both keep as they are).
pub fn sh_quote(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(
        !text.contains('\''),
        "paths with single quotes are not supported: {text}"
    );
    format!("'{text}'")
}
