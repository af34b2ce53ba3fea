//! Masking secret values in text a step produced (log lines, outputs, error messages) and in
//! text bound for a model: each value and its common encodings (base64, base64url, hex,
//! percent-encoding, JSON escaping) become `***`, found in one pass (aho-corasick).

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

/// What a masked value is replaced by.
pub const MASK: &str = "***";

/// The masks of a set of secret values; empty when there are none (then it changes nothing).
#[derive(Clone, Default)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("Masker")
            .field("active", &self.matcher.is_some())
            .finish()
    }
}

impl Masker {
    pub fn new<S: AsRef<str>>(values: &[S]) -> Masker {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            let value = value.as_ref();
            if value.is_empty() {
                continue;
            }
            patterns.extend(forms(value));
        }
        patterns.sort();
        patterns.dedup();
        patterns.retain(|pattern| !pattern.is_empty());
        if patterns.is_empty() {
            return Masker::default();
        }
        // Longest first, so an encoding is masked whole rather than around a shorter form.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok();
        Masker { matcher }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.matcher {
            Some(matcher) if matcher.is_match(text) => {
                Cow::Owned(matcher.replace_all(text, &vec![MASK; matcher.patterns_len()]))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// Every string inside a JSON value masked (keys too).
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(text) => Value::String(self.mask(text).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.mask(k).into_owned(), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The value and the encodings a script most often prints it in.
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let standard = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut forms = vec![
        value.to_owned(),
        standard.trim_end_matches('=').to_owned(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        hex::encode(bytes),
        hex::encode_upper(bytes),
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    ];
    // JSON-escaped (without the quotes), when escaping changes it.
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    // A value with a trailing newline (`echo "$S" | base64`) encodes differently.
    let with_newline = format!("{value}\n");
    forms.push(
        base64::engine::general_purpose::STANDARD
            .encode(with_newline.as_bytes())
            .trim_end_matches('=')
            .to_owned(),
    );
    forms.push(hex::encode(with_newline.as_bytes()));
    forms
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn masks_the_value_and_its_encodings() {
        let masker = Masker::new(&["s3cr3t value/+"]);
        assert_eq!(masker.mask("token=s3cr3t value/+ end"), "token=*** end");
        let base64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t value/+");
        assert!(
            !masker
                .mask(&format!("b64 {base64}"))
                .contains(base64.trim_end_matches('='))
        );
        assert_eq!(masker.mask(&hex::encode("s3cr3t value/+")), "***");
        assert_eq!(masker.mask("s3cr3t%20value%2F%2B"), "***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
        assert!(Masker::new::<&str>(&[]).is_empty());
        let json = masker.mask_json(&serde_json::json!({ "a": ["s3cr3t value/+"] }));
        assert_eq!(json, serde_json::json!({ "a": ["***"] }));
        assert_eq!(format!("{masker:?}"), "Masker { active: true }");
    }
}
