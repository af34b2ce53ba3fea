//! Risks that only a change's content shows: each detector reads the added or removed code
//! lines of a file and, when it fires, raises the floor with its named rule, the file, the line
//! number and the line itself.
//!
//! Deterministic by design: the same diff always gives the same reasons, and nothing here
//! reads the commit message. Comments are set aside before matching (`lines.rs`), so a
//! commented-out check counts as removed and a warning in a comment counts as nothing.
//! Documentation, tests, lockfiles and other machine-written files are not read.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::classify::Category;
use super::diff::ChangedFile;
use super::lines::{FileLines, Kind, Line};
use super::machine::machine_written;
use super::patterns::{ADDED_RULES, REMOVED_RULES};
use super::risk::Reason;

/// Compiled patterns, rule by rule, in the order of `patterns.rs`: one set per rule, so a
/// line is matched against all of a rule's patterns in one pass.
struct Compiled {
    added: Vec<RegexSet>,
    removed: Vec<RegexSet>,
}

static COMPILED: LazyLock<Result<Compiled, String>> = LazyLock::new(|| {
    let compile = |patterns: &[&str]| -> Result<RegexSet, String> {
        RegexSet::new(patterns).map_err(|e| format!("detector patterns {patterns:?}: {e}"))
    };
    Ok(Compiled {
        added: ADDED_RULES
            .iter()
            .map(|r| compile(r.patterns))
            .collect::<Result<_, _>>()?,
        removed: REMOVED_RULES
            .iter()
            .map(|r| compile(r.patterns))
            .collect::<Result<_, _>>()?,
    })
});

/// `rounds = 12`, `PBKDF2_ITERATIONS = 600000`, `"cost": 12`: a work factor and its value.
static WORK_FACTOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(\w*(?:rounds|iterations|work_?factor|cost))["']?\s*[:=]\s*(\d+)\b"#)
        .expect("the work-factor pattern is valid")
});

/// A removed handler counts only when handlers are this share of the removed code lines or
/// more: deleting a whole function that happened to handle an error is not "removing error
/// handling", deleting a `try`/`except` around code that stays is.
const HANDLER_SHARE: f64 = 0.15;

/// The content reasons of a change. `per_file` are the files' categories, `lines` their
/// changed lines (matched by path).
pub fn detect(files: &[ChangedFile], per_file: &[Category], lines: &[FileLines]) -> Vec<Reason> {
    let compiled = match &*COMPILED {
        Ok(compiled) => compiled,
        // Fail closed: without its detectors the floor cannot be trusted to be low.
        Err(message) => {
            return vec![Reason {
                rule: "detectors_unavailable",
                score: 70,
                detail: format!("content detectors could not be built ({message}): scored high"),
            }];
        }
    };
    let mut reasons = Vec::new();
    for (file, category) in files.iter().zip(per_file) {
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        if name.starts_with(".env") {
            reasons.push(Reason {
                rule: "env_file",
                score: 75,
                detail: format!(
                    "environment file {} {}: it sets runtime configuration and often secrets",
                    file.path, file.status
                ),
            });
        }
        if matches!(
            category,
            Category::Docs
                | Category::Tests
                | Category::Comments
                | Category::Release
                | Category::Binary
                | Category::Migration
                | Category::Tooling
        ) {
            continue;
        }
        let Some(lines) = lines.iter().find(|l| l.path == file.path) else {
            continue;
        };
        if machine_written(&file.path, Some(lines)).is_some() {
            continue;
        }
        let code = matches!(category, Category::Code | Category::Security);
        for (rule, patterns) in ADDED_RULES.iter().zip(&compiled.added) {
            if rule.code_only && !code {
                continue;
            }
            let hits: Vec<&Line> = lines
                .added_code()
                .filter(|l| patterns.is_match(&l.code))
                .collect();
            if let Some(first) = hits.first() {
                reasons.push(reason(
                    rule.rule,
                    rule.score,
                    rule.what,
                    file,
                    first,
                    hits.len(),
                ));
            }
        }
        if let Some(line) = work_factor_lowered(lines) {
            reasons.push(reason(
                "weak_crypto",
                80,
                "work factor of a password hash or key derivation lowered",
                file,
                line,
                1,
            ));
        }
        for (rule, patterns) in REMOVED_RULES.iter().zip(&compiled.removed) {
            let error_handling = rule.rule == "error_handling_removed";
            if error_handling && (file.status == "deleted" || !code) {
                continue;
            }
            let matching = |l: &&Line| patterns.is_match(&l.code);
            let removed: Vec<&Line> = lines.removed_code().filter(matching).collect();
            let added = lines.added_code().filter(matching).count();
            if removed.len() <= added {
                continue;
            }
            let removed_code = lines.removed_code().count().max(1);
            if error_handling && (removed.len() as f64) < HANDLER_SHARE * removed_code as f64 {
                continue;
            }
            // Report a line that did not come back unchanged elsewhere in the file.
            let kept: Vec<&str> = lines.added_code().map(|l| l.code.trim()).collect();
            let shown = removed
                .iter()
                .find(|l| !kept.contains(&l.code.trim()))
                .unwrap_or(&removed[0]);
            let commented_out = lines
                .added
                .iter()
                .filter(|l| l.kind == Kind::Comment)
                .any(|l| l.text.contains(shown.code.trim()));
            let what = if commented_out {
                format!("{} (commented out)", rule.what)
            } else {
                rule.what.to_string()
            };
            let count = removed.len() - added;
            reasons.push(reason(rule.rule, rule.score, &what, file, shown, count));
        }
    }
    reasons
}

fn reason(
    rule: &'static str,
    score: u32,
    what: &str,
    file: &ChangedFile,
    line: &Line,
    count: usize,
) -> Reason {
    let text: String = line.text.trim().chars().take(120).collect();
    let more = if count > 1 {
        format!(" (and {} more)", count - 1)
    } else {
        String::new()
    };
    Reason {
        rule,
        score,
        detail: format!("{what} at {}:{}: `{text}`{more}", file.path, line.number),
    }
}

/// An added line that sets a work factor (`rounds`, `iterations`, `cost`) lower than a removed
/// line of the same file set the same name, in a file about hashing or passwords.
fn work_factor_lowered(lines: &FileLines) -> Option<&Line> {
    let about_hashing = |text: &str| {
        let lower = text.to_lowercase();
        [
            "bcrypt", "pbkdf", "argon", "scrypt", "hash", "password", "crypt", "kdf",
        ]
        .iter()
        .any(|w| lower.contains(w))
    };
    let file_about_hashing = about_hashing(&lines.path)
        || lines
            .added
            .iter()
            .chain(&lines.removed)
            .any(|l| about_hashing(&l.text));
    if !file_about_hashing {
        return None;
    }
    let factor = |line: &Line| -> Option<(String, u64)> {
        let captures = WORK_FACTOR.captures(&line.code)?;
        Some((captures[1].to_lowercase(), captures[2].parse().ok()?))
    };
    let before: Vec<(String, u64)> = lines.removed_code().filter_map(factor).collect();
    lines.added_code().find(|line| {
        factor(line).is_some_and(|(name, value)| {
            before
                .iter()
                .any(|(old_name, old)| *old_name == name && value < *old)
        })
    })
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
