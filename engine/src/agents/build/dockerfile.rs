//! A Dockerfile parser for review: instructions with their first line number, continuation
//! lines joined, comments dropped, the `# escape=` directive and heredocs (`RUN <<EOF`)
//! honoured. It reads what the review rules need, not everything BuildKit accepts.
//!
//! (The `dockerfile-parser` crate was considered; it is unmaintained since 2021 and rejects
//! heredocs, so a line parser with the rules' needs is the smaller risk.)

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// Upper-cased keyword: `FROM`, `RUN`, ...
    pub keyword: String,
    /// Everything after the keyword, continuations joined with a space, heredoc bodies
    /// appended after a newline.
    pub arguments: String,
}

/// A stage: its `FROM` instruction and those after it up to the next `FROM`.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    pub from: &'a Instruction,
    /// The base image reference as written.
    pub base: String,
    /// The `AS name`, lower-cased.
    pub name: Option<String>,
    pub instructions: &'a [Instruction],
}

pub fn parse(text: &str) -> Vec<Instruction> {
    let lines: Vec<&str> = text.lines().collect();
    let escape = escape_character(&lines);
    let mut instructions = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let trimmed = lines[index].trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            index += 1;
            continue;
        }
        let start = index;
        let mut joined = String::new();
        let mut current = trimmed.to_string();
        loop {
            let continued = current.ends_with(escape);
            if continued {
                current.pop();
            }
            if !joined.is_empty() && !current.trim().is_empty() {
                joined.push(' ');
            }
            joined.push_str(current.trim());
            index += 1;
            if !continued {
                break;
            }
            // Comment and blank lines inside a continuation are dropped, as Docker does.
            while index < lines.len()
                && (lines[index].trim().is_empty() || lines[index].trim_start().starts_with('#'))
            {
                index += 1;
            }
            if index >= lines.len() {
                break;
            }
            current = lines[index].trim().to_string();
        }
        let (keyword, arguments) = match joined.split_once(char::is_whitespace) {
            Some((keyword, rest)) => (keyword.to_ascii_uppercase(), rest.trim().to_string()),
            None => (joined.to_ascii_uppercase(), String::new()),
        };
        let mut arguments = arguments;
        for delimiter in heredoc_delimiters(&arguments) {
            while index < lines.len() {
                let body = lines[index];
                index += 1;
                if body.trim() == delimiter {
                    break;
                }
                arguments.push('\n');
                arguments.push_str(body);
            }
        }
        instructions.push(Instruction {
            line: start + 1,
            keyword,
            arguments,
        });
    }
    instructions
}

/// Splits instructions into stages (instructions before the first `FROM`, such as global
/// `ARG`s, belong to none).
pub fn stages(instructions: &[Instruction]) -> Vec<Stage<'_>> {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).copied().unwrap_or(instructions.len());
            let from = &instructions[start];
            let words: Vec<&str> = from
                .arguments
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let base = words.first().map_or_else(String::new, |w| w.to_string());
            let name = match words.as_slice() {
                [_, as_word, name, ..] if as_word.eq_ignore_ascii_case("as") => {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            };
            Stage {
                from,
                base,
                name,
                instructions: &instructions[start + 1..end],
            }
        })
        .collect()
}

/// Words of a shell-form or JSON exec-form argument list.
pub fn words(arguments: &str) -> Vec<String> {
    let trimmed = arguments.trim();
    if trimmed.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return list;
    }
    trimmed.split_whitespace().map(str::to_string).collect()
}

fn escape_character(lines: &[&str]) -> char {
    // Parser directives are `# name=value` lines before anything else.
    for line in lines {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        if let Some((name, value)) = directive.split_once('=') {
            if name.trim().eq_ignore_ascii_case("escape") {
                return value.trim().chars().next().unwrap_or('\\');
            }
            continue;
        }
        break;
    }
    '\\'
}

fn heredoc_delimiters(arguments: &str) -> Vec<String> {
    let mut delimiters = Vec::new();
    let mut rest = arguments;
    while let Some(at) = rest.find("<<") {
        let after = rest[at + 2..].trim_start_matches('-');
        let word: String = after
            .trim_matches(|c| c == '"' || c == '\'')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            delimiters.push(word);
        }
        rest = &rest[at + 2..];
    }
    delimiters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_heredocs() {
        let text = "# syntax=docker/dockerfile:1\nFROM rust:1.80 AS build\n\n# a comment\nRUN apt-get update && \\\n    # inside\n    apt-get install -y gcc\nCOPY . .\nRUN <<EOF\ncargo build\nEOF\nfrom scratch\nCOPY --from=build /app /app\n";
        let parsed = parse(text);
        let summary: Vec<(usize, &str)> = parsed
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, "FROM"),
                (5, "RUN"),
                (8, "COPY"),
                (9, "RUN"),
                (12, "FROM"),
                (13, "COPY")
            ]
        );
        assert_eq!(
            parsed[1].arguments,
            "apt-get update && apt-get install -y gcc"
        );
        assert!(parsed[3].arguments.contains("cargo build"));
        let stages = stages(&parsed);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("build"));
        assert_eq!(stages[1].base, "scratch");
        assert_eq!(stages[1].instructions.len(), 1);
    }

    #[test]
    fn escape_directive() {
        let parsed = parse("# escape=`\nFROM scratch\nCOPY a `\n  b /\n");
        assert_eq!(parsed[1].arguments, "a b /");
    }
}
