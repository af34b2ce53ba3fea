//! Values of keys that name a credential, in any syntax: `KEY=value`, `key: value`, JSON,
//! PHP and Ruby arrays (`'password' => 'x'`), XML elements and key/value attributes, Java
//! setters and builders (`setPassword("x")`), Dockerfile `ENV`/`ARG`, shell prefixes
//! (`PGPASSWORD=x psql`), `.properties` values with spaces, subscripts (`cfg["token"] = x`).
//!
//! The key decides: any value of a credential-like key is a secret unless it is plainly a
//! reference (`${VAR}`, `os.environ[...]`, a function call, a template), so a secret that looks
//! like a word still goes.

use std::ops::Range;

use super::Finding;
use super::rules::Rules;

/// Segments (after splitting `camelCase`, `snake_case`, `kebab-case`, dots) that make a key a
/// credential on their own.
const SECRET_SEGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "passwort",
    "pwd",
    "pass",
    "pw",
    "secret",
    "secrets",
    "token",
    "apikey",
    "credential",
    "credentials",
    "creds",
    "auth",
    "authorization",
    "sig",
    "signature",
    "sas",
    "dsn",
    "cookie",
    "otp",
    "pat",
    "psk",
    "salt",
    "privatekey",
    "secretkey",
    "accesskey",
    "accountkey",
    "clientsecret",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "connectionstring",
    "connstr",
    "webhook",
    "bearer",
    "jwt",
    "hmac",
    "pin",
    "passcode",
];

/// `<prefix>key` pairs: `api_key`, `signing_key`, `master_key`… (`key` alone is too common).
const KEY_PREFIXES: &[&str] = &[
    "api",
    "access",
    "secret",
    "private",
    "app",
    "master",
    "signing",
    "encryption",
    "license",
    "account",
    "auth",
    "client",
    "consumer",
    "shared",
    "storage",
    "subscription",
    "service",
    "deploy",
    "session",
    "jwt",
    "hmac",
    "aes",
    "crypto",
    "sign",
    "enc",
    "admin",
    "root",
    "ssh",
    "gpg",
    "pgp",
    "webhook",
    "cipher",
    "decryption",
    "host",
    "function",
    "primary",
    "secondary",
];

/// Segments that make a key describe a credential rather than hold one.
const NOT_A_VALUE: &[&str] = &[
    "tokens",
    "tokenizer",
    "tokenize",
    "tokenized",
    "count",
    "counts",
    "length",
    "len",
    "size",
    "type",
    "types",
    "name",
    "names",
    "path",
    "file",
    "files",
    "dir",
    "endpoint",
    "url",
    "uri",
    "env",
    "var",
    "variable",
    "field",
    "header",
    "policy",
    "rotation",
    "expiry",
    "expires",
    "ttl",
    "min",
    "max",
    "enabled",
    "required",
    "regex",
    "pattern",
    "format",
    "prompt",
    "label",
    "hint",
    "ref",
    "kind",
    "mode",
    "method",
    "scheme",
    "provider",
    "strength",
    "reset",
    "hash",
    "hashed",
    "digest",
    "id",
    "ids",
    "author",
    "authors",
    "authority",
    "authored",
    "authenticated",
    "authentication",
    "authorizer",
    "validation",
    "policy",
    "description",
    "help",
    "placeholder",
    "error",
    "errors",
    "message",
    "test",
    "tests",
    "changed",
    "manager",
    "store",
    "service",
    "lookup",
    "source",
    "class",
    "level",
    "limit",
    "index",
    "position",
    "pos",
    "start",
    "end",
    "budget",
    "usage",
    "used",
    "version",
    "spec",
    "schema",
];

/// Splits a key into lowercase segments and adds joined neighbours, so `api_key` also reads
/// as `apikey`.
pub fn segments(key: &str) -> Vec<String> {
    let mut words = words(key);
    let joined: Vec<String> = words
        .windows(2)
        .map(|w| format!("{}{}", w[0], w[1]))
        .collect();
    words.extend(joined);
    words
}

/// Lowercase words of a key: `DB_PASSWORD` → [db, password], `setApiKey` → [set, api, key].
fn words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Products whose password variables glue the word on: `PGPASS`, `MYSQL_PWD`-like spellings.
const GLUED_PREFIXES: &[&str] = &[
    "pg", "db", "mysql", "redis", "smtp", "mail", "admin", "root", "user", "ldap", "ftp", "sql",
    "rabbit", "amqp", "mongo", "app", "api", "ssh", "wifi", "vnc",
];

/// Whether `key` names something whose value is a credential.
pub fn is_credential_key(key: &str) -> bool {
    let parts = segments(key);
    // The key's own last word decides what it holds: `password_file` holds a path,
    // `token_count` a number; `file_password` a password.
    let last = words(key).pop().unwrap_or_default();
    if NOT_A_VALUE.contains(&last.as_str()) {
        return false;
    }
    let words: Vec<&str> = parts.iter().map(String::as_str).collect();
    if words.iter().any(|w| SECRET_SEGMENTS.contains(w)) {
        return true;
    }
    if words
        .iter()
        .any(|w| w.ends_with("password") || w.ends_with("passwd") || w.ends_with("secret"))
    {
        return true;
    }
    if words.iter().any(|w| {
        w.strip_suffix("key")
            .is_some_and(|prefix| KEY_PREFIXES.contains(&prefix))
            || w.strip_suffix("token").is_some_and(|p| !p.is_empty())
    }) {
        return true;
    }
    // `PGPASS`, `DBPWD`: a known word glued to a product name.
    words.iter().any(|w| {
        ["pass", "pwd", "passwd"].iter().any(|suffix| {
            w.strip_suffix(suffix)
                .is_some_and(|prefix| GLUED_PREFIXES.contains(&prefix))
        })
    })
}

/// An unquoted value that is a type annotation (`password: String,`, `token: Option<String>`,
/// `secret: str = …`), judged with the character that follows it.
fn looks_like_type(value: &str, next: Option<char>) -> bool {
    const PRIMITIVES: &[&str] = &[
        "str",
        "string",
        "bytes",
        "int",
        "i32",
        "i64",
        "u8",
        "u32",
        "u64",
        "usize",
        "bool",
        "number",
        "any",
        "object",
        "secretstr",
        "secretstring",
        "securestring",
        "char",
    ];
    let shape = value.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | ':' | '<' | '>' | '[' | ']' | '&' | '\'' | '?' | '|'
            )
    });
    if !shape {
        return false;
    }
    let bare = value.trim_end_matches('?');
    PRIMITIVES.contains(&bare.to_ascii_lowercase().as_str())
        || value.contains('<')
        || value.contains("::")
        || value.starts_with('&')
        || (value.starts_with(|c: char| c.is_ascii_uppercase())
            && !value.chars().any(|c| c.is_ascii_digit())
            && matches!(next, Some(',' | ';' | ')' | '=' | '{')))
}

/// Whether a value found after a credential key is plainly not a secret: empty, a boolean, a
/// reference to somewhere else, or code.
pub fn is_benign_value(value: &str, quoted: bool) -> bool {
    let v = value.trim();
    if v.is_empty() || v.starts_with("[REDACTED") {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    let references = [
        "${",
        "$(",
        "{{",
        "<%",
        "#{",
        "%(",
        "process.env",
        "os.environ",
        "os.getenv",
        "env(",
        "env[",
        "env.",
        "getenv",
        "system.getenv",
        "secrets.",
        "vault:",
        "!ref",
        "ref+",
        "ssm:",
        "arn:aws:secretsmanager",
        "valuefrom",
        "secretkeyref",
        "lookup(",
        "fetch(",
    ];
    if references.iter().any(|r| lower.starts_with(r)) {
        return true;
    }
    if v.starts_with('$')
        && v[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return true;
    }
    if v.starts_with('<') && v.ends_with('>') {
        return true;
    }
    if matches!(
        lower.as_str(),
        "true"
            | "false"
            | "null"
            | "none"
            | "nil"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "undefined"
            | "required"
            | "optional"
            | "string"
            | "str"
            | "bool"
            | "int"
            | "self"
            | "this"
            | "|"
            | ">"
            | "|-"
            | ">-"
            | "{"
            | "["
            | "("
            | "*"
            | "**"
            | "***"
            | "..."
            | "redacted"
    ) {
        return true;
    }
    if quoted {
        return false;
    }
    // Unquoted code: a call, a member path, a type or a keyword, not a literal.
    if v.contains('(') || v.ends_with('{') || v.starts_with('&') || v.starts_with('!') {
        return true;
    }
    let identifier_path = v
        .split(['.', ':'])
        .filter(|s| !s.is_empty())
        .all(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        && (v.contains('.') || v.contains("::"))
        && !v.chars().any(|c| c.is_ascii_digit());
    if identifier_path {
        return true;
    }
    v.chars().count() < 3
}

fn strip_quotes(value: &str) -> (&str, bool) {
    for quote in ['"', '\'', '`'] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return (&value[1..value.len() - 1], true);
        }
    }
    (value, false)
}

/// Range of the unquoted value inside `range` (the quotes stay, the content goes).
fn inner(range: Range<usize>, value: &str) -> (Range<usize>, &str, bool) {
    let (content, quoted) = strip_quotes(value);
    if quoted {
        (range.start + 1..range.end - 1, content, true)
    } else {
        (range, content, false)
    }
}

pub fn detect(rules: &Rules, text: &str, out: &mut Vec<Finding>) {
    let mut push = |range: Range<usize>, value: &str, quoted: bool| {
        if !is_benign_value(value, quoted) {
            out.push(Finding::at(range, "credential_value"));
        }
    };
    for caps in rules.assignment.captures_iter(text) {
        let (Some(key), Some(value)) = (caps.get(1), caps.get(2).or_else(|| caps.get(3))) else {
            continue;
        };
        if !is_credential_key(key.as_str()) {
            continue;
        }
        let next = text[value.end()..]
            .trim_start_matches([' ', '\t'])
            .chars()
            .next();
        if caps.get(3).is_some() && looks_like_type(value.as_str(), next) {
            continue;
        }
        let (range, content, quoted) = inner(value.range(), value.as_str());
        push(range, content, quoted);
    }
    // `password: str = "x"`, `val token: String = "x"`: the value after the annotation.
    for caps in rules.annotated.captures_iter(text) {
        let (Some(key), Some(value)) = (caps.get(1), caps.get(2)) else {
            continue;
        };
        if is_credential_key(key.as_str()) {
            let (range, content, quoted) = inner(value.range(), value.as_str());
            push(range, content, quoted);
        }
    }
    // Values running to the end of the line (`.properties`, `.ini`, YAML, `ENV NAME value`):
    // a password with spaces goes whole.
    for caps in rules.whole_line.captures_iter(text) {
        let key = caps.get(1).or_else(|| caps.get(3));
        let value = caps.get(2).or_else(|| caps.get(4));
        let (Some(key), Some(value)) = (key, value) else {
            continue;
        };
        if !is_credential_key(key.as_str()) {
            continue;
        }
        let trimmed = value.as_str().trim_end_matches([',', ';']);
        let next = (trimmed.len() < value.as_str().len()).then_some(',');
        if looks_like_type(trimmed, next) {
            continue;
        }
        let (range, content, quoted) = inner(value.range(), value.as_str());
        push(range, content, quoted);
    }
    for caps in rules.xml_element.captures_iter(text) {
        let (Some(open), Some(value), Some(close)) = (caps.get(1), caps.get(2), caps.get(3)) else {
            continue;
        };
        if open.as_str() == close.as_str() && is_credential_key(open.as_str()) {
            push(value.range(), value.as_str(), true);
        }
    }
    for caps in rules.xml_pair.captures_iter(text) {
        let Some(key) = caps.get(1) else { continue };
        if !is_credential_key(key.as_str()) {
            continue;
        }
        if let Some(value) = caps.get(2).or_else(|| caps.get(3)).or_else(|| caps.get(4)) {
            push(value.range(), value.as_str(), true);
        }
    }
    for caps in rules.call_argument.captures_iter(text) {
        let Some(name) = caps.get(1) else { continue };
        if !is_credential_key(name.as_str()) {
            continue;
        }
        if let Some(value) = caps.get(2).or_else(|| caps.get(3)) {
            push(value.range(), value.as_str(), true);
        }
    }
    for caps in rules.call_pair.captures_iter(text) {
        let Some(key) = caps.get(1) else { continue };
        if !is_credential_key(key.as_str()) {
            continue;
        }
        if let Some(value) = caps.get(2).or_else(|| caps.get(3)) {
            push(value.range(), value.as_str(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_are_recognised_in_every_spelling() {
        for key in [
            "password",
            "DB_PASSWORD",
            "dbPassword",
            "setPassword",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "client_secret",
            "PGPASSWORD",
            "MYSQL_PWD",
            "DB_PASS",
            "auth_token",
            "GITHUB_PAT",
            "signing_key",
            "sig",
            "AccountKey",
            "secret_key_base",
            "jwtSecret",
            "SLACK_WEBHOOK",
            "_authToken",
            "aws_secret_access_key",
            "ConnectionString",
        ] {
            assert!(is_credential_key(key), "{key}");
        }
        for key in [
            "max_tokens",
            "token_count",
            "author",
            "password_file",
            "secretName",
            "tokenizer",
            "api_key_env",
            "name",
            "passed",
            "bypass",
            "compass",
            "keyboard",
            "monkey",
            "token_url",
            "auth_method",
        ] {
            assert!(!is_credential_key(key), "{key}");
        }
    }

    #[test]
    fn references_and_code_are_not_secrets() {
        for value in [
            "${DB_PASSWORD}",
            "$TOKEN",
            "os.environ['X']",
            "get_password()",
            "self.password",
            "true",
            "<your-key>",
            "{{ .Values.pw }}",
        ] {
            assert!(is_benign_value(value, false), "{value}");
        }
        for value in ["hunter2", "correct horse battery staple", "s3cr3t!"] {
            assert!(!is_benign_value(value, false), "{value}");
        }
    }
}
