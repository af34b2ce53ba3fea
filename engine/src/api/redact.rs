//! Nothing the API answers carries a secret: free text (logs, errors, step outputs, reasons)
//! passes through the same redaction as text bound for a remote model (`llm::redact`). If the
//! redaction rules cannot be compiled, the text is withheld rather than shown unredacted.

use serde_json::Value;

const WITHHELD: &str = "[withheld: redaction unavailable]";

pub fn text(text: &str) -> String {
    match crate::llm::redact(text) {
        Ok(redacted) => redacted.text,
        Err(_) => WITHHELD.to_string(),
    }
}

/// Redacts every string inside `value`, keys kept.
pub fn value(value: &mut Value) {
    match value {
        Value::String(s) => *s = text(s),
        Value::Array(items) => items.iter_mut().for_each(self::value),
        Value::Object(map) => map.values_mut().for_each(self::value),
        _ => {}
    }
}

/// Redacts only what is free text under the given keys, anywhere in `value`: identifiers
/// beside them (image digests, commit ids) look random and would be lost to the entropy rule.
pub fn fields(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|item| fields(item, keys)),
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if keys.contains(&key.as_str()) {
                    self::value(item);
                } else {
                    fields(item, keys);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_nested_values_are_replaced() {
        let mut v = serde_json::json!({
            "error": "push failed: https://bob:hunter2secret@git.example.com/x.git",
            "list": ["AKIAIOSFODNN7EXAMPLE"],
            "n": 3
        });
        value(&mut v);
        let shown = v.to_string();
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(!shown.contains("AKIAIOSFODNN7EXAMPLE"), "{shown}");
        assert_eq!(v["n"], 3);
    }
}
