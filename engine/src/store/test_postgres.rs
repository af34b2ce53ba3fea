//! A private PostgreSQL server for the store's tests: initialized in a temporary directory and
//! started on a free port of 127.0.0.1 on first use, one per test process, with a fresh
//! database per test. It runs as the `postgres` user when the tests run as root (PostgreSQL
//! refuses root) and dies with the test process (parent-death signal), so nothing is left
//! running; `scripts/setup.sh` installs Debian's `postgresql` package for it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test process's own.
pub struct Server {
    port: u16,
    /// `listen_addresses`: 127.0.0.1, or every address for clients in containers.
    listen: &'static str,
    bin: PathBuf,
    dir: PathBuf,
    user: Option<(u32, u32)>,
}

/// A new, empty database on the test process's shared server: its URL.
pub fn database() -> String {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(Server::start) {
        Ok(server) => server.database(),
        Err(reason) => panic!("no PostgreSQL server for the tests: {reason}"),
    }
}

impl Server {
    /// A server for one test alone (one it may restart); panics when none can start.
    pub fn dedicated() -> Server {
        Server::start().unwrap_or_else(|reason| panic!("no PostgreSQL server: {reason}"))
    }

    /// A server of one test's own that also accepts clients on other addresses (containers
    /// on a Docker network reach it through their gateway), without passwords like the rest.
    pub fn dedicated_for_containers() -> Server {
        let start = || -> Result<Server, String> {
            let mut server = init()?;
            server.listen = "*";
            let hba = server.dir.join("data/pg_hba.conf");
            let mut rules =
                std::fs::read_to_string(&hba).map_err(|e| format!("read pg_hba: {e}"))?;
            rules.push_str("host all all 0.0.0.0/0 trust\n");
            std::fs::write(&hba, rules).map_err(|e| format!("write pg_hba: {e}"))?;
            server.launch()?;
            Ok(server)
        };
        start().unwrap_or_else(|reason| panic!("no PostgreSQL server: {reason}"))
    }

    /// The server's port (on every address it listens on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database on this server: its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "cairn_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = format!("postgres://cairn@127.0.0.1:{}/postgres", self.port);
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server at {admin}: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        format!("postgres://cairn@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (a fast shutdown: sessions are cut) and starts it again on the same
    /// port, with the same data; returns once it accepts connections.
    pub fn restart(&self) {
        self.stop();
        self.resume();
    }

    /// Stops the server (a fast shutdown: sessions are cut); [`Server::resume`] starts it again.
    pub fn stop(&self) {
        let output = command(&self.bin.join("pg_ctl"), self.user)
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.dir.join("data"))
            .output()
            .unwrap_or_else(|e| panic!("run pg_ctl: {e}"));
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts a stopped server again on the same port, with the same data; returns once it
    /// accepts connections.
    pub fn resume(&self) {
        self.launch().unwrap_or_else(|e| panic!("restart: {e}"));
    }

    fn start() -> Result<Server, String> {
        let server = init()?;
        server.launch()?;
        Ok(server)
    }

    /// Starts `postgres` and waits until it accepts connections.
    fn launch(&self) -> Result<(), String> {
        let postgres = self.bin.join("postgres");
        let (dir, user, port, listen) = (self.dir.clone(), self.user, self.port, self.listen);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .map_err(|e| format!("open the server log: {e}"))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        // The server's parent is this thread, which never ends: the parent-death signal
        // fires when the test process exits, not when one test's thread does.
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let spawned = command(&postgres, user)
                    .arg("-D")
                    .arg(dir.join("data"))
                    .arg("-k")
                    .arg(&dir)
                    .args(["-p", &port.to_string(), "-c"])
                    .arg(format!("listen_addresses={listen}"))
                    .args(["-c", "max_connections=300"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn();
                let _ = ready_tx.send(spawned.map(|_| ()).map_err(|e| e.to_string()));
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| format!("start a thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("start postgres: {e}"))?;
        let url = format!("postgres://cairn@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&url, postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => {
                    return Err(format!(
                        "the server did not accept connections in 60 s: {e}"
                    ));
                }
            }
        }
    }
}

/// A new data directory, initialized, and a free port for it.
fn init() -> Result<Server, String> {
    let bin = binaries().ok_or(
        "initdb and postgres not found on PATH or under /usr/lib/postgresql/*/bin \
         (install Debian's postgresql package; scripts/setup.sh does)",
    )?;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cairn-test-postgres-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    remove_leftovers();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let user = as_user()?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let output = command(&bin.join("initdb"), user)
        .args([
            "-U",
            "cairn",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg("-D")
        .arg(&data)
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("find a free port: {e}"))?
        .port();
    Ok(Server {
        port,
        listen: "127.0.0.1",
        bin,
        dir,
        user,
    })
}

/// `program` run as `user` (when the tests run as root) and sent SIGQUIT (PostgreSQL's
/// immediate shutdown) when its parent thread ends.
fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only async-signal-safe calls: setgid, setuid, prctl.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // After setuid: a change of credentials clears the parent-death signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// As root, the `postgres` user's ids (PostgreSQL does not run as root).
fn as_user() -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's user.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
        })
        .map(Some)
        .ok_or_else(|| "running as root and there is no `postgres` user".to_string())
}

/// The directory holding `initdb` and `postgres`.
fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| {
            ["initdb", "postgres", "pg_ctl"]
                .iter()
                .all(|p| dir.join(p).is_file())
        })
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort_by_key(|bin| {
            bin.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
        });
        versions.pop()
    })
}

/// Data directories of earlier test processes that are gone.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("cairn-test-postgres-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
