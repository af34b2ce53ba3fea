//! The compiled rule set: shaped tokens (a vendor's prefix and alphabet), secrets on command
//! lines, and the regular expressions the structural detectors share.
//!
//! Rules are our own, written after reading what public rule sets (gitleaks, detect-secrets)
//! cover. Every expression is compiled up front: one that fails to compile is an error that
//! stops remote calls (fail closed), never a silently skipped rule.

use regex::Regex;

use super::RedactError;

/// A rule whose match (or capture group) is a secret.
pub struct Rule {
    pub kind: &'static str,
    pub regex: Regex,
    /// Capture group holding the secret (0: the whole match).
    pub group: usize,
}

/// Shaped secrets: (kind, expression, group). Word boundaries keep them from firing inside
/// longer identifiers; the alphabets are the vendors' documented ones.
const SHAPED: &[(&str, &str, usize)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)",
        0,
    ),
    ("private_key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b", 0),
    (
        "private_key",
        r"\bPuTTY-User-Key-File-\d+:[\s\S]*?Private-MAC: *\S+",
        0,
    ),
    (
        "aws_access_key",
        r"\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|A3T[A-Z0-9])[0-9A-Z]{16}\b",
        0,
    ),
    (
        "github_token",
        r"\b(gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        0,
    ),
    (
        "gitlab_token",
        r"\bgl(pat|dt|rt|ptt|ft|cbt|oas|imt|agent|soat|ffct)-[A-Za-z0-9_-]{20,}\b",
        0,
    ),
    ("slack_token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}\b", 0),
    (
        "slack_webhook",
        r"hooks\.slack\.com/(services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}",
        0,
    ),
    (
        "discord_webhook",
        r"discord(app)?\.com/api/webhooks/\d+/[A-Za-z0-9_-]{20,}",
        0,
    ),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
    ("google_oauth_secret", r"\bGOCSPX-[0-9A-Za-z_-]{20,}\b", 0),
    ("google_oauth_token", r"\bya29\.[0-9A-Za-z_-]{20,}\b", 0),
    (
        "stripe_key",
        r"\b(sk|rk|pk|whsec)_(live|test)_[0-9A-Za-z]{16,}\b",
        0,
    ),
    ("stripe_key", r"\bwhsec_[0-9A-Za-z]{24,}\b", 0),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}\b", 0),
    (
        "openai_key",
        r"\bsk-(proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}\b",
        0,
    ),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}\b", 0),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b", 0),
    ("pypi_token", r"\bpypi-AgE[A-Za-z0-9_-]{40,}", 0),
    ("docker_token", r"\bdckr_(pat|oat)_[A-Za-z0-9_-]{20,}\b", 0),
    (
        "sendgrid_key",
        r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\b",
        0,
    ),
    ("mailgun_key", r"\bkey-[0-9a-z]{32}\b", 0),
    ("mailchimp_key", r"\b[0-9a-f]{32}-us\d{1,2}\b", 0),
    ("twilio_key", r"\b(SK|AC)[0-9a-fA-F]{32}\b", 0),
    ("shopify_token", r"\bshp(at|ss|ca|pa)_[a-fA-F0-9]{32}\b", 0),
    ("digitalocean_token", r"\bdo[por]_v1_[a-f0-9]{64}\b", 0),
    ("vault_token", r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}\b", 0),
    (
        "terraform_token",
        r"\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{40,}",
        0,
    ),
    (
        "doppler_token",
        r"\bdp\.(pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{30,}\b",
        0,
    ),
    ("databricks_token", r"\bdapi[a-f0-9]{32}(-\d)?\b", 0),
    (
        "grafana_token",
        r"\b(glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
        0,
    ),
    ("newrelic_key", r"\bNR(AK|AA|II|JS)-[A-Za-z0-9]{27}\b", 0),
    ("linear_key", r"\blin_(api|oauth)_[A-Za-z0-9]{30,}\b", 0),
    ("postman_key", r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b", 0),
    ("pulumi_token", r"\bpul-[a-f0-9]{40}\b", 0),
    (
        "planetscale_token",
        r"\bpscale_(tkn|pw|oauth)_[A-Za-z0-9_.-]{30,}\b",
        0,
    ),
    ("supabase_token", r"\bsbp_[a-f0-9]{40}\b", 0),
    ("figma_token", r"\bfig[dou]_[A-Za-z0-9_-]{30,}\b", 0),
    ("notion_token", r"\b(secret|ntn)_[A-Za-z0-9]{40,}\b", 0),
    (
        "square_token",
        r"\b(sq0atp|sq0csp|EAAA)[A-Za-z0-9_-]{22,}\b",
        0,
    ),
    ("telegram_token", r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b", 0),
    (
        "discord_token",
        r"\b[MNO][A-Za-z\d_-]{23,25}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,}\b",
        0,
    ),
    (
        "azure_storage_key",
        r"(?i)AccountKey=([A-Za-z0-9+/=]{40,})",
        1,
    ),
    (
        "azure_secret",
        r"\b[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}\b",
        0,
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
        0,
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        0,
    ),
    // The user may be empty (`redis://:pw@host`) and the password may hold `/`, `+` or `:`;
    // everything up to the last `@` before a space is taken, so over-redaction, not a leak.
    (
        "url_password",
        r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\x22]*:([^\s'\x22]+)@[^\s@'\x22/]",
        1,
    ),
    // A long token in the user part (`https://TOKEN@github.com`, Sentry DSNs).
    (
        "url_token",
        r"[a-zA-Z][a-zA-Z0-9+.-]*://([A-Za-z0-9_-]{16,})@",
        1,
    ),
    // `Authorization: Bearer X`, `token X`; before the keyed rules take `Bearer` as the value.
    (
        "bearer_token",
        r"(?i)\b(bearer|basic|token|digest)\s+([A-Za-z0-9._~+/=-]{12,})",
        2,
    ),
    // Secrets on command lines.
    (
        "command_line_secret",
        r#"(?i)\s--?[a-z0-9-]*(password|passwd|passphrase|token|secret|api-?key|auth)[= ]\s*("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#,
        2,
    ),
    // `docker login -p X`, `podman login -pX`, `cf login -p X`, `az login -p X`.
    (
        "command_line_secret",
        r#"\blogin\b[^\n]*?\s-p\s*("[^"\n]*"|'[^'\n]*'|[^\s"'-][^\s"']*)"#,
        1,
    ),
    // `mysql -pX` (attached; `-P` is the port, so the flag is case-sensitive).
    (
        "command_line_secret",
        r#"\b(?i:mysql|mysqldump|mysqladmin|mysqlimport|mariadb|mariadb-dump|mysqlsh)\b[^\n]*?\s-p("[^"\n]*"|'[^'\n]*'|[^\s"'-][^\s"']*)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"\b(?i:sqlcmd|bcp)\b[^\n]*?\s-P\s*("[^"\n]*"|'[^'\n]*'|[^\s"'-]\S*)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"\b(?i:mongo|mongosh|mongodump|mongorestore|mongoexport)\b[^\n]*?\s-p\s*("[^"\n]*"|'[^'\n]*'|[^\s"'-]\S*)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)\bredis-cli\b[^\n]*?\s-a\s+("[^"\n]*"|'[^'\n]*'|\S+)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)\bldap[a-z]*\b[^\n]*?\s-w\s+("[^"\n]*"|'[^'\n]*'|\S+)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)\bsshpass\b[^\n]*?\s-p\s*("[^"\n]*"|'[^'\n]*'|\S+)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)\bhtpasswd\b[^\n]*?\s-\w*b\w*\s+\S+\s+\S+\s+("[^"\n]*"|'[^'\n]*'|\S+)"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)-pass(in|out)?\s+(pass|env):("[^"\n]*"|'[^'\n]*'|\S+)"#,
        3,
    ),
    (
        "command_line_secret",
        r#"\s(-u|--user|--proxy-user|-U)[= ]\s*["']?[^\s:%"']+[:%]([^\s"']+)"#,
        2,
    ),
    (
        "command_line_secret",
        r#"(?i)\bIDENTIFIED\s+(WITH\s+\w+\s+)?BY\s+("[^"\n]*"|'[^'\n]*'|[^\s;]+)"#,
        2,
    ),
    // SQL: `CREATE ROLE app WITH LOGIN PASSWORD 'x'`, `ALTER USER u PASSWORD 'x'`.
    (
        "command_line_secret",
        r#"(?i)\bPASSWORD\s+("[^"\n]*"|'[^'\n]*')"#,
        1,
    ),
    (
        "command_line_secret",
        r#"(?i)\bmachine\s+\S+\s+login\s+\S+\s+password\s+(\S+)"#,
        1,
    ),
];

/// Expressions the structural detectors use, compiled with the shaped ones.
pub struct Rules {
    pub shaped: Vec<Rule>,
    /// `key <sep> value` in the syntaxes of configuration files and code.
    pub assignment: Regex,
    /// `key: Type = value` (Python, TypeScript, Kotlin annotations).
    pub annotated: Regex,
    /// `key value` to the end of the line for `ENV`/`ARG` in Dockerfiles and `.properties`.
    pub whole_line: Regex,
    /// `<password>value</password>`.
    pub xml_element: Regex,
    /// `key="Password" value="x"`, `<entry key="token">x</entry>`.
    pub xml_pair: Regex,
    /// `setPassword("x")`, `.token("x")`, `put("secret", "x")`.
    pub call_argument: Regex,
    pub call_pair: Regex,
    /// String literals (double, single, backtick quoted) for concatenation.
    pub literal: Regex,
    /// Query parameters: `?sig=...&se=...`.
    pub query_parameter: Regex,
    /// A run of base64 alphabet long enough to hold a secret.
    pub base64_candidate: Regex,
    /// The argument of a decoding call or pipe: `echo X | base64 -d`, `b64decode("X")`.
    pub decoded_argument: Regex,
    pub entropy_candidate: Regex,
    pub hex_candidate: Regex,
    /// `.env`-style file headers in a diff.
    pub env_file: Regex,
}

fn compile(kind: &str, source: &str) -> Result<Regex, RedactError> {
    Regex::new(source).map_err(|error| RedactError::Pattern {
        kind: kind.to_string(),
        error: error.to_string(),
    })
}

impl Rules {
    pub fn compile() -> Result<Rules, RedactError> {
        let shaped = compile_table(SHAPED)?;
        Ok(Rules {
            shaped,
            assignment: compile(
                "assignment",
                r#"(?m)(?:^|[\s{(\[,;|&+\-])(?:export\s+|set\s+|local\s+|declare\s+(?:-\w+\s+)?|readonly\s+|const\s+|let\s+|var\s+|\$env:|\$|@|:|-D)?["'`]?([A-Za-z_][A-Za-z0-9_.\-]*)["'`]?\]?\s*(?:===|!==|==|!=|:=|=>|->|=|:)[ \t]*(?:(?:new\s+)?(?:String|str|SecretStr|Secret|bytes)\s*\(\s*)?(?:[bruBRU]{0,2}("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`\n]*`)|([^\s"'`,;}\])]+))"#,
            )?,
            annotated: compile(
                "annotated",
                r#"\b([A-Za-z_][A-Za-z0-9_]*)\s*:\s*[A-Za-z_][A-Za-z0-9_\[\]<>.|, ]*?\s*=\s*[bruBRU]{0,2}("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"#,
            )?,
            whole_line: compile(
                "whole_line",
                r#"(?m)^[+\- ]?[ \t]*(?:(?i:ENV|ARG)[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+([^\s="'].*?)|(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*[=:][ \t]*([^\s"'].*?))[ \t]*$"#,
            )?,
            xml_element: compile(
                "xml_element",
                r#"<([A-Za-z_][A-Za-z0-9_.:\-]*)(?:\s[^>]*)?>([^<]+)</([A-Za-z_][A-Za-z0-9_.:\-]*)>"#,
            )?,
            xml_pair: compile(
                "xml_pair",
                r#"(?i)\b(?:key|name|id)\s*=\s*["']([^"']+)["'][^>]*?(?:\bvalue\s*=\s*(?:"([^"]*)"|'([^']*)')|>([^<]+)<)"#,
            )?,
            call_argument: compile(
                "call_argument",
                r#"(?:\b|\.)(?:set|with|put|use)?_?([A-Za-z][A-Za-z0-9_]*)\s*\(\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)')\s*\)"#,
            )?,
            call_pair: compile(
                "call_pair",
                r#"[(\[{]\s*["']([^"'\n]+)["']\s*[,:]\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)')"#,
            )?,
            literal: compile(
                "literal",
                r#""((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`([^`\n]*)`"#,
            )?,
            query_parameter: compile(
                "query_parameter",
                r#"[?&;]([A-Za-z0-9_.\-\[\]]+)=([^&\s"'#<>]+)"#,
            )?,
            base64_candidate: compile("base64_candidate", r"[A-Za-z0-9+/_-]{8,}={0,2}")?,
            decoded_argument: compile(
                "decoded_argument",
                r#"(?i)(?:echo\s+(?:-n\s+)?["']?([A-Za-z0-9+/_=-]{4,})["']?\s*\|\s*(?:base64|openssl\s+(?:base64|enc))\b[^\n|]*(?:-d|--decode|-D)|base64\s+(?:-d|--decode|-D)\s*<<<\s*["']?([A-Za-z0-9+/_=-]{4,})|(?:b64decode|atob|decodestring|FromBase64String|decodeBase64|Base64\.decode|base64_decode|DecodeString|getDecoder\(\)\.decode|Buffer\.from)\s*\(\s*b?["']([A-Za-z0-9+/_=-]{4,})["'])"#,
            )?,
            entropy_candidate: compile("entropy_candidate", r"[A-Za-z0-9+/=_\-.~%]{16,}")?,
            hex_candidate: compile("hex_candidate", r"\b[0-9a-fA-F]{32,}\b")?,
            env_file: compile(
                "env_file",
                r"(?m)^\+\+\+ b/(.*/)?(\.env(\.[A-Za-z0-9_-]+)?|[^/\s]*\.env|\.npmrc|\.pypirc|\.netrc|\.pgpass|\.git-credentials|\.htpasswd|credentials|secrets?\.(ya?ml|json|toml|ini|properties))$",
            )?,
        })
    }
}

/// Compiles a table of shaped rules; any expression that fails stops everything.
pub fn compile_table(table: &[(&'static str, &str, usize)]) -> Result<Vec<Rule>, RedactError> {
    table
        .iter()
        .map(|&(kind, source, group)| {
            Ok(Rule {
                kind,
                regex: compile(kind, source)?,
                group,
            })
        })
        .collect()
}
