//! Evaluating a [`Condition`] against the run context (a JSON document the executor builds:
//! `risk`, `change`, `steps.<id>.…`, `commit`, `branch`, …).
//!
//! The rules favour "skip" over "crash" because a condition is checked mid-run, long after
//! validation: a missing path is `null`; a comparison involving `null` is false (except
//! `== null` and `!= null`); risk levels compare by rank `low < medium < high`, also when one
//! side is a string from an agent's output; numbers compare numerically, also against strings
//! that hold a number; comparing values of unrelated types is false (`!=` is true).

use std::cmp::Ordering;

use serde_json::Value as Json;

use super::condition::{CompareOp, Condition, Expr, Literal, RiskLevel};

/// An intermediate value during evaluation.
#[derive(Debug, Clone)]
enum Value<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(std::borrow::Cow<'a, str>),
    Risk(RiskLevel),
    /// An array or object from the context, kept as is.
    Composite(&'a Json),
}

impl Condition {
    /// Whether the step should run given `context`.
    pub fn evaluate(&self, context: &Json) -> bool {
        truthy(&evaluate(&self.expr, context))
    }
}

fn evaluate<'a>(expr: &'a Expr, context: &'a Json) -> Value<'a> {
    match expr {
        Expr::Literal(literal) => match literal {
            Literal::Null => Value::Null,
            Literal::Bool(value) => Value::Bool(*value),
            Literal::Number(value) => Value::Number(*value),
            Literal::String(value) => Value::String(value.as_str().into()),
            Literal::Risk(level) => Value::Risk(*level),
        },
        Expr::Path { segments, .. } => lookup(context, segments),
        Expr::Not(inner) => Value::Bool(!truthy(&evaluate(inner, context))),
        Expr::And(left, right) => {
            Value::Bool(truthy(&evaluate(left, context)) && truthy(&evaluate(right, context)))
        }
        Expr::Or(left, right) => {
            Value::Bool(truthy(&evaluate(left, context)) || truthy(&evaluate(right, context)))
        }
        Expr::Compare(op, left, right) => Value::Bool(compare(
            *op,
            &evaluate(left, context),
            &evaluate(right, context),
        )),
    }
}

fn lookup<'a>(context: &'a Json, segments: &[String]) -> Value<'a> {
    let mut current = context;
    for segment in segments {
        let next = match current {
            Json::Object(map) => map.get(segment),
            Json::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            _ => None,
        };
        match next {
            Some(value) => current = value,
            None => return Value::Null,
        }
    }
    match current {
        Json::Null => Value::Null,
        Json::Bool(value) => Value::Bool(*value),
        // Integers beyond 2^53 lose precision here; conditions compare counts and scores.
        Json::Number(number) => number.as_f64().map_or(Value::Null, Value::Number),
        Json::String(text) => Value::String(text.as_str().into()),
        Json::Array(_) | Json::Object(_) => Value::Composite(current),
    }
}

fn truthy(value: &Value<'_>) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(value) => *value,
        Value::Number(number) => *number != 0.0 && !number.is_nan(),
        Value::String(text) => !text.is_empty(),
        Value::Risk(_) => true,
        Value::Composite(Json::Array(items)) => !items.is_empty(),
        Value::Composite(Json::Object(map)) => !map.is_empty(),
        Value::Composite(_) => true,
    }
}

fn compare(op: CompareOp, left: &Value<'_>, right: &Value<'_>) -> bool {
    if matches!(left, Value::Null) || matches!(right, Value::Null) {
        let both_null = matches!(left, Value::Null) && matches!(right, Value::Null);
        return match op {
            CompareOp::Equal => both_null,
            CompareOp::NotEqual => !both_null,
            _ => false,
        };
    }
    match order(left, right) {
        Some(ordering) => match op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Less => ordering == Ordering::Less,
            CompareOp::LessOrEqual => ordering != Ordering::Greater,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::GreaterOrEqual => ordering != Ordering::Less,
        },
        // Unrelated types: never equal, never ordered.
        None => op == CompareOp::NotEqual,
    }
}

/// How two non-null values relate, or `None` when they cannot be compared.
fn order(left: &Value<'_>, right: &Value<'_>) -> Option<Ordering> {
    use Value::*;
    match (left, right) {
        (Risk(a), Risk(b)) => Some(a.cmp(b)),
        (Risk(a), String(text)) => RiskLevel::from_name(text).map(|b| a.cmp(&b)),
        (String(text), Risk(b)) => RiskLevel::from_name(text).map(|a| a.cmp(b)),
        (Number(a), Number(b)) => a.partial_cmp(b),
        (Number(a), String(text)) => parse_number(text).and_then(|b| a.partial_cmp(&b)),
        (String(text), Number(b)) => parse_number(text).and_then(|a| a.partial_cmp(b)),
        (String(a), String(b)) => match (RiskLevel::from_name(a), RiskLevel::from_name(b)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => Some(a.cmp(b)),
        },
        // Equality only (unequal is "unrelated", so `!=` still holds): `true > false` is more
        // likely a mistake than a question.
        (Bool(a), Bool(b)) => (a == b).then_some(Ordering::Equal),
        (Composite(a), Composite(b)) => (a == b).then_some(Ordering::Equal),
        _ => None,
    }
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use serde_json::json;

    use super::*;

    fn check(text: &str, context: &Json) -> bool {
        Condition::parse(text).unwrap().evaluate(context)
    }

    #[test]
    fn risk_levels_compare_by_rank() {
        let context = json!({ "risk": "medium", "steps": { "analyze": { "risk": "HIGH" } } });
        assert!(check("risk >= medium", &context));
        assert!(check("risk > low", &context));
        assert!(!check("risk >= high", &context));
        assert!(check("risk == medium", &context));
        assert!(check("risk == 'medium'", &context));
        assert!(check("risk < 'high'", &context));
        assert!(check("steps.analyze.risk == high", &context));
        assert!(!check("risk >= medium", &json!({ "risk": "low" })));
    }

    #[test]
    fn missing_paths_are_null() {
        let context = json!({ "change": { "only_docs": false } });
        assert!(!check("risk >= low", &context));
        assert!(!check("risk < high", &context));
        assert!(!check("risk == medium", &context));
        assert!(check("risk != medium", &context));
        assert!(check("risk == null", &context));
        assert!(!check("risk != null", &context));
        assert!(check("change.only_docs != null", &context));
        assert!(!check("change.only_docs.deeper", &context));
        assert!(!check("change.only_docs", &context));
        assert!(check("!change.only_docs", &context));
        assert!(check("not change.only_docs", &context));
    }

    #[test]
    fn truthiness() {
        let context = json!({
            "env": { "zero": 0, "one": 1, "empty": "", "text": "x", "list": [], "items": [1],
                     "map": {}, "full": { "a": 1 }, "null": null }
        });
        for falsy in [
            "env.zero",
            "env.empty",
            "env.list",
            "env.map",
            "env.null",
            "env.missing",
            "false",
            "null",
            "0",
        ] {
            assert!(!check(falsy, &context), "{falsy} should be false");
        }
        for truthy in [
            "env.one",
            "env.text",
            "env.items",
            "env.full",
            "true",
            "low",
            "'x'",
            "env.items.0",
        ] {
            assert!(check(truthy, &context), "{truthy} should be true");
        }
    }

    #[test]
    fn numbers_and_strings() {
        let context = json!({ "change": { "files": 12, "lines": "340", "kind": "feature" }, "branch": "main" });
        assert!(check("change.files > 10", &context));
        assert!(check("change.files == 12.0", &context));
        assert!(check("change.lines >= 300", &context));
        assert!(check("300 < change.lines", &context));
        assert!(!check("change.kind > 3", &context));
        assert!(check("change.kind != 3", &context));
        assert!(check(
            "branch == \"main\" && change.kind == 'feature'",
            &context
        ));
        assert!(check("branch == 'dev' || change.files >= 12", &context));
        assert!(check("!(branch == 'dev')", &context));
        assert!(!check("branch == true", &context));
    }

    #[test]
    fn booleans_only_compare_for_equality() {
        let context = json!({ "change": { "only_docs": true } });
        assert!(check("change.only_docs == true", &context));
        assert!(check("change.only_docs != false", &context));
        assert!(!check("change.only_docs > false", &context));
    }
}
