//! Helpers for walking a `marked_yaml` node tree by hand: locations, type descriptions for
//! messages, key checks, and conversion of free-form YAML (`with:`) to JSON.
//!
//! Walking nodes by hand instead of deriving `Deserialize` is what lets every message point at
//! the exact key or value it is about.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

use super::error::Diagnostics;
use super::model::Location;
use super::suggest::did_you_mean;

/// The workflow text with an index of where each line starts, so looking up the text at a
/// position costs O(1) (an ASCII file) instead of a scan from the top: done once per mapping
/// and per condition, a scan made loading quadratic in the file's size.
pub(crate) struct Source<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    ascii: bool,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, byte)| byte == b'\n')
                .map(|(index, _)| index + 1),
        );
        Source {
            text,
            line_starts,
            ascii: text.is_ascii(),
        }
    }

    /// The rest of the source line from `location` on (empty when out of range).
    fn text_at(&self, location: Location) -> &'a str {
        let Some(&start) = self.line_starts.get(location.line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(location.line)
            .map_or(self.text.len(), |next| next - 1);
        let line = self.text.get(start..end).unwrap_or_default();
        let line = line.strip_suffix('\r').unwrap_or(line);
        let column = location.column.saturating_sub(1);
        if self.ascii {
            return line.get(column..).unwrap_or_default();
        }
        match line.char_indices().nth(column) {
            Some((byte, _)) => &line[byte..],
            None => "",
        }
    }
}

/// Moves misleading start positions to where a reader looks for them. The loader marks a block
/// mapping at the colon of its first key and an empty value (`run:`) at the next token, which
/// can be lines further down; messages should point at the first key and at the empty key.
pub(crate) fn normalize_spans(node: &mut Node, source: &Source<'_>) {
    match node {
        Node::Scalar(_) => {}
        Node::Sequence(items) => items
            .iter_mut()
            .for_each(|item| normalize_spans(item, source)),
        Node::Mapping(mapping) => {
            // A flow mapping (`{ a: 1 }`) is already marked at its brace.
            let is_flow = source
                .text_at(span_location(mapping.span()))
                .starts_with('{');
            if !is_flow
                && let Some(first_key) = mapping
                    .keys()
                    .next()
                    .and_then(|key| key.span().start().copied())
            {
                mapping.span_mut().set_start(Some(first_key));
            }
            for (key, value) in mapping.iter_mut() {
                if let Node::Scalar(scalar) = value
                    && is_null(scalar)
                    && (scalar.as_str().is_empty()
                        || !source
                            .text_at(scalar_location(scalar))
                            .starts_with(scalar.as_str()))
                {
                    scalar.span_mut().set_start(key.span().start().copied());
                }
                normalize_spans(value, source);
            }
        }
    }
}

/// Where a span starts; the loader always sets a start, 1:1 is only a safe fallback.
pub(crate) fn span_location(span: &Span) -> Location {
    span.start()
        .map_or(Location { line: 1, column: 1 }, |marker| Location {
            line: marker.line(),
            column: marker.column(),
        })
}

pub(crate) fn location(node: &Node) -> Location {
    span_location(node.span())
}

pub(crate) fn scalar_location(scalar: &MarkedScalarNode) -> Location {
    span_location(scalar.span())
}

/// A YAML null written as a plain scalar (`key:`, `~`, `null`); quoted `"null"` is a string.
pub(crate) fn is_null(scalar: &MarkedScalarNode) -> bool {
    scalar.may_coerce() && matches!(scalar.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// How a node looks, for "expected X, found Y" messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".to_owned(),
        Node::Sequence(_) => "a list".to_owned(),
        Node::Scalar(scalar) if is_null(scalar) => "nothing (null)".to_owned(),
        Node::Scalar(scalar) => {
            let text = scalar.as_str();
            // Long values would drown the message; the location shows the rest.
            let shown: String = text.chars().take(40).collect();
            let ellipsis = if shown.len() < text.len() { "…" } else { "" };
            format!("`{}{ellipsis}`", shown.replace('\n', "\\n"))
        }
    }
}

/// The entry for `key`, with the key node (for locations).
pub(crate) fn entry<'a>(
    mapping: &'a MarkedMappingNode,
    key: &str,
) -> Option<(&'a MarkedScalarNode, &'a Node)> {
    mapping
        .iter()
        .find(|(candidate, _)| candidate.as_str() == key)
}

/// Reports every key of `mapping` that is not in `known`, as "unknown key `k` {context}".
pub(crate) fn check_keys(
    mapping: &MarkedMappingNode,
    known: &[&str],
    context: &str,
    diagnostics: &mut Diagnostics,
) {
    for key in mapping.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        // A key from another CI system gets its Cairn equivalent, not a look-alike.
        let hint = match super::suggest::foreign_key_hint(key.as_str(), known) {
            Some(hint) => format!("; {hint}"),
            None => did_you_mean(key.as_str(), known.iter().copied()),
        };
        diagnostics.report(
            scalar_location(key),
            format!(
                "unknown key `{}` {context}; expected one of: {}{hint}",
                key.as_str(),
                known.join(", "),
            ),
        );
    }
}

/// A scalar's text, or a report that `what` must be a string.
pub(crate) fn string<'a>(
    node: &'a Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Option<&'a MarkedScalarNode> {
    match node {
        Node::Scalar(scalar) if !is_null(scalar) => Some(scalar),
        Node::Scalar(_) => {
            diagnostics.report(
                location(node),
                format!("{what} has no value; expected a string"),
            );
            None
        }
        _ => {
            diagnostics.report(
                location(node),
                format!("{what} must be a string, not {}", describe(node)),
            );
            None
        }
    }
}

/// Like [`string`], but also refuses an empty or blank value.
pub(crate) fn non_empty_string<'a>(
    node: &'a Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Option<&'a MarkedScalarNode> {
    let scalar = string(node, what, diagnostics)?;
    if scalar.as_str().trim().is_empty() {
        diagnostics.report(location(node), format!("{what} must not be empty"));
        return None;
    }
    Some(scalar)
}

/// A plain whole number; quoted numbers are strings in YAML and are refused as such.
pub(crate) fn integer(node: &Node) -> Option<i64> {
    let scalar = node.as_scalar()?;
    if !scalar.may_coerce() {
        return None;
    }
    scalar.as_str().parse::<i64>().ok()
}

/// One string or a list of strings (`branches: main` or `branches: [main, release]`), each
/// with its location.
pub(crate) fn string_or_list<'a>(
    node: &'a Node,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Vec<&'a MarkedScalarNode>> {
    match node {
        Node::Sequence(items) => {
            let mut values = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items.iter() {
                match non_empty_string(item, &format!("each entry of {what}"), diagnostics) {
                    Some(scalar) => values.push(scalar),
                    None => ok = false,
                }
            }
            ok.then_some(values)
        }
        Node::Scalar(scalar) if !is_null(scalar) => {
            non_empty_string(node, what, diagnostics).map(|scalar| vec![scalar])
        }
        Node::Scalar(_) | Node::Mapping(_) => {
            diagnostics.report(
                location(node),
                format!(
                    "{what} must be a string or a list of strings, not {}",
                    describe(node)
                ),
            );
            None
        }
    }
}

/// Free-form YAML as JSON. Plain scalars get YAML 1.2 core types (null, bool, integer,
/// float); quoted scalars stay strings, as a YAML reader would expect.
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Mapping(mapping) => Value::Object(
            mapping
                .iter()
                .map(|(key, value)| (key.as_str().to_owned(), to_json(value)))
                .collect(),
        ),
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Scalar(scalar) => {
            let text = scalar.as_str();
            if !scalar.may_coerce() {
                return Value::String(text.to_owned());
            }
            if is_null(scalar) {
                return Value::Null;
            }
            match text {
                "true" | "True" | "TRUE" => return Value::Bool(true),
                "false" | "False" | "FALSE" => return Value::Bool(false),
                _ => {}
            }
            if let Ok(integer) = text.parse::<i64>() {
                return Value::from(integer);
            }
            let looks_numeric =
                text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
            if looks_numeric
                && let Some(number) = text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
            {
                return Value::Number(number);
            }
            Value::String(text.to_owned())
        }
    }
}

/// The exact position of character `offset` (in bytes of the scalar's value) inside a
/// single-line scalar, when the source text shows the value verbatim (plain, or quoted
/// without escapes); otherwise the scalar's start, which is still the right line.
pub(crate) fn position_inside(
    source: &Source<'_>,
    scalar: &MarkedScalarNode,
    offset: usize,
) -> Location {
    let start = scalar_location(scalar);
    let value = scalar.as_str();
    let raw = source.text_at(start);
    let quote_width = if raw.starts_with(value) {
        0
    } else if (raw.starts_with('"') || raw.starts_with('\''))
        && raw[1..].starts_with(value)
        && raw[1 + value.len()..].starts_with(&raw[..1])
    {
        1
    } else {
        return start;
    };
    let characters_before = value
        .get(..offset)
        .map_or(0, |prefix| prefix.chars().count());
    Location {
        line: start.line,
        column: start.column + quote_width + characters_before,
    }
}
