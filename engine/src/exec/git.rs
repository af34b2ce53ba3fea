//! Running `git`: every call has a deadline, runs in its own process group (so a hung
//! `git-remote-https` or `ssh` below it is killed with it), never waits on a credential
//! prompt, and fails with a message that says what was wrong: a missing directory, git not
//! installed, or git's own error text.
//!
//! [`git`] blocks its thread and is for code already on a blocking thread (workspace
//! preparation, agents' `spawn_blocking` work); async code uses [`git_async`], which runs on
//! `tokio::process` and does not hold a runtime thread while git works.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Deadline of a git call that does not name its own: long enough for a large clone on a slow
/// disk, short enough that a hung network call cannot hold a step (or `serve`) forever.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Runs `git ARGS` in `dir` and returns its stdout, or a message with its stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    git_within(dir, args, GIT_TIMEOUT)
}

/// [`git`] with its own deadline.
pub fn git_within(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    check_dir(dir)?;
    let mut command = Command::new("git");
    prepare(&mut command, dir, args);
    let mut child = command.spawn().map_err(|error| spawn_error(&error))?;
    // Read both pipes on their own threads: a chatty git must never block on a full pipe
    // while this thread waits for it to exit.
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(timed_out(dir, args, timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Err(format!("failed to wait for git: {error}")),
        }
    };
    let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    finish(dir, args, status.success(), &stdout, &stderr)
}

/// Runs `git ARGS` in `dir` on the async runtime, killed (with its process group) after
/// `timeout`.
pub async fn git_async(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    check_dir(dir)?;
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|error| spawn_error(&error))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => finish(
            dir,
            args,
            output.status.success(),
            &output.stdout,
            &output.stderr,
        ),
        Ok(Err(error)) => Err(format!("failed to wait for git: {error}")),
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            Err(timed_out(dir, args, timeout))
        }
    }
}

fn prepare(command: &mut Command, dir: &Path, args: &[&str]) {
    use std::os::unix::process::CommandExt;
    command
        .args(args)
        .current_dir(dir)
        // Nobody is at a terminal to answer a credential prompt: fail instead of hanging.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
}

/// A missing directory makes spawning fail with "No such file or directory", which reads as
/// if git were missing; say which one it is.
fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(_) => Err(format!("the directory {} does not exist", dir.display())),
    }
}

fn spawn_error(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound {
        "git is not installed (no `git` on PATH)".to_owned()
    } else {
        format!("failed to run git: {error}")
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn timed_out(dir: &Path, args: &[&str], timeout: Duration) -> String {
    format!(
        "`git {}` in {} did not finish within {}; it was stopped",
        args.join(" "),
        dir.display(),
        super::humanize(timeout)
    )
}

fn finish(
    dir: &Path,
    args: &[&str],
    success: bool,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<String, String> {
    if success {
        Ok(String::from_utf8_lossy(stdout).into_owned())
    } else {
        Err(format!(
            "`git {}` failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(stderr).trim()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_named_as_such() {
        let error = git(Path::new("/nope/not/here"), &["status"]).unwrap_err();
        assert_eq!(error, "the directory /nope/not/here does not exist");
    }

    #[test]
    fn a_hung_git_is_stopped_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        // `git daemon`-like hang without a network: a git alias that sleeps.
        let started = Instant::now();
        let error = git_within(
            dir.path(),
            &["-c", "alias.hang=!sleep 30", "hang"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(error.contains("did not finish within"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn the_async_call_has_the_same_deadline_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let version = git_async(dir.path(), &["--version"], GIT_TIMEOUT)
            .await
            .unwrap();
        assert!(version.starts_with("git version"), "{version}");
        let error = git_async(
            dir.path(),
            &["-c", "alias.hang=!sleep 30", "hang"],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(error.contains("did not finish within"), "{error}");
        let error = git_async(Path::new("/nope"), &["status"], GIT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
    }
}
