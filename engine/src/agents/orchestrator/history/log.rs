//! One pass over a repository's history: every non-merge commit, oldest first, with its
//! author, time, message and per-file line counts — what labelling and features need.
//!
//! Merges are left out: what they bring in is already counted in the commits they merge, and
//! blame attributes lines to those commits, not to the merge. Renames are not followed
//! (`--no-renames`): a renamed file starts a new history, which only makes it look younger.

use std::path::Path;

use super::error::{Error, Result};

/// One changed file of a commit, from `--numstat` and `--summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub additions: u64,
    pub deletions: u64,
    pub binary: bool,
    /// `added`, `deleted` or `modified`.
    pub status: &'static str,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub id: String,
    pub author: String,
    /// Committer time, seconds since the epoch: when the change reached the branch.
    pub time: i64,
    pub message: String,
    pub files: Vec<FileChange>,
}

const RECORD: char = '\u{1e}';
const FIELD: char = '\u{1f}';
const END_OF_MESSAGE: char = '\u{1d}';

/// The non-merge commits reachable from `revision`, oldest first.
pub fn read(repo: &Path, revision: &str) -> Result<Vec<Commit>> {
    let output = crate::exec::git(
        repo,
        &[
            "-c",
            "core.quotePath=false",
            "log",
            "--no-merges",
            "--reverse",
            "--no-renames",
            "--numstat",
            "--summary",
            "--format=%x1e%H%x1f%ae%x1f%ct%x1f%B%x1d",
            revision,
            "--",
        ],
    )
    .map_err(|message| Error::Git {
        repo: repo.display().to_string(),
        message,
    })?;
    Ok(parse(&output))
}

/// The full id of `revision`'s commit, or why there is none.
pub fn resolve(repo: &Path, revision: &str) -> Result<String> {
    crate::exec::git(
        repo,
        &["rev-parse", "--verify", &format!("{revision}^{{commit}}")],
    )
    .map(|id| id.trim().to_string())
    .map_err(|message| Error::Git {
        repo: repo.display().to_string(),
        message,
    })
}

/// Parses the output of the `git log` call in [`read`]; a malformed record is skipped.
pub fn parse(output: &str) -> Vec<Commit> {
    output.split(RECORD).filter_map(parse_record).collect()
}

fn parse_record(record: &str) -> Option<Commit> {
    let (head, rest) = record.split_once(END_OF_MESSAGE)?;
    let mut fields = head.splitn(4, FIELD);
    let id = fields.next()?.trim().to_string();
    let author = fields.next()?.to_lowercase();
    let time = fields.next()?.parse().ok()?;
    let message = fields.next()?.trim().to_string();
    let mut files: Vec<FileChange> = Vec::new();
    for line in rest.lines() {
        if let Some(summary) = line.strip_prefix(' ') {
            let status = if summary.starts_with("create mode") {
                "added"
            } else if summary.starts_with("delete mode") {
                "deleted"
            } else {
                continue;
            };
            // " create mode 100644 path": the path follows the mode.
            let path = summary.splitn(4, ' ').nth(3).unwrap_or_default();
            if let Some(file) = files.iter_mut().find(|f| f.path == path) {
                file.status = status;
            }
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let binary = added == "-" && deleted == "-";
        files.push(FileChange {
            path: path.to_string(),
            additions: added.parse().unwrap_or(0),
            deletions: deleted.parse().unwrap_or(0),
            binary,
            status: "modified",
        });
    }
    (id.len() >= 40).then_some(Commit {
        id,
        author,
        time,
        message,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_give_commits_with_files_and_statuses() {
        let output = "\u{1e}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\u{1f}Ann@x.org\u{1f}100\u{1f}fix: a bug\n\nbody\u{1d}\n\n3\t1\tsrc/a.rs\n-\t-\tlogo.png\n create mode 100644 logo.png\n\u{1e}bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\u{1f}bob@x.org\u{1f}200\u{1f}add\u{1d}\n";
        let commits = parse(output);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].author, "ann@x.org");
        assert_eq!(commits[0].time, 100);
        assert_eq!(commits[0].message, "fix: a bug\n\nbody");
        assert_eq!(commits[0].files.len(), 2);
        assert_eq!(commits[0].files[0].additions, 3);
        assert_eq!(commits[0].files[0].status, "modified");
        assert!(commits[0].files[1].binary);
        assert_eq!(commits[0].files[1].status, "added");
        assert!(commits[1].files.is_empty());
    }
}
