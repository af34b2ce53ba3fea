//! Reading an agent's `with:` block: the small checks every agent's configuration shares, with
//! messages that name the key.

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
