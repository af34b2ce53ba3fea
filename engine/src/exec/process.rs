//! Running a `run:` step: `sh -c` in its own process group, output streamed line by line,
//! the whole group killed on timeout or cancellation, outputs read from `$CAIRN_OUTPUT`.
//!
//! Timeout and cancellation act on the attempt, never on end of file of its pipes: a daemon
//! that escaped the group (`setsid cmd &`) is found by the attempt token in its environment
//! and killed with the group, and output is drained for a bounded time only.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::logs::{LogSink, MAX_LINE_BYTES};
use super::machine::Outcome;
use super::orphans::kill_orphans;
use super::retry::FailureClass;

/// Time between SIGTERM and SIGKILL when a step must stop.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long output already written is drained after the step's processes are gone. A process
/// that escaped both its group and its token (a daemon that cleared its environment) may hold
/// the pipes open for ever; the step ends regardless.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub struct ProcessSpec {
    pub command: String,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// File the step may write `key=value` lines to; they become its outputs.
    pub output_file: PathBuf,
    /// The attempt's `CAIRN_ATTEMPT_TOKEN` (also in `env`): processes that left the step's
    /// process group (`setsid`, a double fork) are found by it and killed with the group.
    pub token: String,
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
            kill_orphans(&spec.token);
            drain(readers).await;
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
    // Children the step left behind, in its group or escaped from it, must not outlive it, and
    // must not hold its output pipes open (which would keep the step "running" past its exit).
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
    }
    let escaped = kill_orphans(&spec.token);
    if !escaped.is_empty() {
        logs.line(
            "engine",
            format!(
                "killed {} process(es) the step left running outside its process group",
                escaped.len()
            ),
        );
    }
    drain(readers).await;
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

/// Waits for the output readers to reach end of file, at most [`DRAIN_GRACE`]; a reader still
/// blocked after that is abandoned (its task is aborted).
async fn drain(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    for mut reader in readers.into_iter().flatten() {
        if tokio::time::timeout_at(deadline, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

fn pump(
    stream: impl AsyncRead + Unpin + Send + 'static,
    name: &'static str,
    logs: LogSink,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Raw bytes, decoded lossily: a step printing invalid UTF-8 must not lose its pipe.
        // A line is held up to MAX_LINE_BYTES; the rest of an endless line is skipped, so a
        // step printing without newlines cannot grow the engine's memory.
        let mut reader = BufReader::new(stream);
        let mut line: Vec<u8> = Vec::new();
        let mut cut = 0usize;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok(chunk) => chunk,
                Err(error) => {
                    logs.line("engine", format!("failed to read {name}: {error}"));
                    break;
                }
            };
            if chunk.is_empty() {
                if !line.is_empty() || cut > 0 {
                    emit(&logs, name, &line, cut);
                }
                break;
            }
            let (piece, ends_line) = match chunk.iter().position(|&byte| byte == b'\n') {
                Some(end) => (&chunk[..end], true),
                None => (chunk, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&piece[..piece.len().min(room)]);
            cut += piece.len().saturating_sub(room);
            let used = piece.len() + usize::from(ends_line);
            reader.consume(used);
            if ends_line {
                emit(&logs, name, &line, cut);
                line.clear();
                cut = 0;
            }
        }
    })
}

fn emit(logs: &LogSink, name: &'static str, line: &[u8], cut: usize) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if cut == 0 {
        logs.line(name, text);
    } else {
        logs.line(
            name,
            format!("{text}… [{cut} more bytes of this line not kept]"),
        );
    }
}

/// `key=value` lines and `key<<DELIMITER` … `DELIMITER` blocks (a value of several lines),
/// like GitHub's `$GITHUB_OUTPUT`; a value that parses as JSON is kept as JSON so that
/// `risk=high` and `count=3` compare naturally in `when:` conditions.
fn read_outputs(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read outputs from {}: {error}", path.display()))?;
    let mut outputs = Map::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |number: usize| format!("{}:{}", path.display(), number + 1);
        let block = line
            .split_once("<<")
            .filter(|(key, delimiter)| !key.contains('=') && !delimiter.trim().is_empty());
        let (key, value) = match block {
            Some((key, delimiter)) => {
                let delimiter = delimiter.trim();
                let mut value: Vec<&str> = Vec::new();
                loop {
                    match lines.next() {
                        Some((_, line)) if line == delimiter => break,
                        Some((_, line)) => value.push(line),
                        None => {
                            return Err(format!(
                                "{}: output `{}` opens a block with `<<{delimiter}` that no `{delimiter}` line closes",
                                at(number),
                                key.trim()
                            ));
                        }
                    }
                }
                (key, value.join("\n"))
            }
            None => {
                let Some((key, value)) = line.split_once('=') else {
                    return Err(format!(
                        "{}: output line is not `key=value` nor `key<<DELIMITER`: {line:?}",
                        at(number)
                    ));
                };
                (key, value.to_owned())
            }
        };
        let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
        outputs.insert(key.trim().to_string(), value);
    }
    Ok(Value::Object(outputs))
}

pub fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 && secs < 10 {
        format!("{}ms", duration.as_millis())
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn outputs_take_lines_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(
            &path,
            "risk=high\nnotes<<EOF\nfirst = line\ncount=3\nEOF\ncount=3\nempty<<X\nX\n",
        )
        .unwrap();
        let outputs = read_outputs(&path).unwrap();
        assert_eq!(outputs["risk"], "high");
        assert_eq!(outputs["notes"], "first = line\ncount=3");
        assert_eq!(outputs["count"], 3);
        assert_eq!(outputs["empty"], "");
        std::fs::write(&path, "ok=1\nnotes<<EOF\nnever closed\n").unwrap();
        let error = read_outputs(&path).unwrap_err();
        assert!(
            error.contains("out:2: output `notes` opens a block with `<<EOF`"),
            "{error}"
        );
    }
}
