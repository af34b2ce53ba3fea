//! Finding and killing processes left behind by an engine that died mid-attempt.
//!
//! Each attempt's processes carry `CAIRN_ATTEMPT_TOKEN` in their environment. Before a step is
//! attempted again on resume, any process still carrying its token is killed, so an orphan of
//! the dead engine never runs side by side with the new attempt.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const TOKEN_VARIABLE: &str = "CAIRN_ATTEMPT_TOKEN";

/// Kills every process whose environment holds `CAIRN_ATTEMPT_TOKEN=<token>`; returns their
/// pids. Processes of other users cannot be read and are not touched.
pub fn kill_orphans(token: &str) -> Vec<i32> {
    let needle = format!("{TOKEN_VARIABLE}={token}");
    kill_where(|variable| variable == needle.as_bytes())
}

/// Kills every process whose token starts with `prefix` (all steps of a run: `db/run/`).
pub fn kill_token_prefix(prefix: &str) -> Vec<i32> {
    let needle = format!("{TOKEN_VARIABLE}={prefix}");
    kill_where(|variable| variable.starts_with(needle.as_bytes()))
}

fn kill_where(matches: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(&matches)
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed.push(pid);
        }
    }
    killed
}
