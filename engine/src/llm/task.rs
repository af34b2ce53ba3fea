//! Tasks callers ask for (never models), the tiers that may answer them, and the JSON Schemas
//! of the structured ones.

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    SummarizeDiff,
    ExplainChange,
    ProposeTests,
    /// A patch for a failing test's likely cause: plain text, a unified diff (the test agent
    /// parses it as hostile input, `agents/test/fix/patch.rs`).
    ProposeFix,
    ReviewDockerfile,
    AssessRisk,
    ChooseDeployStrategy,
}

/// Where a task is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TierChoice {
    Local,
    Remote,
    RemoteThenLocal,
}

/// Who actually answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Local,
    Remote,
    Rules,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Remote => "remote",
            Tier::Rules => "rules",
        }
    }
}

const TASKS: &[(Task, &str)] = &[
    (Task::SummarizeDiff, "summarize_diff"),
    (Task::ExplainChange, "explain_change"),
    (Task::ProposeTests, "propose_tests"),
    (Task::ProposeFix, "propose_fix"),
    (Task::ReviewDockerfile, "review_dockerfile"),
    (Task::AssessRisk, "assess_risk"),
    (Task::ChooseDeployStrategy, "choose_deploy_strategy"),
];

impl Task {
    pub fn name(self) -> &'static str {
        TASKS
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("unknown", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<Task> {
        TASKS.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
    }

    pub fn names() -> Vec<&'static str> {
        TASKS.iter().map(|(_, n)| *n).collect()
    }

    /// Decisions go remote when a remote exists; language chores stay local.
    pub fn default_tier(self) -> TierChoice {
        match self {
            Task::AssessRisk | Task::ChooseDeployStrategy => TierChoice::RemoteThenLocal,
            _ => TierChoice::Local,
        }
    }

    /// The JSON Schema a structured task's answer must match.
    pub fn schema(self) -> Option<Value> {
        match self {
            Task::AssessRisk => Some(json!({
                "type": "object",
                "properties": {
                    "level": { "type": "string", "enum": ["low", "medium", "high"] },
                    "score": { "type": "integer", "minimum": 0, "maximum": 100 },
                    "reasons": { "type": "array", "items": { "type": "string" }, "maxItems": 5 },
                    "strategy": { "type": "string", "enum": ["rolling", "blue_green", "canary"] }
                },
                "required": ["level", "score", "reasons", "strategy"],
                "additionalProperties": false
            })),
            Task::ChooseDeployStrategy => Some(json!({
                "type": "object",
                "properties": {
                    "strategy": { "type": "string", "enum": ["rolling", "blue_green", "canary", "hotfix"] },
                    "reason": { "type": "string" }
                },
                "required": ["strategy", "reason"],
                "additionalProperties": false
            })),
            // One test per answer: the gate validates each on its own.
            Task::ProposeTests => Some(json!({
                "type": "object",
                "properties": {
                    "test_name": { "type": "string", "minLength": 1, "maxLength": 80 },
                    "code": { "type": "string", "minLength": 1 }
                },
                "required": ["test_name", "code"],
                "additionalProperties": false
            })),
            _ => None,
        }
    }

    /// Answer length cap (also what a budget reservation assumes the answer may use).
    pub fn max_tokens(self) -> usize {
        match self {
            Task::SummarizeDiff | Task::ExplainChange => 96,
            Task::AssessRisk | Task::ChooseDeployStrategy => 160,
            Task::ProposeTests | Task::ReviewDockerfile => 384,
            // A diff repeats its context lines: room for a few small hunks.
            Task::ProposeFix => 512,
        }
    }
}
