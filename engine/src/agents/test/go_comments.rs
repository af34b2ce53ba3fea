//! Go changes that cannot change what runs: a `.go` file whose text, with its comments taken
//! out, is the same before and after, line for line (a licence header reworded, a comment
//! fixed). Line numbers stay where they were (`runtime.Caller` and panics report them), so a
//! comment added or removed as a line of its own still counts as a change. Comments that
//! are code are kept as text: build constraints (`//go:build`, `// +build`), compiler
//! directives (`//go:…`, `//line`), cgo's `//export` and `//extern`; a file importing `"C"`
//! (whose preamble comment is C code) is never comment-only.

use std::path::Path;

use super::files;
use crate::exec::git;

/// The paths of `changed` whose change can alter behaviour: every path but the `.go` files
/// `commit` changed only in comments.
pub fn behaviour_changed(workspace: &Path, commit: &str, changed: &[String]) -> Vec<String> {
    let parent = files::parent(workspace, commit);
    changed
        .iter()
        .filter(|path| {
            let Some(parent) = parent.as_deref().filter(|_| path.ends_with(".go")) else {
                return true;
            };
            let show = |rev: &str| git(workspace, &["show", &format!("{rev}:{path}")]).ok();
            match (show(parent), show(commit)) {
                (Some(before), Some(after)) => !comments_only(&before, &after),
                _ => true,
            }
        })
        .cloned()
        .collect()
}

/// Whether two versions of a Go file differ only in comments, line for line.
pub fn comments_only(before: &str, after: &str) -> bool {
    match (code(before), code(after)) {
        (Some(before), Some(after)) => before == after,
        _ => false,
    }
}

/// The text with its comments taken out (a line comment and the blanks before it removed, a
/// block comment left as its newlines, or one space), or `None` for a cgo file.
fn code(text: &str) -> Option<String> {
    if text.contains("\"C\"") {
        return None;
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let take_blank_tail = |out: &mut String| {
        while out.ends_with(' ') || out.ends_with('\t') {
            out.pop();
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match (c, next) {
            ('/', Some('/')) => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p);
                let comment: String = chars[i..end].iter().collect();
                if directive(&comment[2..]) {
                    out.push_str(&comment);
                } else {
                    take_blank_tail(&mut out);
                }
                i = end;
            }
            ('/', Some('*')) => {
                let close = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                    .map_or(chars.len(), |j| j + 2);
                let comment: String = chars[i..close].iter().collect();
                if comment[2..].starts_with("line ") {
                    out.push_str(&comment);
                } else {
                    take_blank_tail(&mut out);
                    let newlines = comment.matches('\n').count();
                    if newlines == 0 {
                        out.push(' ');
                    }
                    out.extend(std::iter::repeat_n('\n', newlines));
                }
                i = close;
            }
            ('"' | '\'' | '`', _) => {
                // A literal, copied as it is (a raw string may span lines and hold `//`).
                let mut j = i + 1;
                while j < chars.len() && chars[j] != c {
                    if c != '`' && chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                let end = (j + 1).min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A comment that is code: a build constraint or a directive to the compiler or cgo.
fn directive(body: &str) -> bool {
    body.starts_with("go:")
        || body.starts_with("line ")
        || body.trim_start().starts_with("+build")
        || body.starts_with("export ")
        || body.starts_with("extern ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LRU: &str = "// Copyright (c) HashiCorp, Inc.\n// SPDX-License-Identifier: MPL-2.0\n\npackage lru\n\n// Get looks up a key.\nfunc (c *Cache) Get(k string) (v int, ok bool) {\n\treturn c.lru.Get(k) // locked\n}\n\nconst url = \"http://example.com\"\nvar raw = `a // not a comment\nb`\n";

    #[test]
    fn reworded_comments_are_not_a_change() {
        let after = LRU
            .replace("(c) HashiCorp, Inc.", "IBM Corp. 2014, 2025")
            .replace("looks up a key.", "returns the value of a key.")
            .replace(" // locked", "   // under the lock");
        assert!(comments_only(LRU, &after));
    }

    #[test]
    fn code_literals_moved_lines_and_directives_are_changes() {
        // Code.
        assert!(!comments_only(
            LRU,
            &LRU.replace("c.lru.Get(k)", "c.lru.Peek(k)")
        ));
        // What looks like a comment inside a string or a raw string is text.
        assert!(!comments_only(
            LRU,
            &LRU.replace("http://example", "http://other")
        ));
        assert!(!comments_only(
            LRU,
            &LRU.replace("// not a comment", "// other")
        ));
        // A comment line added: every later line moves (runtime.Caller reports lines).
        assert!(!comments_only(
            LRU,
            &LRU.replace("package lru\n", "package lru\n// x\n")
        ));
        // A build constraint.
        let tagged = format!("//go:build linux\n\n{LRU}");
        assert!(!comments_only(&tagged, &tagged.replace("linux", "darwin")));
        // A block comment joins or splits tokens like a space or a newline.
        assert!(!comments_only("a := b/**/c\n", "a := bc\n"));
        assert!(comments_only(
            "a := b /* x */ + c\n",
            "a := b /* y */ + c\n"
        ));
        // cgo's preamble is C.
        let cgo = "package p\n\n// int add(int a, int b) { return a + b; }\nimport \"C\"\n";
        assert!(!comments_only(cgo, &cgo.replace("a + b", "a - b")));
    }
}
