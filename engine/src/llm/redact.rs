//! Redaction: the one place every text bound for a remote tier passes through. Secrets are
//! replaced by `[REDACTED:<kind>]` placeholders before anything leaves the machine.
//!
//! Patterns catch what has a shape (cloud keys, tokens, private keys, JWTs, passwords in URLs
//! and assignments, `.env` files in diffs); an entropy test catches the rest (long random-
//! looking strings). Over-redacting a hash costs a little context; under-redacting leaks.

use std::sync::LazyLock;

use regex::{Captures, Regex};

struct Pattern {
    kind: &'static str,
    regex: Regex,
    /// Capture group holding the secret (0: the whole match).
    group: usize,
}

fn pattern(kind: &'static str, source: &str, group: usize) -> Option<Pattern> {
    match Regex::new(source) {
        Ok(regex) => Some(Pattern { kind, regex, group }),
        Err(error) => {
            // The patterns are constants; a typo shows in the tests, never at a user's site.
            tracing::error!(kind, %error, "bad redaction pattern");
            None
        }
    }
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    [
        pattern(
            "private_key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)",
            0,
        ),
        pattern("aws_access_key", r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b", 0),
        pattern(
            "aws_secret_key",
            r#"(?i)aws_?secret_?(access_?)?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})"#,
            2,
        ),
        pattern("github_token", r"\b(gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b", 0),
        pattern("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}\b", 0),
        pattern("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b", 0),
        pattern("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
        pattern("stripe_key", r"\b(sk|rk)_(live|test)_[0-9A-Za-z]{16,}\b", 0),
        pattern("openai_key", r"\bsk-(proj-)?[A-Za-z0-9_-]{20,}\b", 0),
        pattern("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b", 0),
        // The user may be empty: `redis://:password@host`.
        pattern("url_password", r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)", 2),
        // Before `password`, whose `auth...: value` rule would otherwise take the word
        // `Bearer` as the value and leave the token itself to the entropy test.
        pattern("bearer_token", r"(?i)\b(bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{16,})", 2),
        // Secrets on command lines: `--password X`, `--token=X`, `sshpass -p X`, `curl -u user:pass`.
        pattern(
            "command_line_secret",
            r"(?i)(--(?:password|passwd|token|secret|api-key|apikey)[= ]|\bsshpass\s+-p\s*)(\S+)",
            2,
        ),
        pattern("command_line_secret", r"(\s(?:-u|--user)\s+[^\s:]+:)(\S+)", 2),
        pattern(
            "password",
            r#"(?i)\b[a-z0-9_.-]*(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret|auth)[a-z0-9_.-]*["']?\s*[:=]\s*["']?([^\s"',;]{4,})"#,
            2,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// A diff hunk header for a `.env`-style file: everything after it up to the next file is
/// configuration whose values are secrets by convention.
static ENV_FILE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?m)^\+\+\+ b/(.*/)?\.env(\.[A-Za-z0-9_-]+)?$").ok());

static CANDIDATE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{24,}").ok());

/// Result of redacting one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    pub text: String,
    /// Kinds of secrets replaced, one entry per replacement.
    pub found: Vec<&'static str>,
}

pub fn redact(text: &str) -> Redacted {
    let mut found = Vec::new();
    let mut text = redact_env_files(text, &mut found);
    for pattern in PATTERNS.iter() {
        let replaced = pattern.regex.replace_all(&text, |caps: &Captures<'_>| {
            let Some(secret) = caps.get(pattern.group) else {
                return caps[0].to_string();
            };
            if secret.as_str().starts_with("[REDACTED:") {
                return caps[0].to_string();
            }
            found.push(pattern.kind);
            let whole = caps.get(0).map_or(0..0, |m| m.range());
            let before = &caps[0][..secret.start() - whole.start];
            let after = &caps[0][secret.end() - whole.start..];
            format!("{before}[REDACTED:{}]{after}", pattern.kind)
        });
        text = replaced.into_owned();
    }
    let text = redact_high_entropy(&text, &mut found);
    Redacted { text, found }
}

fn redact_env_files(text: &str, found: &mut Vec<&'static str>) -> String {
    let Some(env_file) = ENV_FILE.as_ref() else {
        return text.to_string();
    };
    if !env_file.is_match(text) {
        return text.to_string();
    }
    let mut inside = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if bare.starts_with("diff --git ") {
            inside = false;
        }
        if env_file.is_match(bare) {
            inside = true;
            out.push_str(line);
            continue;
        }
        let changed = bare.starts_with('+') || bare.starts_with('-') || bare.starts_with(' ');
        if inside && changed && !bare.starts_with("+++") && !bare.starts_with("---")
            && let Some((key, _)) = bare.split_once('=') {
                found.push("env_file");
                out.push_str(&format!("{key}=[REDACTED:env_file]\n"));
                continue;
            }
        out.push_str(line);
    }
    out
}

/// Shannon entropy in bits per character.
fn entropy(text: &str) -> f64 {
    let mut counts = [0usize; 256];
    for byte in text.bytes() {
        counts[byte as usize] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

fn redact_high_entropy(text: &str, found: &mut Vec<&'static str>) -> String {
    let Some(candidate) = CANDIDATE.as_ref() else {
        return text.to_string();
    };
    candidate
        .replace_all(text, |caps: &Captures<'_>| {
            let token = &caps[0];
            let classes = [
                token.bytes().any(|b| b.is_ascii_lowercase()),
                token.bytes().any(|b| b.is_ascii_uppercase()),
                token.bytes().any(|b| b.is_ascii_digit()),
            ];
            let mixed = classes.iter().filter(|c| **c).count() >= 2;
            // Git object ids are lowercase hex: 4 bits/char at most, and useful context.
            let hex = token.bytes().all(|b| b.is_ascii_hexdigit());
            if mixed && !hex && entropy(token) > 4.0 && !token.contains("REDACTED") {
                found.push("high_entropy");
                "[REDACTED:high_entropy]".to_string()
            } else {
                token.to_string()
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_secrets_are_replaced() {
        let cases = [
            ("key = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            (
                "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            ),
            ("postgres://app:hunter2hunter@db:5432/x", "hunter2hunter"),
            ("DB_PASSWORD: \"correct-horse\"", "correct-horse"),
            (
                "Authorization: Bearer abcdefghijklmnop0123456789",
                "abcdefghijklmnop0123456789",
            ),
            ("X-Api-Key: 0123456789abcdef0123", "0123456789abcdef0123"),
            ("mysql --password=s3cr3tpass -h db", "s3cr3tpass"),
            ("sshpass -p hunter22 ssh host", "hunter22"),
            ("curl -u deploy:Tr0ub4dor https://x", "Tr0ub4dor"),
            (
                "Authorization: token 0123456789abcdef0123456789",
                "0123456789abcdef0123456789",
            ),
        ];
        for (text, secret) in cases {
            let redacted = redact(text);
            assert!(
                !redacted.text.contains(secret),
                "{text} -> {}",
                redacted.text
            );
            assert!(!redacted.found.is_empty());
        }
    }

    #[test]
    fn a_pem_key_disappears_whole() {
        let text = "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----\ny";
        let redacted = redact(text);
        assert_eq!(redacted.text, "x\n[REDACTED:private_key]\ny");
    }

    #[test]
    fn env_files_in_diffs_lose_their_values() {
        let diff = "diff --git a/.env b/.env\n--- a/.env\n+++ b/.env\n@@ -1 +1,2 @@\n-MODE=dev\n+MODE=prod\n+SIGNING=abc\n";
        let redacted = redact(diff);
        assert!(
            !redacted.text.contains("prod") && !redacted.text.contains("abc"),
            "{}",
            redacted.text
        );
        assert!(redacted.text.contains("+MODE=[REDACTED:env_file]"));
    }

    #[test]
    fn ordinary_code_and_commit_ids_survive() {
        let text = "fn main() { let total_count = compute(items); }\ncommit 3f786850e387550fdab836ed7e6dc881de23001b";
        assert_eq!(redact(text).text, text);
    }
}
