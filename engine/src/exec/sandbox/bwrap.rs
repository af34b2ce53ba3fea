//! The bubblewrap command line for one step: the whole system read-only (container engines'
//! mount-heavy directories left out), Cairn's state and credentials hidden, a private `/tmp`, `/proc` and `/dev`, the workspace (and declared
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
    // Hidden directories that nothing the step may see lies under are left out of the view
    // instead of covered: binding a directory copies every mount beneath it, and a container
    // engine mounts and unmounts layers under its directories all the time; one vanishing
    // mid-copy failed a step ("Can't bind mount /oldroot/ on /newroot/: … Invalid argument").
    let visible = || {
        view.readable
            .iter()
            .chain(view.writable)
            .map(PathBuf::as_path)
            .chain([view.cwd])
    };
    let skipped: Vec<&Path> = view
        .hidden
        .iter()
        .map(PathBuf::as_path)
        .filter(|path| path.is_dir() && !path.starts_with("/tmp"))
        .filter(|path| !visible().any(|v| v.starts_with(path)))
        .collect();
    let mut args: Vec<OsString> = vec!["--die-with-parent".into(), "--unshare-all".into()];
    bind_system(Path::new("/"), &skipped, &mut args);
    let mut push = |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    push(&[
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
        // Under /tmp it is gone already, skipped ones were never bound; elsewhere a directory
        // gets an empty tmpfs and a file (or socket) an empty device file on top.
        if path.starts_with("/tmp") || !path.exists() || skipped.contains(&path.as_path()) {
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
    // The top of the view is bubblewrap's own tmpfs when parts of `/` were left out.
    push(&["--remount-ro".as_ref(), "/".as_ref()]);
    push(&["--chdir".as_ref(), view.cwd.as_os_str()]);
    args
}

/// The system, read-only: `dir` whole when nothing under it is skipped, else its entries one
/// by one (symbolic links recreated as links), leaving the skipped directories out. `/proc`,
/// `/dev` and `/tmp` are the sandbox's own.
fn bind_system(dir: &Path, skipped: &[&Path], args: &mut Vec<OsString>) {
    if skipped.contains(&dir) {
        return;
    }
    if !skipped.iter().any(|path| path.starts_with(dir)) {
        args.extend(["--ro-bind".into(), dir.into(), dir.into()]);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if dir == Path::new("/") && ["proc", "dev", "tmp"].iter().any(|own| path.ends_with(own)) {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_symlink() => {
                if let Ok(target) = std::fs::read_link(&path) {
                    args.extend(["--symlink".into(), target.into(), path.into()]);
                }
            }
            Ok(kind) if kind.is_dir() => bind_system(&path, skipped, args),
            Ok(_) => args.extend(["--ro-bind-try".into(), path.clone().into(), path.into()]),
            Err(_) => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_directory_is_left_out_and_its_neighbours_bound() {
        let root = tempfile::tempdir().expect("temporary directory");
        let root = root.path();
        for dir in ["a/x/deep", "a/y", "b"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        std::fs::write(root.join("a/file"), "f").expect("file");
        std::os::unix::fs::symlink("a", root.join("link")).expect("symlink");
        let skipped = root.join("a/x");
        let mut args = Vec::new();
        bind_system(root, &[skipped.as_path()], &mut args);
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let shown = |path: &Path| text.contains(&path.display().to_string());
        assert!(!shown(root), "the parent is not bound whole: {text:?}");
        assert!(!shown(&root.join("a")), "{text:?}");
        assert!(!text.iter().any(|a| a.contains("/a/x")), "{text:?}");
        for bound in ["a/y", "b", "a/file"] {
            assert!(shown(&root.join(bound)), "{bound} missing: {text:?}");
        }
        let link = text.iter().position(|a| a == "--symlink").expect("a link");
        assert_eq!(text[link + 1], "a");
        assert_eq!(text[link + 2], root.join("link").display().to_string());
        // Nothing skipped beneath: bound whole, one argument triple.
        let mut whole = Vec::new();
        bind_system(&root.join("b"), &[skipped.as_path()], &mut whole);
        assert_eq!(whole.len(), 3);
    }
}
