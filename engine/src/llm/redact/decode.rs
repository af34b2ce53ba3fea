//! Structural redaction: secrets that only show once the text is put back together or
//! decoded. Adjacent string literals are concatenated (`"ghp_ab" "cd…"`, `"a" + "b"`,
//! `'a' . 'b'`), base64 values are decoded (Kubernetes Secret `data:`, `echo … | base64 -d`,
//! `b64decode("…")`, any value whose decoding holds a secret), and query parameters are
//! URL-decoded (Azure SAS signatures). What is found in the reassembled text is redacted where
//! it came from.

use base64::Engine;
use base64::engine::general_purpose::{
    GeneralPurpose, STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
};

use super::rules::Rules;
use super::{Finding, keyed};

/// Query parameters whose value is a credential whatever it looks like.
const SECRET_PARAMETERS: &[&str] = &[
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "password",
    "pwd",
    "pass",
    "auth",
    "code",
    "sas",
    "se_token",
    "private_token",
    "session",
    "sessionid",
];

/// Decodes base64 in any of its common alphabets; `None` when it is not base64 of text.
pub fn decode_base64_text(value: &str) -> Option<String> {
    let engines: [&GeneralPurpose; 4] = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
    let bytes = engines
        .iter()
        .find_map(|engine| engine.decode(value).ok())?;
    let text = String::from_utf8(bytes).ok()?;
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .count();
    (!text.is_empty() && printable == text.chars().count()).then_some(text)
}

/// Runs `scan` on a decoded or reassembled text; the kinds it finds, with the secrets.
fn findings_in(scan: &dyn Fn(&str) -> Vec<Finding>, text: &str) -> Vec<(&'static str, String)> {
    scan(text)
        .into_iter()
        .filter_map(|f| text.get(f.range.clone()).map(|s| (f.kind, s.to_string())))
        .collect()
}

/// Adjacent literals: a gap of only whitespace, `+`, `.`, `\`, `(`, `,`-free joins (and a
/// diff line marker at a line start) makes two literals one string.
pub fn literals(
    rules: &Rules,
    text: &str,
    scan: &dyn Fn(&str) -> Vec<Finding>,
    out: &mut Vec<Finding>,
    also: &mut Vec<(&'static str, String)>,
) {
    let mut groups: Vec<Vec<(std::ops::Range<usize>, &str)>> = Vec::new();
    let mut last_end: Option<usize> = None;
    for caps in rules.literal.captures_iter(text) {
        let Some(whole) = caps.get(0) else { continue };
        let Some(content) = caps.get(1).or_else(|| caps.get(2)).or_else(|| caps.get(3)) else {
            continue;
        };
        let joined = last_end.is_some_and(|end| {
            let gap = &text[end..whole.start()];
            gap.lines().count() <= 3
                && gap.split('\n').enumerate().all(|(i, part)| {
                    let part = if i > 0 {
                        part.strip_prefix(['+', '-', ' ']).unwrap_or(part)
                    } else {
                        part
                    };
                    part.chars()
                        .all(|c| c.is_whitespace() || matches!(c, '+' | '.' | '\\' | '&' | '~'))
                })
        });
        if joined {
            if let Some(group) = groups.last_mut() {
                group.push((content.range(), content.as_str()));
            }
        } else {
            groups.push(vec![(content.range(), content.as_str())]);
        }
        last_end = Some(whole.end());
    }
    for group in groups.into_iter().filter(|g| g.len() > 1) {
        let joined: String = group.iter().map(|(_, s)| *s).collect();
        let mut found = findings_in(scan, &joined);
        // A credential key before the first literal makes the whole concatenation its value.
        let first = group[0].0.start;
        let line_start = text[..first].rfind('\n').map_or(0, |i| i + 1);
        let prefix = &text[line_start..first.saturating_sub(1)];
        let keyed = prefix
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .find(|w| !w.is_empty())
            .is_some_and(keyed::is_credential_key);
        if keyed && !keyed::is_benign_value(&joined, true) {
            found.push(("credential_value", joined.clone()));
        }
        if let Some((kind, _)) = found.first() {
            for (range, _) in &group {
                out.push(Finding::at(range.clone(), kind));
            }
            also.extend(found);
        }
    }
}

/// Base64: Kubernetes Secret data values, arguments of decoders, and any value whose decoding
/// holds a secret.
pub fn base64(
    rules: &Rules,
    text: &str,
    scan: &dyn Fn(&str) -> Vec<Finding>,
    out: &mut Vec<Finding>,
    also: &mut Vec<(&'static str, String)>,
) {
    for caps in rules.decoded_argument.captures_iter(text) {
        if let Some(value) = caps.get(1).or_else(|| caps.get(2)).or_else(|| caps.get(3)) {
            out.push(Finding::at(value.range(), "base64_secret"));
            if let Some(decoded) = decode_base64_text(value.as_str())
                && decoded.trim().len() >= 4
            {
                also.push(("base64_secret", decoded.trim().to_string()));
            }
        }
    }
    kubernetes_secrets(text, out, also);
    for found in rules.base64_candidate.find_iter(text) {
        if found.as_str().len() < 12 {
            continue;
        }
        let Some(decoded) = decode_base64_text(found.as_str()) else {
            continue;
        };
        let inner = findings_in(scan, &decoded);
        if let Some((kind, _)) = inner.first() {
            out.push(Finding::at(found.range(), kind));
            also.extend(inner);
        }
    }
}

/// In a document with `kind: Secret`, every value under `data:` or `stringData:` is a secret
/// (base64 of anything, even `admin`, is still the password).
fn kubernetes_secrets(text: &str, out: &mut Vec<Finding>, also: &mut Vec<(&'static str, String)>) {
    if !text.contains("kind: Secret") && !text.contains("\"kind\": \"Secret\"") {
        return;
    }
    let mut block_indent: Option<usize> = None;
    // Inside a `key: |` block scalar (its lines are the value), with the key's indent.
    let mut scalar_indent: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let bare = line.trim_end_matches(['\n', '\r']);
        let body = match bare.chars().next() {
            Some('+' | '-' | ' ') if !bare.starts_with("---") && !bare.starts_with("+++") => {
                &bare[1..]
            }
            _ => bare,
        };
        let marker = bare.len() - body.len();
        let indent = body.len() - body.trim_start().len();
        let trimmed = body.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(scalar) = scalar_indent {
            if indent > scalar {
                let at = start + marker + indent;
                out.push(Finding::at(at..at + trimmed.len(), "kubernetes_secret"));
                continue;
            }
            scalar_indent = None;
        }
        if let Some(block) = block_indent {
            let keyed = trimmed.split_once(':').filter(|(key, _)| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            });
            if indent > block
                && let Some((_, value)) = keyed
            {
                let value = value.trim().trim_matches(['"', '\'']);
                if value.starts_with('|') || value.starts_with('>') {
                    scalar_indent = Some(indent);
                } else if !value.is_empty() {
                    let at = start + marker + indent + trimmed.find(value).unwrap_or(0);
                    out.push(Finding::at(at..at + value.len(), "kubernetes_secret"));
                    if let Some(decoded) = decode_base64_text(value)
                        && decoded.trim().len() >= 6
                    {
                        also.push(("kubernetes_secret", decoded.trim().to_string()));
                    }
                }
                continue;
            }
            block_indent = None;
        }
        if trimmed == "data:" || trimmed == "stringData:" {
            block_indent = Some(indent);
        }
    }
}

/// Query parameters: credential names always; any value that is random once URL-decoded.
pub fn query_parameters(
    rules: &Rules,
    text: &str,
    scan: &dyn Fn(&str) -> Vec<Finding>,
    out: &mut Vec<Finding>,
    also: &mut Vec<(&'static str, String)>,
) {
    for caps in rules.query_parameter.captures_iter(text) {
        let (Some(name), Some(value)) = (caps.get(1), caps.get(2)) else {
            continue;
        };
        let lower = name.as_str().to_ascii_lowercase();
        let decoded = percent_encoding::percent_decode_str(value.as_str())
            .decode_utf8_lossy()
            .into_owned();
        if SECRET_PARAMETERS.contains(&lower.as_str()) || keyed::is_credential_key(name.as_str()) {
            if decoded.len() >= 4 && !keyed::is_benign_value(&decoded, true) {
                out.push(Finding::at(value.range(), "url_parameter"));
                if decoded != value.as_str() && decoded.len() >= 8 {
                    also.push(("url_parameter", decoded));
                }
            }
            continue;
        }
        if decoded != value.as_str() {
            let inner = findings_in(scan, &decoded);
            if let Some((kind, _)) = inner.first() {
                out.push(Finding::at(value.range(), kind));
                also.extend(inner);
            }
        }
    }
}

/// `.env`-style and credential files in a diff: every value of every line is a secret.
pub fn credential_files(rules: &Rules, text: &str, out: &mut Vec<Finding>) {
    if !rules.env_file.is_match(text) {
        return;
    }
    let mut inside = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare.starts_with("diff --git ") {
            inside = false;
        }
        if rules.env_file.is_match(bare) {
            inside = true;
            continue;
        }
        let changed = bare.starts_with('+') || bare.starts_with('-') || bare.starts_with(' ');
        if !inside || !changed || bare.starts_with("+++") || bare.starts_with("---") {
            continue;
        }
        let body = &bare[1..];
        if body.trim_start().starts_with('#') || body.trim().is_empty() {
            continue;
        }
        // Only `key=value` / `key: value` lines: a line without a separator is structure.
        let Some(value_at) = body.find(['=', ':']).map(|i| i + 1) else {
            continue;
        };
        // The key must be one word (`export KEY`, `"key"`, `- key` allowed): a line such as
        // `for x in xs: total += x` is code, and taking its tail as a secret would, through
        // the text-wide scrub, blank the same code line everywhere else.
        if !is_file_key(&body[..value_at - 1]) {
            continue;
        }
        let value = &body[value_at..];
        let lead = value.len() - value.trim_start().len();
        let value = value.trim();
        if !value.is_empty() {
            let at = start + 1 + value_at + lead;
            out.push(Finding::at(at..at + value.len(), "env_file"));
        }
    }
}

/// Whether the text before a credential file line's separator is a key: one word, perhaps
/// quoted, exported or a YAML list item.
fn is_file_key(before: &str) -> bool {
    let key = before.trim();
    let key = key.strip_prefix("export ").unwrap_or(key).trim_start();
    let key = key.strip_prefix("- ").unwrap_or(key).trim_start();
    let key = key.trim_matches(['"', '\'']);
    !key.is_empty()
        && key.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '*' | '[' | ']')
        })
}
