//! Reading what a commit changed from git: files, status, line counts, renames, binaries.

use std::path::Path;

use serde::Serialize;

use crate::exec::git;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedFile {
    pub path: String,
    /// The old path of a rename or copy.
    pub old_path: Option<String>,
    /// `added`, `modified`, `deleted`, `renamed`, `copied` or `type_changed`.
    pub status: &'static str,
    pub additions: u64,
    pub deletions: u64,
    pub binary: bool,
}

/// The files `commit` changed against its first parent (everything, for a root commit).
pub fn changed_files(repo: &Path, commit: &str) -> Result<Vec<ChangedFile>, String> {
    let base = [
        "diff-tree",
        "-r",
        "--root",
        "-M",
        "--no-commit-id",
        "-m",
        "--first-parent",
        "-z",
    ];
    let mut status_args = base.to_vec();
    status_args.extend(["--name-status", commit]);
    let mut numstat_args = base.to_vec();
    numstat_args.extend(["--numstat", commit]);
    let statuses = parse_name_status(&git(repo, &status_args)?)?;
    let numbers = parse_numstat(&git(repo, &numstat_args)?)?;
    if statuses.len() != numbers.len() {
        return Err(format!(
            "git reported {} changed files by status but {} by line count for {commit}",
            statuses.len(),
            numbers.len()
        ));
    }
    Ok(statuses
        .into_iter()
        .zip(numbers)
        .map(
            |((status, old_path, path), (additions, deletions, binary))| ChangedFile {
                path,
                old_path,
                status,
                additions,
                deletions,
                binary,
            },
        )
        .collect())
}

fn parse_name_status(text: &str) -> Result<Vec<(&'static str, Option<String>, String)>, String> {
    let mut fields = text.split('\0').filter(|f| !f.is_empty());
    let mut files = Vec::new();
    while let Some(code) = fields.next() {
        let status = match code.chars().next() {
            Some('A') => "added",
            Some('M') => "modified",
            Some('D') => "deleted",
            Some('R') => "renamed",
            Some('C') => "copied",
            Some('T') => "type_changed",
            _ => return Err(format!("unexpected git status {code:?}")),
        };
        let first = fields
            .next()
            .ok_or("git status line without a path")?
            .to_string();
        if matches!(status, "renamed" | "copied") {
            let second = fields
                .next()
                .ok_or("git rename without a new path")?
                .to_string();
            files.push((status, Some(first), second));
        } else {
            files.push((status, None, first));
        }
    }
    Ok(files)
}

fn parse_numstat(text: &str) -> Result<Vec<(u64, u64, bool)>, String> {
    let mut fields = text.split('\0');
    let mut counts = Vec::new();
    while let Some(record) = fields.next() {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("unexpected git numstat record {record:?}"));
        };
        if path.is_empty() {
            // A rename: the old and new paths follow as their own fields.
            fields.next();
            fields.next();
        }
        let binary = added == "-";
        counts.push((
            added.parse().unwrap_or(0),
            deleted.parse().unwrap_or(0),
            binary,
        ));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_and_binaries_parse() {
        let status = "M\0src/a.rs\0R087\0old.rs\0new.rs\0A\0logo.png\0";
        let numstat = "3\t1\tsrc/a.rs\0".to_string() + "2\t2\t\0old.rs\0new.rs\0-\t-\tlogo.png\0";
        let statuses = parse_name_status(status).expect("status parses");
        let numbers = parse_numstat(&numstat).expect("numstat parses");
        assert_eq!(
            statuses[1],
            ("renamed", Some("old.rs".into()), "new.rs".into())
        );
        assert_eq!(numbers, vec![(3, 1, false), (2, 2, false), (0, 0, true)]);
    }
}
