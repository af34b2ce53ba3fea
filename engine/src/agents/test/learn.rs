//! Learning the file→test map: from the git history of the repository under test (which test
//! files changed in the same commit as which source files) and from this agent's own runs
//! (which test files had a real failure after which files changed). Both are kept in the
//! store (`test_links`), so what one run learns, the next one selects with.

use std::collections::HashSet;
use std::path::Path;

use super::files::{is_test_file, is_test_support};
use crate::agents::orchestrator::{Category, categorize};
use crate::exec::git;
use crate::store::Store;

/// How far back the history is read; older commits say little about today's layout.
pub const HISTORY_COMMITS: usize = 500;
/// A commit touching more pairs than this is a sweeping change (a rename, a reformat): it
/// would tie everything to everything, so it teaches nothing.
const MAX_PAIRS_PER_COMMIT: usize = 200;

/// One commit of `git log --name-only`.
#[derive(Debug, PartialEq)]
pub struct LoggedCommit {
    pub id: String,
    /// No parent: the initial import, which ties everything to everything.
    pub root: bool,
    pub files: Vec<String>,
}

/// Reads `git log --format='@%H %P' --name-only` output.
pub fn parse_log(log: &str) -> Vec<LoggedCommit> {
    let mut commits: Vec<LoggedCommit> = Vec::new();
    for line in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(ids) = line.strip_prefix('@') {
            let mut ids = ids.split_whitespace();
            let id = ids.next().unwrap_or_default().to_string();
            commits.push(LoggedCommit {
                id,
                root: ids.next().is_none(),
                files: Vec::new(),
            });
        } else if let Some(commit) = commits.last_mut() {
            commit.files.push(line.to_string());
        }
    }
    commits
}

/// The (source file, test file) pairs one commit teaches.
pub fn co_changes(files: &[String]) -> Vec<(String, String)> {
    let tests: Vec<&String> = files.iter().filter(|f| is_test_file(f)).collect();
    let sources: Vec<&String> = files
        .iter()
        .filter(|f| !is_test_file(f) && !is_test_support(f) && categorize(f) != Category::Docs)
        .collect();
    if tests.is_empty() || sources.len() * tests.len() > MAX_PAIRS_PER_COMMIT {
        return Vec::new();
    }
    sources
        .iter()
        .flat_map(|s| tests.iter().map(move |t| ((*s).clone(), (*t).clone())))
        .collect()
}

/// Counts the co-changes of every commit up to `commit` not learned before. Returns how many
/// commits were new.
pub fn learn_history(
    store: &Store,
    repo: &str,
    workspace: &Path,
    commit: &str,
) -> Result<usize, String> {
    let log = git(
        workspace,
        &[
            "log",
            "--no-merges",
            "--no-renames",
            "--format=@%H %P",
            "--name-only",
            "-n",
            &HISTORY_COMMITS.to_string(),
            commit,
        ],
    )?;
    let known = store.learned_commits(repo).map_err(|e| e.to_string())?;
    let fresh: Vec<LoggedCommit> = parse_log(&log)
        .into_iter()
        .filter(|c| !known.contains(&c.id))
        .collect();
    store
        .write(|txn| {
            for logged in &fresh {
                let pairs = if logged.root {
                    Vec::new()
                } else {
                    co_changes(&logged.files)
                };
                txn.learn_commit(repo, &logged.id, &pairs)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(fresh.len())
}

/// The test file a failed test's id points at: a JUnit classname such as
/// `tests.test_pay.TestRefund` names `tests/test_pay.py`; otherwise the test files defining the
/// test's name (`def test_x`, `func TestX(`, `fn x(`).
pub fn test_file_of(test_id: &str, workspace: &Path, test_files: &[String]) -> Vec<String> {
    let dotted = test_id.split("::").next().unwrap_or(test_id);
    // Cairn's node reporter names the file itself.
    if test_files.iter().any(|f| f == dotted) {
        return vec![dotted.to_string()];
    }
    let by_module: Vec<String> = test_files
        .iter()
        .filter(|file| {
            let module = file
                .rsplit_once('.')
                .map_or(file.as_str(), |(stem, _)| stem)
                .replace('/', ".");
            dotted == module || dotted.starts_with(&format!("{module}."))
        })
        .cloned()
        .collect();
    if !by_module.is_empty() {
        return by_module;
    }
    let name = test_id.rsplit("::").next().unwrap_or(test_id);
    let name = name
        .split('[')
        .next()
        .unwrap_or(name)
        .rsplit('.')
        .next()
        .unwrap_or(name);
    if name.is_empty() {
        return Vec::new();
    }
    let definitions = [
        format!("def {name}("),
        format!("func {name}("),
        format!("fn {name}("),
    ];
    test_files
        .iter()
        .filter(|file| {
            std::fs::read_to_string(workspace.join(file))
                .map(|text| definitions.iter().any(|d| text.contains(d.as_str())))
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

/// Records that `failed` tests (real failures, not flaky) followed a change of `changed`.
pub fn learn_failures(
    store: &Store,
    repo: &str,
    commit: &str,
    workspace: &Path,
    changed: &[String],
    failed: &[String],
    test_files: &[String],
) -> Result<usize, String> {
    let sources: Vec<&String> = changed
        .iter()
        .filter(|f| !is_test_file(f) && categorize(f) != Category::Docs)
        .collect();
    let files: HashSet<String> = failed
        .iter()
        .flat_map(|id| test_file_of(id, workspace, test_files))
        .collect();
    store
        .write(|txn| {
            for source in &sources {
                for file in &files {
                    txn.link_failure(repo, source, file, commit)?;
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(sources.len() * files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_read_into_commits_and_co_changes() {
        let log = "@aaa ppp\n\nsrc/pay.py\ntests/test_pay.py\nREADME.md\n@bbb aaa\n\nsrc/users.py\n@ccc\n";
        let commits = parse_log(log);
        assert_eq!(commits.len(), 3);
        assert_eq!((commits[0].root, commits[2].root), (false, true));
        assert_eq!(
            commits[0].files,
            ["src/pay.py", "tests/test_pay.py", "README.md"]
        );
        assert_eq!(
            co_changes(&commits[0].files),
            [("src/pay.py".to_string(), "tests/test_pay.py".to_string())]
        );
        assert!(co_changes(&commits[1].files).is_empty(), "no test changed");
        let sweeping: Vec<String> = (0..30)
            .map(|i| format!("src/m{i}.py"))
            .chain((0..10).map(|i| format!("tests/test_{i}.py")))
            .collect();
        assert!(
            co_changes(&sweeping).is_empty(),
            "a sweeping commit teaches nothing"
        );
    }

    #[test]
    fn a_failed_test_id_leads_to_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pkg")).expect("mkdir");
        std::fs::write(
            dir.path().join("pkg/pay_test.go"),
            "package pkg\nfunc TestCharge(t *testing.T) {}\n",
        )
        .expect("write");
        let files = vec![
            "tests/test_pay.py".to_string(),
            "pkg/pay_test.go".to_string(),
        ];
        assert_eq!(
            test_file_of("tests.test_pay.TestRefund::test_full", dir.path(), &files),
            ["tests/test_pay.py"]
        );
        assert_eq!(
            test_file_of("tests.test_pay::test_x", dir.path(), &files),
            ["tests/test_pay.py"]
        );
        assert_eq!(
            test_file_of("example.com/pkg::TestCharge", dir.path(), &files),
            ["pkg/pay_test.go"]
        );
        assert!(test_file_of("x::TestNowhere", dir.path(), &files).is_empty());
    }
}
