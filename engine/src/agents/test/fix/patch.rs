//! Reading a model's fix as a unified diff, defensively: the answer is outside input (a small
//! model writes prose, Markdown fences, truncated hunks; a prompt-injected one writes paths
//! outside the repository or edits the tests to pass). What comes out is a [`Patch`] whose
//! files are plain relative paths to non-test files and whose hunks are complete, rewritten
//! as a clean diff for `git apply`; anything else is a [`Malformed`] with a named reason.
//!
//! The format is git's: `--- a/PATH` and `+++ b/PATH` (the `a/`, `b/` prefixes optional,
//! `/dev/null` for a created or deleted file), then `@@ -start,count +start,count @@` hunks
//! whose bodies are exactly as long as their counts say. Text around the diff is ignored.

use crate::agents::test::files::{is_test_file, is_test_support};

/// Why an answer is not a fix that can be tried. The names ([`Malformed::reason`]) are what
/// the store records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error(
        "the answer holds no unified diff (no `--- a/FILE` / `+++ b/FILE` header followed by an `@@` hunk)"
    )]
    NotAPatch,
    #[error("the diff is cut short: {0}")]
    Partial(String),
    #[error("the diff is malformed: {0}")]
    Malformed(String),
    #[error("`{0}` is not a path inside the repository")]
    OutsideRepo(String),
    #[error(
        "`{0}` is a test, test support or part of running the tests: a fix changes the code, not the tests"
    )]
    EditsTests(String),
    #[error("unsupported change: {0} (only edits, creations and deletions of text files)")]
    Unsupported(String),
    #[error("the diff changes nothing (its hunks add and remove no line)")]
    NoChange,
}

impl Malformed {
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::NotAPatch => "not_a_patch",
            Malformed::Partial(_) => "partial_patch",
            Malformed::Malformed(_) => "malformed_patch",
            Malformed::OutsideRepo(_) => "outside_repo",
            Malformed::EditsTests(_) => "edits_tests",
            Malformed::Unsupported(_) => "unsupported_change",
            Malformed::NoChange => "no_change",
        }
    }
}

/// One file's part of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// `None` for a created file.
    pub old: Option<String>,
    /// `None` for a deleted file.
    pub new: Option<String>,
    /// Each hunk: its header line and body lines, as they go to `git apply`.
    pub hunks: Vec<(String, Vec<String>)>,
}

impl FilePatch {
    /// The path the patch touches (the new one, or the deleted one).
    pub fn path(&self) -> &str {
        self.new.as_deref().or(self.old.as_deref()).unwrap_or("")
    }
}

/// A parsed, checked patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub files: Vec<FilePatch>,
}

impl Patch {
    /// The files it changes, each once, in order.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        for file in &self.files {
            if !paths.iter().any(|p| p == file.path()) {
                paths.push(file.path().to_string());
            }
        }
        paths
    }

    /// The patch as a clean unified diff (`a/`, `b/` prefixes, recomputed nothing: the hunks
    /// are as the model wrote them, minus what surrounded them).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for file in &self.files {
            let side = |path: &Option<String>, prefix: &str| match path {
                Some(path) => format!("{prefix}{path}"),
                None => "/dev/null".to_string(),
            };
            out.push_str(&format!("--- {}\n", side(&file.old, "a/")));
            out.push_str(&format!("+++ {}\n", side(&file.new, "b/")));
            for (header, body) in &file.hunks {
                out.push_str(header);
                out.push('\n');
                for line in body {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Git's extended header lines that change more than text (or that a fix has no business
/// writing): a symlink, a mode, a rename or copy, binary content.
const UNSUPPORTED: &[&str] = &[
    "old mode ",
    "new mode ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
    "similarity index ",
    "dissimilarity index ",
    "GIT binary patch",
    "Binary files ",
];

/// Reads `answer` as a patch and checks every path it touches.
pub fn parse(answer: &str) -> Result<Patch, Malformed> {
    let lines: Vec<&str> = answer.lines().collect();
    let mut files: Vec<FilePatch> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if let Some(kind) = UNSUPPORTED.iter().find(|u| line.starts_with(**u)) {
            return Err(Malformed::Unsupported(format!("`{}`", kind.trim())));
        }
        if let Some(mode) = line
            .strip_prefix("new file mode ")
            .or_else(|| line.strip_prefix("deleted file mode "))
            && !["100644", "100755"].contains(&mode.trim())
        {
            return Err(Malformed::Unsupported(format!("file mode {}", mode.trim())));
        }
        let (Some(old), Some(new)) = (
            line.strip_prefix("--- "),
            lines.get(index + 1).and_then(|l| l.strip_prefix("+++ ")),
        ) else {
            index += 1;
            continue;
        };
        let old = side_path(old)?;
        let new = side_path(new)?;
        if old.is_none() && new.is_none() {
            return Err(Malformed::Malformed(
                "a file header with /dev/null on both sides".into(),
            ));
        }
        index += 2;
        let mut hunks = Vec::new();
        while let Some(header) = lines.get(index).filter(|l| l.starts_with("@@")) {
            let (old_count, new_count) = hunk_counts(header)?;
            index += 1;
            let body = hunk_body(&lines, &mut index, old_count, new_count)?;
            hunks.push((clean_header(header), body));
        }
        let file = FilePatch { old, new, hunks };
        if file.hunks.is_empty() {
            return Err(Malformed::Partial(format!(
                "the header for `{}` has no hunk after it",
                file.path()
            )));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(Malformed::NotAPatch);
    }
    for file in &files {
        for path in [&file.old, &file.new].into_iter().flatten() {
            if is_test_file(path) || is_test_support(path) {
                return Err(Malformed::EditsTests(path.clone()));
            }
        }
    }
    let changes = files
        .iter()
        .flat_map(|f| &f.hunks)
        .flat_map(|(_, body)| body)
        .any(|line| line.starts_with('+') || line.starts_with('-'));
    if !changes {
        return Err(Malformed::NoChange);
    }
    Ok(Patch { files })
}

/// The path of one side of a file header: `None` for `/dev/null`; an error for anything that
/// is not a plain relative path inside the repository.
fn side_path(raw: &str) -> Result<Option<String>, Malformed> {
    // `--- a/file\t2024-01-01 00:00:00` (diff -u adds a date after a tab).
    let raw = raw.split('\t').next().unwrap_or(raw).trim_end();
    if raw == "/dev/null" {
        return Ok(None);
    }
    if raw.starts_with('"') {
        return Err(Malformed::Unsupported(format!("the quoted path {raw}")));
    }
    let path = raw
        .strip_prefix("a/")
        .or_else(|| raw.strip_prefix("b/"))
        .unwrap_or(raw);
    let outside = path.is_empty()
        || path.starts_with('/')
        || path.starts_with('~')
        || path.contains('\\')
        || path.contains('\0')
        || path.chars().any(char::is_control)
        || path.split('/').any(|part| {
            part.is_empty() || part == "." || part == ".." || part.eq_ignore_ascii_case(".git")
        });
    if outside {
        return Err(Malformed::OutsideRepo(raw.to_string()));
    }
    Ok(Some(path.to_string()))
}

/// `@@ -3,4 +3,5 @@ context` → (4, 5); a missing count is 1, as in git.
fn hunk_counts(header: &str) -> Result<(usize, usize), Malformed> {
    let bad = || {
        Malformed::Malformed(format!(
            "`{header}` is not a hunk header (`@@ -start,count +start,count @@`)"
        ))
    };
    let inner = header
        .strip_prefix("@@ ")
        .and_then(|rest| rest.split_once(" @@"))
        .map(|(inner, _)| inner)
        .ok_or_else(bad)?;
    let mut sides = inner.split_whitespace();
    let (Some(old), Some(new), None) = (sides.next(), sides.next(), sides.next()) else {
        return Err(bad());
    };
    let count = |side: &str, sign: char| -> Option<usize> {
        let range = side.strip_prefix(sign)?;
        let mut parts = range.splitn(2, ',');
        parts.next()?.parse::<usize>().ok()?;
        match parts.next() {
            Some(count) => count.parse().ok(),
            None => Some(1),
        }
    };
    let old = count(old, '-').ok_or_else(bad)?;
    let new = count(new, '+').ok_or_else(bad)?;
    // A body longer than this is not a fix of a small model's size; refusing it bounds the work.
    if old > 10_000 || new > 10_000 {
        return Err(bad());
    }
    Ok((old, new))
}

/// The header up to its closing `@@` (the function name git adds after it is dropped).
fn clean_header(header: &str) -> String {
    match header.get(3..).and_then(|rest| rest.find(" @@")) {
        Some(end) => header[..3 + end + 3].to_string(),
        None => header.to_string(),
    }
}

/// Reads a hunk body of exactly `old` old-side and `new` new-side lines from `lines[*index..]`.
fn hunk_body(
    lines: &[&str],
    index: &mut usize,
    mut old: usize,
    mut new: usize,
) -> Result<Vec<String>, Malformed> {
    let (want_old, want_new) = (old, new);
    let mut body = Vec::new();
    while old > 0 || new > 0 {
        let Some(line) = lines.get(*index) else {
            return Err(Malformed::Partial(format!(
                "a hunk ends after {} of {want_old} old and {} of {want_new} new lines",
                want_old - old,
                want_new - new
            )));
        };
        // An empty line is an empty context line whose leading space was lost (git's reading).
        let line = if line.is_empty() { " " } else { line };
        match line.as_bytes()[0] {
            b' ' if old > 0 && new > 0 => {
                old -= 1;
                new -= 1;
            }
            b'-' if old > 0 => old -= 1,
            b'+' if new > 0 => new -= 1,
            b'\\' => {}
            _ => {
                return Err(Malformed::Malformed(format!(
                    "`{}` does not fit the hunk (expected {old} more old and {new} more new lines)",
                    line.chars().take(80).collect::<String>()
                )));
            }
        }
        body.push(line.to_string());
        *index += 1;
    }
    // "\ No newline at end of file" belongs to the last line.
    if let Some(marker) = lines.get(*index).filter(|l| l.starts_with('\\')) {
        body.push(marker.to_string());
        *index += 1;
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,2 +1,2 @@\n def charge(amount):\n-    return amount * 10\n+    return amount * 100\n";

    fn reason(answer: &str) -> &'static str {
        match parse(answer) {
            Ok(patch) => panic!("accepted {patch:?}"),
            Err(error) => error.reason(),
        }
    }

    #[test]
    fn a_diff_in_prose_and_fences_is_read_and_cleaned() {
        let answer = format!(
            "Here is the fix:\n```diff\ndiff --git a/src/pay.py b/src/pay.py\nindex 1..2 100644\n{}```\nThis restores the factor.",
            GOOD.replace("@@ -1,2 +1,2 @@", "@@ -1,2 +1,2 @@ def charge")
        );
        let patch = parse(&answer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(patch.paths(), ["src/pay.py"]);
        assert_eq!(patch.text(), GOOD);
    }

    #[test]
    fn prefixes_dates_missing_counts_and_blank_context_are_git_s_reading() {
        let answer = "--- src/pay.py\t2026-01-01\n+++ src/pay.py\t2026-01-02\n@@ -2 +2 @@\n-x = 1\n+x = 2\n@@ -5,3 +5,3 @@\n a\n\n-b\n+c\n\\ No newline at end of file\n";
        let patch = parse(answer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            patch.text(),
            "--- a/src/pay.py\n+++ b/src/pay.py\n@@ -2 +2 @@\n-x = 1\n+x = 2\n@@ -5,3 +5,3 @@\n a\n \n-b\n+c\n\\ No newline at end of file\n"
        );
        let created = parse("--- /dev/null\n+++ b/src/new.py\n@@ -0,0 +1 @@\n+X = 1\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(created.files[0].old, None);
        assert_eq!(created.paths(), ["src/new.py"]);
    }

    #[test]
    fn garbage_is_not_a_patch() {
        for answer in [
            "",
            "I think the bug is in charge(); multiply by 100 instead.",
            "```python\ndef charge(amount):\n    return amount * 100\n```",
            "--- just a dashed line\nand prose",
            "{\"patch\": null}",
            "\u{0}\u{1}\u{fffd}@@@@---+++",
        ] {
            assert_eq!(reason(answer), "not_a_patch", "{answer:?}");
        }
    }

    #[test]
    fn partial_and_malformed_diffs_are_named() {
        // Truncated by the token limit in the middle of a hunk.
        assert_eq!(
            reason(
                "--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,3 +1,3 @@\n def charge(amount):\n-    return amount * 10\n"
            ),
            "partial_patch"
        );
        assert_eq!(
            reason("--- a/src/pay.py\n+++ b/src/pay.py\n"),
            "partial_patch"
        );
        assert_eq!(
            reason("--- a/src/pay.py\n+++ b/src/pay.py\n@@ @@\n-a\n+b\n"),
            "malformed_patch"
        );
        assert_eq!(
            reason("--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,2 +1,2 @@\n-a\n+b\nsome prose\n"),
            "malformed_patch"
        );
        assert_eq!(
            reason("--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1,99999999999999999999 +1 @@\n-a\n"),
            "malformed_patch"
        );
        assert_eq!(
            reason("--- /dev/null\n+++ /dev/null\n@@ -0,0 +0,0 @@\n"),
            "malformed_patch"
        );
    }

    #[test]
    fn paths_outside_the_repository_are_refused() {
        for path in [
            "/etc/passwd",
            "../outside.py",
            "src/../../outside.py",
            ".git/hooks/pre-commit",
            "src/.GIT/config",
            "~/.bashrc",
            "src//pay.py",
            "src\\pay.py",
        ] {
            let answer = format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n");
            assert_eq!(reason(&answer), "outside_repo", "{path}");
        }
        // `a/` then an absolute path: the prefix does not make it relative.
        assert_eq!(
            reason("--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"),
            "outside_repo"
        );
    }

    #[test]
    fn edits_to_tests_are_refused() {
        for path in [
            "tests/test_pay.py",
            "test_pay.py",
            "tests/conftest.py",
            "tests/helpers.py",
            "pkg/pay_test.go",
            "web/a.test.ts",
        ] {
            let answer = format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n");
            assert_eq!(reason(&answer), "edits_tests", "{path}");
        }
        // Hidden after a legitimate file.
        let answer = format!(
            "{GOOD}--- a/tests/test_pay.py\n+++ b/tests/test_pay.py\n@@ -1 +1 @@\n-assert charge(1) == 100\n+assert True\n"
        );
        assert_eq!(reason(&answer), "edits_tests");
    }

    #[test]
    fn renames_modes_symlinks_and_binaries_are_unsupported() {
        for header in [
            "rename from src/a.py",
            "new mode 100755",
            "new file mode 120000",
            "GIT binary patch",
            "Binary files a/x and b/x differ",
        ] {
            let answer = format!("diff --git a/src/a.py b/src/a.py\n{header}\n{GOOD}");
            assert_eq!(reason(&answer), "unsupported_change", "{header}");
        }
        assert_eq!(
            reason("--- \"a/src/p y.py\"\n+++ \"b/src/p y.py\"\n@@ -1 +1 @@\n-a\n+b\n"),
            "unsupported_change"
        );
    }

    #[test]
    fn a_diff_that_changes_nothing_is_no_change() {
        assert_eq!(
            reason("--- a/src/pay.py\n+++ b/src/pay.py\n@@ -1 +1 @@\n def charge(amount):\n"),
            "no_change"
        );
    }
}
