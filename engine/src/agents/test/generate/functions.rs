//! Which functions a commit changed (Rust and Python, top-level functions), and whether any
//! test refers to them. Reading is line-based on purpose: it needs no parser per language, and
//! a function it misses only means no test is proposed for it.

use super::super::files::Hunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Rust,
    Python,
}

impl Language {
    pub fn of(path: &str) -> Option<Language> {
        if path.ends_with(".rs") {
            Some(Language::Rust)
        } else if path.ends_with(".py") {
            Some(Language::Python)
        } else {
            None
        }
    }
}

/// A top-level function: its name and 1-based line span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub start: u32,
    pub end: u32,
}

/// Top-level functions of a file, tests and test modules left out.
pub fn functions(language: Language, text: &str) -> Vec<Function> {
    match language {
        Language::Python => python_functions(text),
        Language::Rust => rust_functions(text),
    }
}

fn python_functions(text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let rest = line.strip_prefix("async ").unwrap_or(line);
        let Some(rest) = rest.strip_prefix("def ") else {
            continue;
        };
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        let name = name.trim();
        if name.starts_with("test") || name.starts_with("__") || !is_identifier(name) {
            continue;
        }
        // The body runs until the next line back at column 0 (blank lines and comments aside).
        let end = lines[index + 1..]
            .iter()
            .position(|l| {
                !l.trim().is_empty()
                    && !l.starts_with(char::is_whitespace)
                    && !l.starts_with('#')
                    && !l.starts_with(')')
            })
            .map_or(lines.len(), |offset| index + 1 + offset);
        let end = (index + 1..end)
            .rev()
            .find(|&i| !lines[i].trim().is_empty())
            .unwrap_or(index);
        found.push(Function {
            name: name.to_string(),
            start: index as u32 + 1,
            end: end as u32 + 1,
        });
    }
    found
}

fn rust_functions(text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut index = 0;
    let mut attributes: Vec<&str> = Vec::new();
    while index < lines.len() {
        let line = lines[index];
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            index += 1;
            continue;
        }
        if line.starts_with("#[") {
            attributes.push(line.trim());
            index += 1;
            continue;
        }
        let test_only = attributes.iter().any(|a| a.contains("test"));
        attributes.clear();
        // Only items at column 0: methods and nested functions are left alone.
        let item = strip_visibility(line);
        let item = ["const ", "async ", "unsafe ", "extern \"C\" "]
            .iter()
            .fold(item, |s, p| s.strip_prefix(p).unwrap_or(s));
        let end = block_end(&lines, index);
        if let Some(rest) = item.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !test_only && !name.is_empty() && name != "main" {
                found.push(Function {
                    name,
                    start: index as u32 + 1,
                    end: end as u32 + 1,
                });
            }
        }
        index = end + 1;
    }
    found
}

fn strip_visibility(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("pub(") {
        return rest.split_once(") ").map_or(line, |(_, after)| after);
    }
    line.strip_prefix("pub ").unwrap_or(line)
}

/// The last line of the item starting at `start`: where its braces balance (strings, chars
/// and comments are skipped roughly: enough for well-formatted code), or the line itself.
fn block_end(lines: &[&str], start: usize) -> usize {
    let mut depth = 0i32;
    let mut opened = false;
    for (index, line) in lines.iter().enumerate().skip(start) {
        let code = line.split("//").next().unwrap_or(line);
        let mut in_string = false;
        let mut previous = ' ';
        for c in code.chars() {
            match c {
                '"' if previous != '\\' => in_string = !in_string,
                '{' if !in_string => {
                    depth += 1;
                    opened = true;
                }
                '}' if !in_string => depth -= 1,
                ';' if !in_string && !opened && depth == 0 => return index,
                _ => {}
            }
            previous = c;
        }
        if opened && depth <= 0 {
            return index;
        }
    }
    lines.len().saturating_sub(1).max(start)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Functions that a hunk touches (a pure deletion touches the lines around it).
pub fn touched(functions: &[Function], hunks: &[Hunk]) -> Vec<Function> {
    functions
        .iter()
        .filter(|f| {
            hunks.iter().any(|h| {
                let (first, last) = if h.count == 0 {
                    (h.start, h.start + 1)
                } else {
                    (h.start, h.start + h.count - 1)
                };
                first <= f.end && last >= f.start
            })
        })
        .cloned()
        .collect()
}

/// Whether `name` appears as a whole word in `text`.
pub fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

/// The part of a Rust file that is tests (from its first `#[cfg(test)]` on).
pub fn rust_test_part(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or("", |at| &text[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON: &str = "import os\n\ndef charge(amount):\n    if amount < 0:\n        raise ValueError()\n\n    return amount * 100\n\n\nasync def fetch(x):\n    return x\n\nclass Card:\n    def number(self):\n        return 1\n\ndef test_inline():\n    pass\n\ndef multi(\n    a,\n):\n    return a\n";

    const RUST: &str = "use std::fmt;\n\npub fn double(x: i32) -> i32 {\n    x * 2\n}\n\nfn helper(s: &str) -> String { format!(\"{{}}\", s) }\n\nimpl Thing {\n    fn method(&self) {}\n}\n\npub(crate) const fn size() -> usize {\n    4\n}\n\n#[test]\nfn lonely() {}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn doubles() { assert_eq!(double(2), 4); }\n}\n";

    #[test]
    fn python_top_level_functions_and_their_spans() {
        let found = functions(Language::Python, PYTHON);
        let spans: Vec<(&str, u32, u32)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.start, f.end))
            .collect();
        assert_eq!(
            spans,
            [("charge", 3, 7), ("fetch", 10, 11), ("multi", 20, 23)]
        );
    }

    #[test]
    fn rust_top_level_functions_skip_tests_and_methods() {
        let found = functions(Language::Rust, RUST);
        let spans: Vec<(&str, u32, u32)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.start, f.end))
            .collect();
        assert_eq!(
            spans,
            [("double", 3, 5), ("helper", 7, 7), ("size", 13, 15)]
        );
    }

    #[test]
    fn hunks_touch_functions_and_names_are_whole_words() {
        let found = functions(Language::Python, PYTHON);
        let names = |hunks: &[Hunk]| {
            touched(&found, hunks)
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&[Hunk { start: 5, count: 1 }]), ["charge"]);
        assert_eq!(
            names(&[Hunk { start: 8, count: 0 }]),
            Vec::<String>::new(),
            "between functions"
        );
        assert_eq!(
            names(&[Hunk { start: 6, count: 0 }]),
            ["charge"],
            "a deletion inside the body"
        );
        assert!(mentions("assert charge(1) == 100", "charge"));
        assert!(!mentions("assert surcharge(1)", "charge"));
        assert!(!mentions("charged", "charge"));
        assert!(rust_test_part(RUST).contains("doubles"));
    }
}
