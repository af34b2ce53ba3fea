//! A rewritten Dockerfile for the review findings that have a mechanical fix. Rules only: the
//! text is moved and edited line by line, so everything the rules do not touch (comments,
//! layout, other instructions) stays as the team wrote it. Nothing here is trusted on its
//! own: `prove` builds the proposal and keeps it only when it measurably helps.
//!
//! | finding                        | rewrite                                                    |
//! |--------------------------------|------------------------------------------------------------|
//! | `copy-all-before-dependencies` | copy the install's manifests first, install, then `COPY .` |
//! | `package-cache-in-layer`       | `pip install --no-cache-dir`, `apk add --no-cache`, apt lists removed in the same `RUN` |
//!
//! The other findings (an unpinned base, a single-stage compiled build, root, no
//! `.dockerignore`) need facts a rule cannot know (which digest, which artefact, which uid)
//! and are left to the explanation.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::dockerfile::{Instruction, parse, words};
use super::review::{APK_ADD, APT_INSTALL, PIP_INSTALL};

/// One edit of the proposal, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub rule: &'static str,
    /// 1-based line of the original instruction it is about.
    pub line: usize,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub text: String,
    pub changes: Vec<Change>,
}

/// An install that needs only its manifests, and which manifests (required first, then the
/// lock files copied when present). `pip install -r` names its own files.
struct Install {
    pattern: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
}

const INSTALLS: &[Install] = &[
    Install {
        pattern: r"\bnpm\s+(ci|install|i)\b",
        required: &["package.json"],
        optional: &["package-lock.json", "npm-shrinkwrap.json"],
    },
    Install {
        pattern: r"\byarn(\s+install)?\s*($|&&|;)",
        required: &["package.json"],
        optional: &["yarn.lock"],
    },
    Install {
        pattern: r"\bpnpm\s+(install|i)\b",
        required: &["package.json"],
        optional: &["pnpm-lock.yaml"],
    },
    Install {
        pattern: r"\bgo\s+mod\s+download\b",
        required: &["go.mod"],
        optional: &["go.sum"],
    },
    Install {
        pattern: r"\bbundle\s+install\b",
        required: &["Gemfile"],
        optional: &["Gemfile.lock"],
    },
    Install {
        pattern: r"\bcomposer\s+install\b",
        required: &["composer.json"],
        optional: &["composer.lock"],
    },
];

static COMPILED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    INSTALLS
        .iter()
        .map(|i| Regex::new(i.pattern).expect("valid regex"))
        .collect()
});

/// One instruction's lines, with the comment and blank lines just above it (they travel
/// with it when it moves). `instruction` is `None` for the lines after the last one.
struct Piece {
    lines: Vec<String>,
    instruction: Option<usize>,
}

/// The proposal for `text`, or `None` when no rule applies. `in_context` says whether a
/// path (relative to the build context) is a file there.
pub fn propose(text: &str, in_context: &dyn Fn(&str) -> bool) -> Option<Proposal> {
    let instructions = parse(text);
    // A custom escape character or a heredoc makes line surgery unsafe: leave such files be.
    if text.lines().any(|l| {
        let l = l.trim_start().to_ascii_lowercase();
        l.starts_with("# escape=") || l.starts_with("#escape=")
    }) || instructions.iter().any(|i| i.arguments.contains('\n'))
    {
        return None;
    }
    let mut pieces = split(text, &instructions);
    let mut changes = Vec::new();
    package_caches(&instructions, &mut pieces, &mut changes);
    copy_order(&instructions, &mut pieces, in_context, &mut changes);
    if changes.is_empty() {
        return None;
    }
    let mut out: String = pieces
        .iter()
        .flat_map(|p| p.lines.iter())
        .map(|l| format!("{l}\n"))
        .collect();
    if !text.ends_with('\n') {
        out.pop();
    }
    changes.sort_by_key(|c| c.line);
    Some(Proposal { text: out, changes })
}

fn split(text: &str, instructions: &[Instruction]) -> Vec<Piece> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    for (index, instruction) in instructions.iter().enumerate() {
        let first = instruction.line - 1;
        let next = instructions
            .get(index + 1)
            .map_or(lines.len(), |n| n.line - 1);
        // The instruction ends at its last line that is neither blank nor a comment.
        let mut end = next;
        while end > first + 1 && {
            let l = lines[end - 1].trim();
            l.is_empty() || l.starts_with('#')
        } {
            end -= 1;
        }
        pieces.push(Piece {
            lines: lines[start..end].iter().map(|l| l.to_string()).collect(),
            instruction: Some(index),
        });
        start = end;
    }
    pieces.push(Piece {
        lines: lines[start..].iter().map(|l| l.to_string()).collect(),
        instruction: None,
    });
    pieces
}

fn piece_of(pieces: &[Piece], instruction: usize) -> Option<usize> {
    pieces
        .iter()
        .position(|p| p.instruction == Some(instruction))
}

/// Replaces the first match of `pattern` in the piece's instruction lines (not its comments).
fn edit_first(piece: &mut Piece, pattern: &Regex, replacement: &str) -> bool {
    for line in piece.lines.iter_mut() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if pattern.is_match(line) {
            *line = pattern.replace(line, replacement).into_owned();
            return true;
        }
    }
    false
}

fn package_caches(instructions: &[Instruction], pieces: &mut [Piece], changes: &mut Vec<Change>) {
    let mut pip_env_off = false;
    for (index, instruction) in instructions.iter().enumerate() {
        match instruction.keyword.as_str() {
            "FROM" => pip_env_off = false,
            "ENV" if instruction.arguments.contains("PIP_NO_CACHE_DIR") => pip_env_off = true,
            _ => {}
        }
        // Exec-form RUNs (`RUN ["…"]`) have no shell to chain a cleanup onto.
        if instruction.keyword != "RUN" || instruction.arguments.trim_start().starts_with('[') {
            continue;
        }
        let Some(at) = piece_of(pieces, index) else {
            continue;
        };
        let text = &instruction.arguments;
        if PIP_INSTALL.is_match(text)
            && !text.contains("--no-cache-dir")
            && !pip_env_off
            && edit_first(&mut pieces[at], &PIP_INSTALL, "$1 --no-cache-dir")
        {
            changes.push(Change {
                rule: "package-cache-in-layer",
                line: instruction.line,
                description:
                    "`pip install --no-cache-dir`: pip's download cache stays out of the layer"
                        .into(),
            });
        }
        if APK_ADD.is_match(text)
            && !text.contains("--no-cache")
            && edit_first(&mut pieces[at], &APK_ADD, "$1 --no-cache")
        {
            changes.push(Change {
                rule: "package-cache-in-layer",
                line: instruction.line,
                description: "`apk add --no-cache`: the package index stays out of the layer"
                    .into(),
            });
        }
        if APT_INSTALL.is_match(text) && !text.contains("/var/lib/apt/lists") {
            let last = pieces[at].lines.len() - 1;
            let line = &mut pieces[at].lines[last];
            let kept = line.trim_end().to_string();
            *line = format!("{kept} && rm -rf /var/lib/apt/lists/*");
            changes.push(Change {
                rule: "package-cache-in-layer",
                line: instruction.line,
                description: "apt's package lists removed in the same RUN that fetched them".into(),
            });
        }
    }
}

/// What a `COPY`/`ADD` of the whole context copies to: `Some((flags, destination))`.
fn copy_all(instruction: &Instruction) -> Option<(Vec<String>, String)> {
    if instruction.keyword != "COPY" && instruction.keyword != "ADD" {
        return None;
    }
    let all = words(&instruction.arguments);
    let (flags, args): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|w| w.starts_with("--"));
    // `--from` copies from another stage or image, not the context.
    if flags.iter().any(|f| f.starts_with("--from")) || args.len() != 2 {
        return None;
    }
    matches!(args[0].as_str(), "." | "./").then(|| (flags, args[1].clone()))
}

/// The manifests `run` needs from the context, when it is an install that needs nothing else.
fn manifests(
    run: &str,
    destination: &str,
    in_context: &dyn Fn(&str) -> bool,
) -> Option<Vec<String>> {
    if PIP_INSTALL.is_match(run) {
        let words = words(run);
        let mut files = Vec::new();
        let mut iter = words.iter().peekable();
        while let Some(word) = iter.next() {
            if word == "-r" || word == "--requirement" {
                files.push(iter.next()?.clone());
            } else if let Some(file) = word.strip_prefix("--requirement=") {
                files.push(file.to_string());
            } else if word == "." || word == "-e" || word.starts_with("./") {
                // Installing the project itself needs its source.
                return None;
            }
        }
        let relative: Option<Vec<String>> =
            files.iter().map(|f| context_path(f, destination)).collect();
        let relative = relative?;
        return (!relative.is_empty() && relative.iter().all(|f| in_context(f)))
            .then_some(relative);
    }
    let install = INSTALLS
        .iter()
        .zip(COMPILED.iter())
        .find(|(_, pattern)| pattern.is_match(run))
        .map(|(install, _)| install)?;
    if !install.required.iter().all(|f| in_context(f)) {
        return None;
    }
    Some(
        install
            .required
            .iter()
            .chain(install.optional.iter().filter(|f| in_context(f)))
            .map(|f| f.to_string())
            .collect(),
    )
}

/// `file` as the install names it → its path in the context, given where `COPY . DEST` put
/// the context. Relative names resolve against the working directory, which is only known
/// to be `DEST` when `DEST` is `.`.
fn context_path(file: &str, destination: &str) -> Option<String> {
    let destination = destination.trim_end_matches('/');
    if let Some(rest) = file
        .strip_prefix(destination)
        .filter(|_| destination.starts_with('/'))
    {
        return rest.strip_prefix('/').map(str::to_string);
    }
    let relative = file.strip_prefix("./").unwrap_or(file);
    (matches!(destination, "." | "") && !relative.starts_with('/') && !relative.contains(".."))
        .then(|| relative.to_string())
}

fn copy_order(
    instructions: &[Instruction],
    pieces: &mut Vec<Piece>,
    in_context: &dyn Fn(&str) -> bool,
    changes: &mut Vec<Change>,
) {
    let mut index = 0;
    while index < instructions.len() {
        let Some((flags, destination)) = copy_all(&instructions[index]) else {
            index += 1;
            continue;
        };
        // Only declarations may stand between the copy and the install: they move along.
        let mut install = None;
        for (k, next) in instructions.iter().enumerate().skip(index + 1) {
            match next.keyword.as_str() {
                "ENV" | "ARG" | "LABEL" | "EXPOSE" => continue,
                "RUN" => {
                    install = manifests(&next.arguments, &destination, in_context)
                        .map(|files| (k, files));
                }
                _ => {}
            }
            break;
        }
        let Some((run, files)) = install else {
            index += 1;
            continue;
        };
        let (Some(copy_at), Some(run_at)) = (piece_of(pieces, index), piece_of(pieces, run)) else {
            index += 1;
            continue;
        };
        // Always a directory: `COPY a.txt /srv` would make a file `/srv` when it is missing.
        let target = format!("{}/", destination.trim_end_matches('/'));
        let mut copy_line = vec![instructions[index].keyword.clone()];
        copy_line.extend(flags.iter().cloned());
        copy_line.extend(files.iter().cloned());
        copy_line.push(target);
        let moved: Vec<Piece> = pieces.drain(copy_at + 1..=run_at).collect();
        let mut block = vec![Piece {
            lines: vec![copy_line.join(" ")],
            instruction: None,
        }];
        block.extend(moved);
        for (offset, piece) in block.into_iter().enumerate() {
            pieces.insert(copy_at + offset, piece);
        }
        changes.push(Change {
            rule: "copy-all-before-dependencies",
            line: instructions[index].line,
            description: format!(
                "copy {} first and install (line {}) before `COPY .`: an application change reuses the installed layer",
                files.join(", "),
                instructions[run].line
            ),
        });
        index = run + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(files: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |path: &str| files.contains(&path)
    }

    #[test]
    fn the_install_moves_before_the_copy_with_its_manifests() {
        let text = "FROM base:1\nWORKDIR /srv\n# everything\nCOPY --chown=10 . .\nENV MODE=prod\nRUN pip install -r requirements.txt \\\n    && echo done\nUSER 10\nCMD [\"app\"]\n";
        let proposal = propose(text, &has(&["requirements.txt"])).expect("a proposal");
        assert_eq!(
            proposal.text,
            "FROM base:1\nWORKDIR /srv\nCOPY --chown=10 requirements.txt ./\nENV MODE=prod\nRUN pip install --no-cache-dir -r requirements.txt \\\n    && echo done\n# everything\nCOPY --chown=10 . .\nUSER 10\nCMD [\"app\"]\n"
        );
        let rules: Vec<&str> = proposal.changes.iter().map(|c| c.rule).collect();
        assert_eq!(
            rules,
            ["copy-all-before-dependencies", "package-cache-in-layer"]
        );
    }

    #[test]
    fn absolute_destinations_and_node_locks() {
        let text = "FROM node:20\nCOPY . /app\nRUN cd /app && npm ci\n";
        let proposal =
            propose(text, &has(&["package.json", "package-lock.json"])).expect("a proposal");
        assert_eq!(
            proposal.text,
            "FROM node:20\nCOPY package.json package-lock.json /app/\nRUN cd /app && npm ci\nCOPY . /app\n"
        );
        let text =
            "FROM python:3.12\nCOPY . /srv\nRUN pip install --no-cache-dir -r /srv/req.txt\n";
        let proposal = propose(text, &has(&["req.txt"])).expect("a proposal");
        assert!(
            proposal.text.contains("COPY req.txt /srv/\nRUN"),
            "{}",
            proposal.text
        );
    }

    #[test]
    fn installs_that_need_the_source_or_missing_manifests_are_left_alone() {
        // The project itself is installed: it needs everything.
        let text = "FROM python:3.12\nCOPY . .\nRUN pip install --no-cache-dir .\n";
        assert_eq!(propose(text, &has(&[])), None);
        // A build, not an install.
        let text = "FROM golang:1.22\nCOPY . .\nRUN go build ./...\n";
        assert_eq!(propose(text, &has(&["go.mod"])), None);
        // Something else runs between the copy and the install.
        let text = "FROM node:20\nCOPY . .\nRUN ./prepare.sh\nRUN npm ci\n";
        assert_eq!(propose(text, &has(&["package.json"])), None);
        // The manifest is not in the context.
        let text = "FROM node:20\nCOPY . .\nRUN npm ci\n";
        assert_eq!(propose(text, &has(&[])), None);
        // Heredocs are not edited.
        let text = "FROM alpine:3.20\nRUN <<EOF\napk add curl\nEOF\n";
        assert_eq!(propose(text, &has(&[])), None);
    }

    #[test]
    fn package_caches_are_cleaned_in_their_own_run() {
        let text = "FROM debian:12\nRUN apt-get update && \\\n    apt-get install -y curl\nFROM alpine:3.20\nRUN apk add curl\nRUN [\"apk\", \"add\", \"git\"]\n";
        let proposal = propose(text, &has(&[])).expect("a proposal");
        assert_eq!(
            proposal.text,
            "FROM debian:12\nRUN apt-get update && \\\n    apt-get install -y curl && rm -rf /var/lib/apt/lists/*\nFROM alpine:3.20\nRUN apk add --no-cache curl\nRUN [\"apk\", \"add\", \"git\"]\n"
        );
        assert_eq!(proposal.changes.len(), 2);
    }
}
