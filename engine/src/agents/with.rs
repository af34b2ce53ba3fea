//! Reading an agent's `with:` block and reporting its failures: the small checks every
//! agent shares, with messages that name the key.

use serde_json::{Map, Value};

/// A string value; `null` or absent is `None`; anything else is an error naming `key`.
pub fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} must be a string, found {other}")),
    }
}

/// A scalar as text (YAML numbers and booleans in `env:`-like maps); `None` for lists/maps.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `with:` block as a mapping (absent is empty), refusing keys not in `known` so that a
/// misspelt option never silently falls back to its default.
pub fn mapping<'v>(with: &'v Value, known: &[&str]) -> Result<&'v Map<String, Value>, String> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    let map = match with {
        Value::Object(map) => map,
        Value::Null => &*EMPTY,
        other => return Err(format!("expected a mapping, found {other}")),
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{unknown}` (known: {})",
            known.join(", ")
        ));
    }
    Ok(map)
}

/// An error's message with its whole source chain, each cause once, for a step's failure text.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Variants that print their source already must not repeat it.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A `with:` value as a duration; `key` names it in the message.
pub fn duration(value: Option<&Value>, key: &str) -> Result<Option<std::time::Duration>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::pipeline::parse_duration(s)
            .map(Some)
            .map_err(|reason| format!("{key}: {reason}")),
        Some(Value::Number(n)) => Err(format!(
            "{key} must be a duration with a unit, such as 30s or 10m, not the number {n}"
        )),
        Some(other) => Err(format!(
            "{key} must be a duration such as 30s, found {other}"
        )),
    }
}
