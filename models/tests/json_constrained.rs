//! JSON-constrained mode: for 20 different prompts the real model's output parses as JSON
//! and validates against a schema with an enum field, a number and a list of strings.

#![allow(clippy::unwrap_used)]

mod common;

use cairn_models::{ChatMessage, GenerateParams, LanguageModel, LoadOptions, LocalModel};
use serde_json::{Value, json};

const PROMPTS: &[&str] = &[
    "Rate the risk of this change: fixed a typo in README.md.",
    "Rate the risk of this change: added a database migration that drops the users table.",
    "Rate the risk of this change: updated the login handler to skip password checks in tests.",
    "Rate the risk of this change: bumped the version of the TLS library.",
    "Rate the risk of this change: renamed a local variable in a helper function.",
    "Rate the risk of this change: changed the Dockerfile base image to alpine.",
    "Rate the risk of this change: added a new REST endpoint for exporting orders.",
    "Rate the risk of this change: rewrote the payment retry logic.",
    "Rate the risk of this change: deleted unused CSS.",
    "Rate the risk of this change: changed Kubernetes resource limits for the API pods.",
    "Classify this commit: 'docs: clarify install steps'.",
    "Classify this commit: 'feat(auth): add OAuth2 provider'.",
    "Classify this commit: 'chore(deps): upgrade serde to 1.0.200'.",
    "Classify this commit: 'fix: off-by-one in pagination'.",
    "Classify this commit: 'refactor: split the scheduler module'.",
    "How risky is editing the CI pipeline YAML to skip integration tests?",
    "How risky is adding an index to the orders table?",
    "How risky is changing a log message?",
    "How risky is rotating the JWT signing key?",
    "How risky is enabling a feature flag for 5% of users?",
];

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "risk": { "type": "string", "enum": ["low", "medium", "high"] },
            "score": { "type": "number", "minimum": 0, "maximum": 1 },
            "reasons": { "type": "array", "items": { "type": "string", "maxLength": 60 },
                "maxItems": 3
            }
        },
        "required": ["risk", "score", "reasons"],
        "additionalProperties": false
    })
}

fn validate(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["reasons", "risk", "score"] {
        return Err(format!("keys {keys:?}"));
    }
    let risk = object["risk"].as_str().ok_or("risk is not a string")?;
    if !["low", "medium", "high"].contains(&risk) {
        return Err(format!("risk {risk:?} not in the enum"));
    }
    let score = object["score"].as_f64().ok_or("score is not a number")?;
    if !(0.0..=1.0).contains(&score) {
        return Err(format!("score {score} out of range"));
    }
    let reasons = object["reasons"]
        .as_array()
        .ok_or("reasons is not an array")?;
    let short = |r: &Value| r.as_str().is_some_and(|s| s.chars().count() <= 60);
    if reasons.len() > 3 || !reasons.iter().all(short) {
        return Err(format!("reasons {reasons:?}"));
    }
    Ok(())
}

#[test]
fn constrained_output_always_validates() {
    let _serial = common::serial();
    let model =
        LocalModel::load(&common::model_path(), LoadOptions::default(), &mut |_| {}).unwrap();
    let mut failures = Vec::new();
    for (index, prompt) in PROMPTS.iter().enumerate() {
        let params = GenerateParams {
            // Worst case: 3 reasons x 60 characters (a token each) plus the rest of the object.
            max_tokens: 320,
            json_schema: Some(schema()),
            // Alternate greedy and sampled decoding: the constraint must hold for both.
            temperature: if index % 2 == 0 { 0.0 } else { 0.8 },
            top_p: 0.95,
            seed: index as u64,
            ..GenerateParams::default()
        };
        let messages = [
            ChatMessage::system(
                "You review code changes. Answer with JSON: risk (low, medium or high), \
                 score (0 to 1) and up to three short reasons.",
            ),
            ChatMessage::user(*prompt),
        ];
        let mut streamed = String::new();
        let generation = match model.chat(&messages, &params, &mut |t| streamed.push_str(t)) {
            Ok(generation) => generation,
            Err(err) => {
                failures.push(format!("{prompt}: {err}: {streamed}"));
                continue;
            }
        };
        match serde_json::from_str::<Value>(&generation.text) {
            Ok(value) => {
                if let Err(why) = validate(&value) {
                    failures.push(format!("{prompt}: {why}: {}", generation.text));
                }
            }
            Err(err) => failures.push(format!(
                "{prompt}: does not parse ({err}, {:?}): {}",
                generation.finish_reason, generation.text
            )),
        }
        eprintln!("{prompt} -> {}", generation.text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_invalid_schema_is_an_error() {
    let _serial = common::serial();
    let model =
        LocalModel::load(&common::model_path(), LoadOptions::default(), &mut |_| {}).unwrap();
    let params = GenerateParams {
        json_schema: Some(json!({ "type": "no-such-type" })),
        ..GenerateParams::default()
    };
    let err = model.generate("x", &params, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("failed to constrain"), "{err}");
}
