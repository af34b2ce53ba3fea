//! The bubblewrap command line for one step: the whole system read-only, Cairn's state and
//! credentials hidden, a private `/tmp`, `/proc` and `/dev`, the workspace (and declared
//! places) writable, new PID/IPC/UTS/user namespaces, and a new network namespace for
//! `network: none`. bubblewrap itself sets `PR_SET_NO_NEW_PRIVS` and drops capabilities.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::pipeline::Network;

/// What one bubblewrap invocation exposes.
pub struct View<'a> {
    pub hidden: &'a [PathBuf],
    pub readable: &'a [PathBuf],
    pub writable: &'a [PathBuf],
    pub network: Network,
    pub cwd: &'a Path,
}

pub fn arguments(view: &View<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    push(&[
        "--die-with-parent".as_ref(),
        "--unshare-all".as_ref(),
        "--ro-bind".as_ref(),
        "/".as_ref(),
        "/".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    if view.network == Network::Host {
        push(&["--share-net".as_ref()]);
    }
    for path in view.hidden {
        // Under /tmp it is gone already; elsewhere a directory gets an empty tmpfs and a file
        // (or socket) an empty device file on top.
        if path.starts_with("/tmp") || !path.exists() {
            continue;
        }
        if path.is_dir() {
            push(&["--tmpfs".as_ref(), path.as_os_str()]);
        } else {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), path.as_os_str()]);
        }
    }
    for path in view.readable {
        push(&["--ro-bind-try".as_ref(), path.as_os_str(), path.as_os_str()]);
    }
    for path in view.writable {
        push(&["--bind-try".as_ref(), path.as_os_str(), path.as_os_str()]);
    }
    push(&["--chdir".as_ref(), view.cwd.as_os_str()]);
    args
}

/// The object directories a `git clone --shared` checkout borrows from: without them git
/// inside the sandbox finds no objects, since the source repository may be hidden.
pub fn git_alternates(cwd: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(cwd.join(".git/objects/info/alternates"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}
