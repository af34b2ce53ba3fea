//! Real git repositories for the end-to-end tests of the orchestrator (`cairn analyze`) and of
//! repository polling (`cairn serve`): made with the `git` command, with real commits, and
//! independent of the machine's git configuration (no global or system config is read; the
//! identity is set in each repository). See `DESIGN.md`, "Real parts, not stand-ins".
//!
//! Shared by `orchestrator.rs` and `serve.rs` through `mod common_git;`, so not every helper is
//! used by both.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A `git` command that ignores the user's and the system's configuration, never prompts,
/// and works in `dir`.
pub fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    command
}

/// Runs git in `dir` and returns its stdout; panics with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run git {args:?}: {e}"));
    assert!(
        output.status.success(),
        "`git {}` failed in {}: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A working repository (non-bare, `main` checked out) that tests commit to, and that the
/// engine reads or polls by its path.
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    /// `git init -b main` at `path` (created), with a local identity and no signing.
    pub fn init(path: &Path) -> Repo {
        std::fs::create_dir_all(path)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", path.display()));
        git(path, &["init", "--quiet", "--initial-branch=main"]);
        for (key, value) in [
            ("user.name", "Cairn Tests"),
            ("user.email", "tests@cairn.invalid"),
            ("commit.gpgsign", "false"),
            ("core.autocrlf", "false"),
            // Keep rewritten commits around: the force-push test wants them reachable by sha.
            ("gc.auto", "0"),
        ] {
            git(path, &["config", key, value]);
        }
        Repo {
            path: path.to_path_buf(),
        }
    }

    /// The path as the workflow and `cairn analyze` name it.
    pub fn url(&self) -> String {
        self.path.display().to_string()
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// Writes a file (creating its directories), relative to the work tree.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) {
        let path = self.path.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("failed to create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    }

    pub fn read(&self, relative: &str) -> String {
        let path = self.path.join(relative);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
    }

    /// Stages everything and commits it; returns the new commit's sha.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--no-verify", "-m", message]);
        self.head()
    }

    /// A commit that changes one file (so every commit is distinct); returns its sha.
    pub fn commit_file(&self, relative: &str, contents: &str, message: &str) -> String {
        self.write(relative, contents);
        self.commit_all(message)
    }

    /// `count` commits on the current branch, each appending a line to `notes/<tag>.txt`;
    /// returns their shas, oldest first.
    pub fn add_commits(&self, tag: &str, count: usize) -> Vec<String> {
        let relative = format!("notes/{tag}.txt");
        let mut text = std::fs::read_to_string(self.path.join(&relative)).unwrap_or_default();
        (0..count)
            .map(|index| {
                text.push_str(&format!("{tag} change {index}\n"));
                self.commit_file(&relative, &text, &format!("{tag}: change {index}"))
            })
            .collect()
    }

    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }

    pub fn rev_parse(&self, revision: &str) -> String {
        self.git(&["rev-parse", "--verify", revision])
            .trim()
            .to_string()
    }

    /// `git rev-list --reverse --first-parent RANGE`: commits oldest first.
    pub fn rev_list_reverse(&self, range: &str) -> Vec<String> {
        self.git(&["rev-list", "--reverse", "--first-parent", range])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The first 10 characters of a sha, for tables and messages.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}
