//! The added and removed lines of each file in a commit's patch, numbered, and marked as code,
//! comment or blank for the file's language.
//!
//! Content rules (`detect.rs`, the release and comment-only refinements of `classify.rs`) read
//! these instead of paths. A patch shows only a few lines around each change, so a block
//! comment or docstring opened before a hunk is not seen: such lines count as code. Erring that
//! way keeps the floor high — a comment taken for code can only raise a risk, never hide one.

/// What a changed line is, for the file's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Code,
    Comment,
    Blank,
}

/// One added or removed line: its number in the new (added) or old (removed) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: u32,
    pub text: String,
    pub kind: Kind,
    /// The code of a code line without its trailing comment (empty for comments).
    /// Detectors match this, so `x = 1  # verify=False was here` is not a TLS change.
    pub code: String,
    /// In TOML files, the `[table]` header the line sits under, when the hunk shows it.
    pub table: Option<String>,
}

/// The changed lines of one file.
#[derive(Debug, Clone, Default)]
pub struct FileLines {
    pub path: String,
    pub added: Vec<Line>,
    pub removed: Vec<Line>,
    /// Lines past `MAX_LINES_PER_FILE` were not read.
    pub truncated: bool,
    /// A lockfile hunk shows a registry or git source (`source = "registry+…"`, `"resolved":`):
    /// the versions changed there belong to dependencies, not to the package itself.
    pub shows_dependency_source: bool,
}

impl FileLines {
    /// Added lines that are code.
    pub fn added_code(&self) -> impl Iterator<Item = &Line> {
        self.added.iter().filter(|l| l.kind == Kind::Code)
    }

    /// Removed lines that are code.
    pub fn removed_code(&self) -> impl Iterator<Item = &Line> {
        self.removed.iter().filter(|l| l.kind == Kind::Code)
    }

    /// True when only comments changed: every changed line is a comment or blank, or a code
    /// line that comes back with the same code and another trailing comment.
    pub fn only_comments(&self) -> bool {
        if self.truncated {
            return false;
        }
        let mut removed: Vec<&str> = self.removed_code().map(|l| l.code.as_str()).collect();
        let mut added: Vec<&str> = self.added_code().map(|l| l.code.as_str()).collect();
        removed.sort_unstable();
        added.sort_unstable();
        let all = || self.added.iter().chain(&self.removed);
        removed == added
            && all().any(|l| {
                l.kind == Kind::Comment || (l.kind == Kind::Code && l.code != l.text.trim_end())
            })
    }
}

/// A file's changed lines past this many are not read: content rules look at the first ones,
/// and generated files of millions of lines must not cost memory or time.
const MAX_LINES_PER_FILE: usize = 20_000;

/// Changed lines read per commit, all files together: a merge of 300 files still reads in
/// bounded time; files past it are `truncated` (their lines count as unread, never as safe).
const MAX_LINES_PER_COMMIT: usize = 100_000;

/// The comment syntax of a language.
struct Syntax {
    line: &'static [&'static str],
    block: Option<(&'static str, &'static str)>,
    /// Python: a string statement opening a line (`"""…`) is a docstring.
    docstrings: bool,
    /// C family: a line starting with `* ` continues a block comment.
    star_continuation: bool,
}

const HASH: Syntax = Syntax {
    line: &["#"],
    block: None,
    docstrings: false,
    star_continuation: false,
};
const C_LIKE: Syntax = Syntax {
    line: &["//"],
    block: Some(("/*", "*/")),
    docstrings: false,
    star_continuation: true,
};

fn syntax(path: &str) -> Option<Syntax> {
    let lower = path.to_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if name.starts_with("dockerfile") || name == "makefile" || name.starts_with(".env") {
        return Some(HASH);
    }
    Some(match extension {
        "py" | "pyi" => Syntax {
            line: &["#"],
            block: None,
            docstrings: true,
            star_continuation: false,
        },
        "rb" | "sh" | "bash" | "zsh" | "yaml" | "yml" | "toml" | "pl" | "r" | "ex" | "exs"
        | "cfg" | "conf" | "properties" | "dockerfile" | "mk" | "gemspec" => HASH,
        "tf" | "hcl" | "tfvars" => Syntax {
            line: &["#", "//"],
            block: Some(("/*", "*/")),
            docstrings: false,
            star_continuation: false,
        },
        "ini" => Syntax {
            line: &["#", ";"],
            block: None,
            docstrings: false,
            star_continuation: false,
        },
        "php" => Syntax {
            line: &["//", "#"],
            block: Some(("/*", "*/")),
            docstrings: false,
            star_continuation: true,
        },
        "rs" | "go" | "js" | "jsx" | "mjs" | "cjs" | "ts" | "tsx" | "java" | "kt" | "kts"
        | "scala" | "c" | "h" | "cc" | "cpp" | "hpp" | "cs" | "swift" | "dart" | "groovy"
        | "gradle" | "proto" | "json5" | "jsonc" => C_LIKE,
        "css" | "scss" | "less" => Syntax {
            line: if extension == "css" { &[] } else { &["//"] },
            block: Some(("/*", "*/")),
            docstrings: false,
            star_continuation: true,
        },
        "sql" | "lua" | "hs" => Syntax {
            line: &["--"],
            block: Some(if extension == "lua" {
                ("--[[", "]]")
            } else {
                ("/*", "*/")
            }),
            docstrings: false,
            star_continuation: false,
        },
        "html" | "xml" | "vue" | "svelte" | "md" => Syntax {
            line: &[],
            block: Some(("<!--", "-->")),
            docstrings: false,
            star_continuation: false,
        },
        _ => return None,
    })
}

/// Per-side state while walking a hunk: the closing token of an open block comment.
#[derive(Default)]
struct Side {
    open_block: Option<&'static str>,
}

fn classify_line(text: &str, syntax: Option<&Syntax>, side: &mut Side) -> Kind {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Kind::Blank;
    }
    let Some(syntax) = syntax else {
        return Kind::Code;
    };
    if let Some(end) = side.open_block {
        if let Some(at) = trimmed.find(end) {
            side.open_block = None;
            let rest = trimmed[at + end.len()..].trim();
            return if rest.is_empty() {
                Kind::Comment
            } else {
                Kind::Code
            };
        }
        return Kind::Comment;
    }
    if syntax.line.iter().any(|t| trimmed.starts_with(t)) {
        // Lua's block opener also starts with its line token.
        if let Some((start, end)) = syntax.block
            && trimmed.starts_with(start)
            && !trimmed[start.len()..].contains(end)
        {
            side.open_block = Some(end);
        }
        return Kind::Comment;
    }
    if let Some((start, end)) = syntax.block
        && let Some(body) = trimmed.strip_prefix(start)
    {
        match body.find(end) {
            None => side.open_block = Some(end),
            Some(at) if !body[at + end.len()..].trim().is_empty() => return Kind::Code,
            Some(_) => {}
        }
        return Kind::Comment;
    }
    if syntax.docstrings {
        let unprefixed = trimmed.trim_start_matches(['r', 'R', 'u', 'U', 'b', 'B']);
        for quote in ["\"\"\"", "'''"] {
            if let Some(body) = unprefixed.strip_prefix(quote) {
                if !body.contains(quote) {
                    side.open_block = Some(quote);
                } else if !body.trim_end().ends_with(quote) {
                    return Kind::Code;
                }
                return Kind::Comment;
            }
        }
    }
    if syntax.star_continuation
        && (trimmed == "*"
            || trimmed.starts_with("* ")
            || trimmed.starts_with("*/")
            || trimmed.starts_with("**"))
        && !trimmed.ends_with(';')
    {
        return Kind::Comment;
    }
    Kind::Code
}

/// The code of `text` before a trailing line comment, outside string literals, with its
/// indentation (which is code in Python).
fn code_part(text: &str, syntax: Option<&Syntax>) -> String {
    let Some(syntax) = syntax else {
        return text.trim_end().to_string();
    };
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
            continue;
        }
        if matches!(c, '"' | '\'' | '`') {
            // A Rust lifetime or char is not a string: only pair quotes that close on the line.
            if text[at + 1..].contains(c) {
                quote = Some(c);
            }
            continue;
        }
        let rest = &text[at..];
        if syntax.line.iter().any(|t| rest.starts_with(t)) {
            return text[..at].trim_end().to_string();
        }
    }
    text.trim_end().to_string()
}

/// Marks the changed lines of `file` from the whole old and new file texts, so a docstring or
/// block comment opened far above a hunk is seen. A side whose text is missing keeps the
/// hunk-level marks.
pub fn relex(file: &mut FileLines, old: Option<&str>, new: Option<&str>) {
    let Some(syntax) = syntax(&file.path) else {
        return;
    };
    let kinds_of = |text: &str| -> Vec<Kind> {
        let mut side = Side::default();
        text.lines()
            .map(|l| classify_line(l, Some(&syntax), &mut side))
            .collect()
    };
    for (lines, text) in [(&mut file.removed, old), (&mut file.added, new)] {
        let Some(text) = text else {
            continue;
        };
        let kinds = kinds_of(text);
        for line in lines.iter_mut() {
            if let Some(kind) = (line.number as usize)
                .checked_sub(1)
                .and_then(|i| kinds.get(i))
            {
                line.kind = *kind;
                line.code = if *kind == Kind::Code {
                    code_part(&line.text, Some(&syntax))
                } else {
                    String::new()
                };
            }
        }
    }
}

/// True when the file's language has comments a hunk alone cannot place (block comments or
/// docstrings), so reading the whole file changes what its lines are.
pub fn needs_whole_file(path: &str) -> bool {
    syntax(path).is_some_and(|s| s.block.is_some() || s.docstrings)
}

/// Reads a unified patch (`git diff-tree -p`) into the changed lines of each file.
pub fn parse(patch: &str) -> Vec<FileLines> {
    let mut files: Vec<FileLines> = Vec::new();
    let mut syntax_of_file: Option<Syntax> = None;
    let (mut old_line, mut new_line) = (0u32, 0u32);
    let (mut old_side, mut new_side) = (Side::default(), Side::default());
    let mut in_hunk = false;
    let mut is_toml = false;
    let mut table: Option<String> = None;
    let mut read = 0usize;
    for raw in patch.lines() {
        if let Some(header) = raw.strip_prefix("diff --git ") {
            let path = header
                .rsplit_once(" b/")
                .map(|(_, p)| p.trim_matches('"').to_string())
                .unwrap_or_default();
            syntax_of_file = syntax(&path);
            is_toml = path.to_lowercase().ends_with(".toml") || path.ends_with("Cargo.lock");
            files.push(FileLines {
                path,
                ..FileLines::default()
            });
            in_hunk = false;
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if let Some(range) = raw.strip_prefix("@@ ") {
            if let Some((old, new)) = hunk_starts(range) {
                (old_line, new_line) = (old, new);
                (old_side, new_side) = (Side::default(), Side::default());
                in_hunk = true;
                table = None;
            }
            continue;
        }
        if !in_hunk {
            continue;
        }
        if file.added.len() + file.removed.len() >= MAX_LINES_PER_FILE
            || read >= MAX_LINES_PER_COMMIT
        {
            file.truncated = true;
            continue;
        }
        read += 1;
        let syntax = syntax_of_file.as_ref();
        if is_toml {
            let body = raw.get(1..).unwrap_or("").trim();
            if body.starts_with('[') && body.ends_with(']') {
                table = Some(body.trim_matches(['[', ']']).trim().to_string());
            }
        }
        if let Some(text) = raw.strip_prefix('+') {
            let kind = classify_line(text, syntax, &mut new_side);
            file.added.push(Line {
                number: new_line,
                text: text.to_string(),
                code: code_of(kind, text, syntax),
                kind,
                table: table.clone(),
            });
            new_line += 1;
        } else if let Some(text) = raw.strip_prefix('-') {
            let kind = classify_line(text, syntax, &mut old_side);
            file.removed.push(Line {
                number: old_line,
                text: text.to_string(),
                code: code_of(kind, text, syntax),
                kind,
                table: table.clone(),
            });
            old_line += 1;
        } else if let Some(text) = raw.strip_prefix(' ') {
            let trimmed = text.trim_start();
            if [
                "source = ",
                "checksum = ",
                "\"resolved\":",
                "\"integrity\":",
            ]
            .iter()
            .any(|marker| trimmed.starts_with(marker))
            {
                file.shows_dependency_source = true;
            }
            classify_line(text, syntax, &mut old_side);
            classify_line(text, syntax, &mut new_side);
            old_line += 1;
            new_line += 1;
        } else if !raw.starts_with('\\') {
            in_hunk = false;
        }
    }
    files
}

fn code_of(kind: Kind, text: &str, syntax: Option<&Syntax>) -> String {
    if kind == Kind::Code {
        code_part(text, syntax)
    } else {
        String::new()
    }
}

/// `-12,5 +14,7 @@ …` → (12, 14).
fn hunk_starts(range: &str) -> Option<(u32, u32)> {
    let mut parts = range.split_whitespace();
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let start = |s: &str| s.split(',').next()?.parse::<u32>().ok();
    Some((start(old)?, start(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(lines: &[Line]) -> Vec<Kind> {
        lines.iter().map(|l| l.kind).collect()
    }

    #[test]
    fn lines_are_numbered_and_typed_per_language() {
        let patch = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -10,4 +10,6 @@ fn x()\n /// Returns the name.\n-/// Old text.\n+/// New text.\n+/* a block\n+ * continues */\n pub fn name() {}\n-    let x = 1;\n+    let x = 2;\ndiff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,4 @@\n def f():\n+    \"\"\"Docstring\n+    more words.\n+    \"\"\"\n-    return 1\n";
        let files = parse(patch);
        assert_eq!(files.len(), 2);
        let rust = &files[0];
        assert_eq!(rust.path, "src/lib.rs");
        assert_eq!(
            kinds(&rust.added),
            vec![Kind::Comment, Kind::Comment, Kind::Comment, Kind::Code]
        );
        assert_eq!(rust.added[0].number, 11);
        assert_eq!(rust.added[3].number, 15);
        assert_eq!(rust.removed[1].number, 13);
        assert!(!rust.only_comments());
        let python = &files[1];
        assert_eq!(
            kinds(&python.added),
            vec![Kind::Comment, Kind::Comment, Kind::Comment]
        );
        assert_eq!(kinds(&python.removed), vec![Kind::Code]);
    }

    #[test]
    fn a_pointer_dereference_is_code_and_a_comment_only_hunk_is_comments() {
        let patch = "diff --git a/a.c b/a.c\n--- a/a.c\n+++ b/a.c\n@@ -1,1 +1,2 @@\n-// counts the items\n+// counts the items twice\n+*counter = 0;\n";
        let file = &parse(patch)[0];
        assert_eq!(kinds(&file.added), vec![Kind::Comment, Kind::Code]);
        let only = "diff --git a/a.go b/a.go\n--- a/a.go\n+++ b/a.go\n@@ -1,1 +1,1 @@\n-// Serve starts the server.\n+// Serve starts the HTTP server.\n";
        assert!(parse(only)[0].only_comments());
    }

    #[test]
    fn a_changed_trailing_comment_is_a_comment_change_and_a_changed_value_is_not() {
        let comment = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,1 +1,1 @@\n-    if not isinstance(u, str):  # type: ignore[reportX]  # guard\n+    if not isinstance(u, str):  # guard\n";
        assert!(parse(comment)[0].only_comments());
        let value = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,1 +1,1 @@\n-    url = \"http://a#b\"  # the old one\n+    url = \"http://c#b\"  # the old one\n";
        let file = &parse(value)[0];
        assert!(!file.only_comments());
        assert_eq!(file.added[0].code, "    url = \"http://c#b\"");
    }

    #[test]
    fn the_whole_file_places_a_docstring_opened_above_the_hunk() {
        let old = "def get(url, params=None):\n    \"\"\"Sends a GET request.\n\n    :param url: URL.\n    :param params: (optional) Dictionary\n    in the query string.\n    \"\"\"\n    return request(url, params)\n";
        let new = old.replace("    in the query", "        in the query");
        let patch = "diff --git a/api.py b/api.py\n--- a/api.py\n+++ b/api.py\n@@ -4,4 +4,4 @@\n     :param url: URL.\n     :param params: (optional) Dictionary\n-    in the query string.\n+        in the query string.\n     \"\"\"\n";
        let mut file = parse(patch).remove(0);
        assert!(!file.only_comments(), "the hunk alone cannot tell");
        relex(&mut file, Some(old), Some(&new));
        assert!(file.only_comments());
    }
}
