//! Secrets with no shape and no key: long random-looking strings (also once URL-decoded) and
//! long hex keys. Git object ids and checksums are hex too; they stay when their line says
//! what they are (`commit`, `sha256:`, `checksum`, `index`…), because the remote needs them
//! less than we need to never send a key.

use super::Finding;
use super::rules::Rules;

/// Words on a line that make a hex string an object id or a checksum, not a key.
const HEX_CONTEXT: &[&str] = &[
    "commit",
    "sha",
    "checksum",
    "digest",
    "integrity",
    "hash",
    "revision",
    "rev ",
    "index ",
    "object",
    "tree",
    "parent",
    "merge",
    "cherry",
    "blob",
    "oid",
    "md5",
    "etag",
    "fingerprint",
    "@sha",
    "resolved",
    "nonce-",
];

/// Shannon entropy in bits per character.
pub fn entropy(text: &str) -> f64 {
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

fn class(byte: u8) -> u8 {
    match byte {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        _ => 3,
    }
}

/// Whether a token looks generated rather than written: close to the entropy its length
/// allows, and changing character class often (random text does; `camelCaseWords`,
/// `snake_case_names` and paths do not).
pub fn looks_random(token: &str) -> bool {
    let token = token.trim_matches(|c: char| c == '.' || c == '-' || c == '~');
    let bytes = token.as_bytes();
    if bytes.len() < 20 || token.contains("REDACTED") {
        return false;
    }
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
    if !has_letter || bytes.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    // Paths and dotted names: every segment a plain lowercase word.
    let segments: Vec<&str> = token.split(['/', '.', '_', '-']).collect();
    if segments.len() > 2
        && segments.iter().all(|s| {
            s.len() < 12
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    {
        return false;
    }
    let bits = entropy(token);
    let ceiling = (bytes.len().min(64) as f64).log2();
    let switches = bytes
        .windows(2)
        .filter(|w| class(w[0]) != class(w[1]))
        .count();
    let switch_ratio = switches as f64 / (bytes.len() - 1) as f64;
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    // Random mixed-case text changes class at ~60% of positions, `CamelCaseNames` at ~30%
    // and rarely hold three digits.
    let varied = switch_ratio >= 0.4 || (switch_ratio >= 0.3 && digits >= 3);
    // 4.5 bits a character is detect-secrets' limit for base64-alphabet strings: long
    // identifiers stay near 4.2, a random 32-character token with few digits reaches 4.5.
    (has_digit && bits / ceiling >= 0.78 && varied) || bits >= 4.5
}

fn line_around(text: &str, start: usize, end: usize) -> &str {
    let from = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let to = text[end..].find('\n').map_or(text.len(), |i| end + i);
    &text[from..to]
}

pub fn detect(rules: &Rules, text: &str, out: &mut Vec<Finding>) {
    for found in rules.entropy_candidate.find_iter(text) {
        let raw = found.as_str();
        let decoded = if raw.contains('%') {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        } else {
            raw.to_string()
        };
        // Tokens glued by `/`, `=` or `&` (paths, query strings) are judged piece by piece.
        let mut offset = 0;
        for piece in raw.split(['/', '&']) {
            let piece_decoded = if piece.contains('%') {
                percent_encoding::percent_decode_str(piece)
                    .decode_utf8_lossy()
                    .into_owned()
            } else {
                piece.to_string()
            };
            if looks_random(&piece_decoded) {
                let start = found.start() + offset;
                out.push(Finding::at(start..start + piece.len(), "high_entropy"));
            }
            offset += piece.len() + 1;
        }
        if raw.contains(['/', '&']) && looks_random(&decoded) && decoded.contains(['+', '=']) {
            // Base64 with `/` in it: the pieces may each look tame.
            out.push(Finding::at(found.range(), "high_entropy"));
        }
    }
    for found in rules.hex_candidate.find_iter(text) {
        let hex = found.as_str();
        let has_digit = hex.bytes().any(|b| b.is_ascii_digit());
        let has_letter = hex.bytes().any(|b| b.is_ascii_alphabetic());
        if !has_digit || !has_letter {
            continue;
        }
        let line = line_around(text, found.start(), found.end()).to_ascii_lowercase();
        let before = &text[..found.start()];
        let labelled = before.ends_with(':') || before.ends_with('-') || before.ends_with('/');
        if HEX_CONTEXT.iter().any(|word| line.contains(word))
            || (labelled && before.to_ascii_lowercase().ends_with("sha256:"))
        {
            continue;
        }
        // A hex id inside a URL path (`/commit/<sha>`, `/blob/<sha>/`) is context too.
        if before.ends_with('/') && hex.len() == 40 {
            continue;
        }
        out.push(Finding::at(found.range(), "hex_key"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_told_from_names() {
        for token in [
            "V7G5IfQHeVVEqZe2qpUWnoVPDF2yeE6R",
            "q8Zk3vB1xR7mN2pL9sT4wY6c",
            "sv4Kx9%2BqLm3%2FzT8wRb1Nc5yQe7",
            // Few digits and long lowercase runs: only its entropy gives it away.
            "ktewOcpdyVEPnynLADFBbcimymhARG9b",
        ] {
            let decoded = percent_encoding::percent_decode_str(token)
                .decode_utf8_lossy()
                .into_owned();
            assert!(looks_random(&decoded), "{token}");
        }
        for token in [
            "ConfigurationManagerFactory",
            "engine/src/llm/redact/entropy.rs",
            "test_agent_selects_everything",
            "HttpServerRequestHandlerV2",
            "github.com/owner/repository",
            "getXMLHttpRequestFactoryBuilder2",
            "AbstractSingletonProxyFactoryBean",
            "SHA256WithRSAEncryptionSignatureAlg",
        ] {
            assert!(!looks_random(token), "{token}");
        }
    }
}
