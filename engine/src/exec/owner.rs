//! Who holds a lease: this engine process, identified so that others can tell it is gone.
//!
//! An owner id is `host:pid:start-time`. The start time (from `/proc/<pid>/stat`) makes a
//! recycled pid look like a different process, so a crashed engine's runs are reclaimed at once
//! instead of after the lease expires.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    /// The identity of the current process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner(format!(
            "{}:{}:{}",
            hostname(),
            pid,
            process_start_time(pid).unwrap_or(0)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the process named by an owner id still exists. Owners on other hosts cannot be
/// checked from here and are presumed alive until their lease expires.
pub fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    if host != hostname() {
        return true;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return true;
    };
    process_start_time(pid) == Some(start)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current();
        assert!(owner_alive(me.as_str()));
        let ghost = format!("{}:{}:1", hostname(), u32::MAX - 7);
        assert!(!owner_alive(&ghost));
        assert!(
            owner_alive("elsewhere:1:1"),
            "other hosts are presumed alive"
        );
    }
}
