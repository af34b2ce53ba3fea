//! Redaction: the one place every text bound for a remote tier passes through. Secrets are
//! replaced by `[REDACTED:<kind>]` placeholders before anything leaves the machine.
//!
//! Three layers, all run on every text:
//! - shaped secrets (`rules.rs`): vendor tokens, private keys, JWTs, URL passwords, secrets on
//!   command lines;
//! - structure (`keyed.rs`, `decode.rs`): any value of a key that names a credential, in any
//!   syntax; adjacent string literals joined; base64 and URL encodings decoded; `.env` and
//!   credential files in diffs;
//! - entropy (`entropy.rs`): random-looking strings and long hex keys with no label.
//!
//! Every secret found is then removed wherever else it occurs in the text (`scrub.rs`), so a
//! secret recognised on one line does not survive on an unchanged context line. The rules are
//! compiled once; if one fails to compile, [`Redactor::new`] fails and the remote tier refuses
//! to send anything (fail closed). Over-redacting costs the remote a little context;
//! under-redacting leaks.

mod decode;
mod entropy;
mod keyed;
mod rules;
mod scrub;

use std::ops::Range;
use std::sync::LazyLock;

use rules::{Rule, Rules};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RedactError {
    #[error("redaction pattern `{kind}` does not compile ({error}); nothing is sent to the remote")]
    Pattern { kind: String, error: String },
}

/// Result of redacting one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    pub text: String,
    /// Kinds of secrets replaced, one entry per replacement.
    pub found: Vec<&'static str>,
}

/// A secret's place in the text scanned, and what kind of secret it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub range: Range<usize>,
    pub kind: &'static str,
}

impl Finding {
    pub fn at(range: Range<usize>, kind: &'static str) -> Finding {
        Finding { range, kind }
    }
}

/// The compiled rules, plus the patterns the user added (`llm.redact.patterns`).
pub struct Redactor {
    rules: Rules,
    extra: Vec<Rule>,
}

static BUILT_IN: LazyLock<Result<Rules, RedactError>> = LazyLock::new(Rules::compile);

impl Redactor {
    /// The built-in rules and `extra` user patterns (each a regular expression whose whole
    /// match is a secret). Any pattern that does not compile is an error.
    pub fn new(extra: &[String]) -> Result<Redactor, RedactError> {
        let rules = Rules::compile()?;
        let extra = extra
            .iter()
            .map(|source| {
                regex::Regex::new(source)
                    .map(|regex| Rule {
                        kind: "custom",
                        regex,
                        group: 0,
                    })
                    .map_err(|error| RedactError::Pattern {
                        kind: format!("llm.redact.patterns: {source}"),
                        error: error.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Redactor { rules, extra })
    }

    pub fn redact(&self, text: &str) -> Redacted {
        redact_with(&self.rules, &self.extra, text)
    }
}

/// Redacts with the built-in rules only.
pub fn redact(text: &str) -> Result<Redacted, RedactError> {
    match &*BUILT_IN {
        Ok(rules) => Ok(redact_with(rules, &[], text)),
        Err(error) => Err(error.clone()),
    }
}

fn shaped(rules: &[Rule], text: &str, out: &mut Vec<Finding>) {
    for rule in rules {
        for caps in rule.regex.captures_iter(text) {
            if let Some(secret) = caps.get(rule.group)
                && !secret.as_str().is_empty()
            {
                out.push(Finding::at(secret.range(), rule.kind));
            }
        }
    }
}

/// Shapes, keys and entropy: what is looked for in decoded and reassembled text too.
fn scan_plain(rules: &Rules, extra: &[Rule], text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    shaped(&rules.shaped, text, &mut out);
    shaped(extra, text, &mut out);
    keyed::detect(rules, text, &mut out);
    entropy::detect(rules, text, &mut out);
    out
}

fn redact_with(rules: &Rules, extra: &[Rule], text: &str) -> Redacted {
    let scan = |t: &str| scan_plain(rules, extra, t);
    let mut findings = scan(text);
    let mut also = Vec::new();
    decode::literals(rules, text, &scan, &mut findings, &mut also);
    decode::base64(rules, text, &scan, &mut findings, &mut also);
    decode::query_parameters(rules, text, &scan, &mut findings, &mut also);
    decode::credential_files(rules, text, &mut findings);
    scrub::scrub(text, findings, also)
}

#[cfg(test)]
mod tests;
