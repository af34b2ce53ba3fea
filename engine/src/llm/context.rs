//! The least a remote needs to see of a diff: changed lines with one line of context around
//! each, and for a whole added or deleted file only a one-line summary (its content is all
//! "changed", and a new file is where new secrets most often sit). `index` lines (object ids)
//! are dropped; renames, mode changes and binary markers are kept, they are facts about risk.

/// Unchanged lines kept on each side of a change.
const CONTEXT: usize = 1;

struct Hunk<'a> {
    old_start: usize,
    new_start: usize,
    tail: &'a str,
    lines: Vec<&'a str>,
}

fn parse_header(line: &str) -> Option<(usize, usize, &str)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, tail) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let start = |r: &str| r.split(',').next().and_then(|n| n.parse::<usize>().ok());
    Some((start(old)?, start(new)?, tail))
}

/// Rewrites `diff` for a remote; text that is not a `git diff` is returned unchanged.
pub fn minimal_diff(diff: &str) -> String {
    if !diff.contains("diff --git ") {
        return diff.to_string();
    }
    let mut out = String::with_capacity(diff.len() / 2);
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in diff.split_inclusive('\n') {
        if line.starts_with("diff --git ") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    for (index, section) in sections.iter().enumerate() {
        if index == 0 {
            // Whatever precedes the first file (a commit message) goes as it is.
            section.iter().for_each(|l| out.push_str(l));
            continue;
        }
        file_section(section, &mut out);
    }
    out
}

fn file_section(lines: &[&str], out: &mut String) {
    let first_hunk = lines
        .iter()
        .position(|l| l.starts_with("@@ "))
        .unwrap_or(lines.len());
    let header = &lines[..first_hunk];
    let path = lines
        .first()
        .and_then(|l| l.trim_end().rsplit_once(" b/"))
        .map_or("?", |(_, p)| p);
    let added = header
        .iter()
        .any(|l| l.starts_with("new file mode") || l.trim_end() == "--- /dev/null");
    let deleted = header
        .iter()
        .any(|l| l.starts_with("deleted file mode") || l.trim_end() == "+++ /dev/null");
    if added || deleted {
        let body = &lines[first_hunk..];
        let count = body
            .iter()
            .filter(|l| (l.starts_with('+') && added) || (l.starts_with('-') && deleted))
            .count();
        let what = if added { "new file" } else { "deleted file" };
        let sign = if added { '+' } else { '-' };
        out.push_str(&format!(
            "diff --git {what} {path} ({sign}{count} lines; whole files are summarized, their content is not sent)\n"
        ));
        return;
    }
    for line in header {
        if !line.starts_with("index ") {
            out.push_str(line);
        }
    }
    let mut hunks: Vec<Hunk<'_>> = Vec::new();
    for line in &lines[first_hunk..] {
        if let Some((old_start, new_start, tail)) = parse_header(line) {
            hunks.push(Hunk {
                old_start,
                new_start,
                tail: tail.trim_end(),
                lines: Vec::new(),
            });
        } else if let Some(hunk) = hunks.last_mut() {
            hunk.lines.push(line);
        }
    }
    for hunk in &hunks {
        minimal_hunk(hunk, out);
    }
}

fn minimal_hunk(hunk: &Hunk<'_>, out: &mut String) {
    let changed: Vec<bool> = hunk
        .lines
        .iter()
        .map(|l| l.starts_with('+') || l.starts_with('-'))
        .collect();
    let keep: Vec<bool> = (0..hunk.lines.len())
        .map(|i| {
            let from = i.saturating_sub(CONTEXT);
            let to = (i + CONTEXT).min(hunk.lines.len().saturating_sub(1));
            changed[from..=to].iter().any(|c| *c) || hunk.lines[i].starts_with('\\')
        })
        .collect();
    let (mut old_line, mut new_line) = (hunk.old_start, hunk.new_start);
    let mut block: Vec<&str> = Vec::new();
    let (mut block_old, mut block_new, mut old_count, mut new_count) = (0, 0, 0, 0);
    let mut flush = |block: &mut Vec<&str>,
                     old_start: usize,
                     new_start: usize,
                     old_count: usize,
                     new_count: usize| {
        if block.is_empty() {
            return;
        }
        out.push_str(&format!(
            "@@ -{old_start},{old_count} +{new_start},{new_count} @@{}\n",
            if hunk.tail.is_empty() {
                String::new()
            } else {
                hunk.tail.to_string()
            }
        ));
        block.drain(..).for_each(|l| out.push_str(l));
    };
    for (i, line) in hunk.lines.iter().enumerate() {
        let (in_old, in_new) = match line.as_bytes().first() {
            Some(b'+') => (false, true),
            Some(b'-') => (true, false),
            Some(b'\\') => (false, false),
            _ => (true, true),
        };
        if keep[i] {
            if block.is_empty() {
                (block_old, block_new, old_count, new_count) = (old_line, new_line, 0, 0);
            }
            block.push(line);
            old_count += usize::from(in_old);
            new_count += usize::from(in_new);
        } else {
            flush(&mut block, block_old, block_new, old_count, new_count);
        }
        old_line += usize::from(in_old);
        new_line += usize::from(in_new);
    }
    flush(&mut block, block_old, block_new, old_count, new_count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_lines_and_one_line_of_context_go() {
        let diff = "diff --git a/src/app.py b/src/app.py\nindex 1111111..2222222 100644\n--- a/src/app.py\n+++ b/src/app.py\n@@ -1,7 +1,7 @@ def main():\n a = 1\n b = 2\n c = 3\n-d = 4\n+d = 5\n e = 6\n f = 7\n g = 8\n";
        let out = minimal_diff(diff);
        assert_eq!(
            out,
            "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n@@ -3,3 +3,3 @@ def main():\n c = 3\n-d = 4\n+d = 5\n e = 6\n"
        );
    }

    #[test]
    fn whole_new_and_deleted_files_are_summarized() {
        let diff = "diff --git a/keys/new.pem b/keys/new.pem\nnew file mode 100644\n--- /dev/null\n+++ b/keys/new.pem\n@@ -0,0 +1,2 @@\n+secret line one\n+secret line two\ndiff --git a/old.txt b/old.txt\ndeleted file mode 100644\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n";
        let out = minimal_diff(diff);
        assert!(
            !out.contains("secret line") && !out.contains("gone"),
            "{out}"
        );
        assert!(out.contains("new file keys/new.pem (+2 lines"), "{out}");
        assert!(out.contains("deleted file old.txt (-1 lines"), "{out}");
    }

    #[test]
    fn text_that_is_not_a_diff_is_kept() {
        assert_eq!(minimal_diff("just words\n"), "just words\n");
    }
}
