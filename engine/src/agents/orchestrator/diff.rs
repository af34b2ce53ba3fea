//! Reading what a commit changed from git: files, status, line counts, renames, binaries.
//!
//! A merge is compared with its first parent only: that is what the merge brings into the
//! branch. Asking git for every parent's diff would list a file once per parent and count a
//! docs-only merge of a busy branch as the whole branch's work.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

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
    let range = diff_range(repo, commit)?;
    let run = |format: &str| {
        let mut args = vec!["diff-tree", "-r", "-M", "--no-commit-id", "-z", format];
        args.extend(range.iter().map(String::as_str));
        git(repo, &args)
    };
    let statuses = parse_name_status(&run("--name-status")?)?;
    let numbers = parse_numstat(&run("--numstat")?)?;
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

/// The `diff-tree` arguments naming what `commit` is compared with: its first parent, or the
/// empty tree (`--root`) for a root commit.
pub fn diff_range(repo: &Path, commit: &str) -> Result<Vec<String>, String> {
    let parents = git(repo, &["rev-list", "--parents", "-n", "1", commit, "--"])?;
    let mut ids = parents.split_whitespace().skip(1);
    Ok(match ids.next() {
        Some(first_parent) => vec![first_parent.to_string(), commit.to_string()],
        None => vec!["--root".to_string(), commit.to_string()],
    })
}

/// Blobs larger than this are not read whole (generated or data files; their hunks suffice).
const MAX_BLOB_BYTES: u64 = 1 << 20;

/// The texts of `specs` (`revision:path`), read by one `git cat-file` pair; `None` for a
/// missing, non-UTF-8 or over-size blob.
pub fn blobs(repo: &Path, specs: &[String]) -> Result<Vec<Option<String>>, String> {
    let specs_input: String = specs
        .iter()
        .map(|s| format!("{}\n", s.replace('\n', " ")))
        .collect();
    let sizes = cat_file(
        repo,
        "--batch-check=%(objecttype) %(objectsize)",
        &specs_input,
    )?;
    let sizes = String::from_utf8_lossy(&sizes).into_owned();
    let mut wanted = Vec::new();
    let mut readable = Vec::new();
    for (spec, line) in specs.iter().zip(sizes.lines()) {
        let ok = line
            .strip_prefix("blob ")
            .and_then(|size| size.parse::<u64>().ok())
            .is_some_and(|size| size <= MAX_BLOB_BYTES);
        readable.push(ok);
        if ok {
            wanted.push(format!("{}\n", spec.replace('\n', " ")));
        }
    }
    let output = cat_file(repo, "--batch", &wanted.concat())?;
    let mut reader = BufReader::new(output.as_slice());
    let mut texts = Vec::new();
    for ok in readable {
        if !ok {
            texts.push(None);
            continue;
        }
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|e| format!("failed to read git cat-file output: {e}"))?;
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("unexpected git cat-file header {header:?}"))?;
        let mut content = vec![0; size + 1];
        reader
            .read_exact(&mut content)
            .map_err(|e| format!("failed to read a blob from git cat-file: {e}"))?;
        content.pop();
        texts.push(String::from_utf8(content).ok());
    }
    Ok(texts)
}

fn cat_file(repo: &Path, mode: &str, input: &str) -> Result<Vec<u8>, String> {
    let mut child = Command::new("git")
        .args(["cat-file", mode])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to run git cat-file: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("git cat-file has no stdin")?;
    let input = input.to_string();
    // Written from a thread: git answers while it reads, and a full pipe would block both.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("failed to run git cat-file: {e}"))?;
    let _ = writer.join();
    if !output.status.success() {
        return Err(format!("git cat-file {mode} failed in {}", repo.display()));
    }
    Ok(output.stdout)
}

/// One `--name-status` entry: status, old path of a rename or copy, path.
type NameStatus = (&'static str, Option<String>, String);

fn parse_name_status(text: &str) -> Result<Vec<NameStatus>, String> {
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
