//! Running a `run:` step: `sh -c` in its own process group, output streamed line by line,
//! the whole group killed on timeout or cancellation, outputs read from `$CAIRN_OUTPUT`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::logs::LogSink;
use super::machine::Outcome;
use super::retry::FailureClass;

/// Time between SIGTERM and SIGKILL when a step must stop.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub struct ProcessSpec {
    pub command: String,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// File the step may write `key=value` lines to; they become its outputs.
    pub output_file: PathBuf,
    /// The step's declared sandbox exceptions and limits, and the workflow's requirement.
    pub sandbox: crate::pipeline::StepSandbox,
    pub requirement: crate::pipeline::SandboxRequirement,
}

pub async fn run_command(
    spec: ProcessSpec,
    logs: LogSink,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    if let Err(error) = std::fs::write(&spec.output_file, b"") {
        return spawn_failure(format!(
            "failed to create the output file {}: {error}",
            spec.output_file.display()
        ));
    }
    // The sandbox makes the `sh -c` command: namespaces, clean environment, limits.
    let plan = super::sandbox::Plan {
        script: &spec.command,
        cwd: &spec.cwd,
        writable: vec![spec.output_file.clone()],
        env: spec.env.clone(),
        step: &spec.sandbox,
        requirement: spec.requirement,
    };
    let super::sandbox::Sandboxed { mut command, guard } =
        match super::sandbox::current().command(&plan) {
            Ok(sandboxed) => sandboxed,
            Err(error) => return spawn_failure(error.to_string()),
        };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return spawn_failure(format!(
                "failed to start `sh -c` in {}: {error}",
                spec.cwd.display()
            ));
        }
    };
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let readers = [
        child
            .stdout
            .take()
            .map(|out| pump(out, "stdout", logs.clone())),
        child
            .stderr
            .take()
            .map(|err| pump(err, "stderr", logs.clone())),
    ];
    let deadline = deadline(spec.timeout);
    let cancelled = cancelled(&mut cancel);
    let stop = tokio::select! {
        status = child.wait() => Ok(status),
        () = deadline => Err(true),
        () = cancelled => Err(false),
    };
    let status = match stop {
        Ok(status) => status,
        Err(timed_out) => {
            terminate(group, &mut child).await;
            for reader in readers.into_iter().flatten() {
                let _ = reader.await;
            }
            if !timed_out {
                return Outcome::Cancelled;
            }
            let timeout = spec.timeout.unwrap_or_default();
            logs.line(
                "engine",
                format!("timed out after {timeout:?}; process group killed"),
            );
            return Outcome::Failed {
                class: FailureClass::Timeout,
                exit_code: None,
                message: format!("timed out after {}", humanize(timeout)),
            };
        }
    };
    // Children the step left behind in its group must not outlive it, and must not hold its
    // output pipes open (which would keep the step "running" past its own exit).
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    // A limit's kill is the step's own doing: an error saying which limit, not retried.
    if let Some(message) = status.as_ref().ok().and_then(|s| guard.explain(s)) {
        logs.line("engine", message.clone());
        return Outcome::Failed {
            class: FailureClass::ExitCode,
            exit_code: status.ok().and_then(|s| s.code()),
            message,
        };
    }
    match status {
        Err(error) => spawn_failure(format!("failed to wait for the step's process: {error}")),
        Ok(status) if status.success() => match read_outputs(&spec.output_file) {
            Ok(outputs) => Outcome::Succeeded { outputs },
            Err(message) => Outcome::Failed {
                class: FailureClass::ExitCode,
                exit_code: Some(0),
                message,
            },
        },
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Outcome::Failed {
                    class: FailureClass::ExitCode,
                    exit_code: Some(code),
                    message: format!("exited with status {code}"),
                },
                (None, signal) => Outcome::Failed {
                    class: FailureClass::Killed,
                    exit_code: None,
                    message: format!("killed by signal {}", signal.unwrap_or(0)),
                },
            }
        }
    }
}

/// Resolves when `timeout` has passed; never without one.
pub async fn deadline(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the run is cancelled; never if the sender goes away without cancelling.
pub async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    while !*cancel.borrow() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn spawn_failure(message: String) -> Outcome {
    Outcome::Failed {
        class: FailureClass::Spawn,
        exit_code: None,
        message,
    }
}

async fn terminate(group: Option<Pid>, child: &mut tokio::process::Child) {
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
            let _ = killpg(group, Signal::SIGKILL);
            return;
        }
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

fn pump(
    stream: impl AsyncRead + Unpin + Send + 'static,
    name: &'static str,
    logs: LogSink,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Raw bytes, decoded lossily: a step printing invalid UTF-8 must not lose its pipe.
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    logs.line(name, text.trim_end_matches(['\n', '\r']));
                }
                Err(error) => {
                    logs.line("engine", format!("failed to read {name}: {error}"));
                    break;
                }
            }
        }
    })
}

/// `key=value` lines, like GitHub's `$GITHUB_OUTPUT`; a value that parses as JSON is kept as
/// JSON so that `risk=high` and `count=3` compare naturally in `when:` conditions.
fn read_outputs(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read outputs from {}: {error}", path.display()))?;
    let mut outputs = Map::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: output line is not `key=value`: {line:?}",
                path.display(),
                number + 1
            ));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        outputs.insert(key.trim().to_string(), value);
    }
    Ok(Value::Object(outputs))
}

pub fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 && secs < 10 {
        format!("{}ms", duration.as_millis())
    } else if secs >= 60 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}
