//! The router under test with a deterministic stand-in for the local model, a fresh store in a
//! temporary directory, and a fake OpenAI server: shared by the router's integration tests.
//!
//! The stand-in is acceptable only because these tests are about the router's decisions
//! (which tier answers, and why); the real model is exercised by the `cairn-models` tests and
//! the end-to-end tests.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_engine::llm::{Answer, CallScope, Request, Router, Settings, Task, Tier};
use cairn_engine::store::{NewRun, Store};
use cairn_models::{
    ChatMessage, ChatTemplateKind, Error as ModelError, FinishReason, GenerateParams, Generation,
    LanguageModel, ModelIdentity,
};
use serde_json::{Value, json};

use super::openai_server::{FakeOpenAi, Reply};

// ---------------------------------------------------------------------------------------------
// Test doubles and harness

/// What the stand-in local model answers to `assess_risk`.
pub fn local_answer() -> Value {
    json!({ "level": "medium", "score": 45, "reasons": ["local stand-in"], "strategy": "rolling" })
}

/// What the caller's deterministic rules answer.
pub fn rules_answer() -> Value {
    json!({ "level": "medium", "score": 40, "reasons": [], "strategy": "rolling" })
}

/// A deterministic stand-in for the local model (see the module doc for why it is acceptable).
pub struct StandInModel {
    identity: ModelIdentity,
    broken: bool,
    pub calls: AtomicUsize,
}

impl StandInModel {
    pub fn new(broken: bool) -> Arc<StandInModel> {
        Arc::new(StandInModel {
            identity: ModelIdentity {
                architecture: "llama".into(),
                name: Some("stand-in".into()),
                path: PathBuf::from("/nonexistent/stand-in.gguf"),
                file_name: "stand-in.gguf".into(),
                file_size: 1,
                modified_unix: 0,
                sha256: None,
                context_length: 8192,
                chat_template: ChatTemplateKind::ChatMl,
            },
            broken,
            calls: AtomicUsize::new(0),
        })
    }

    fn answer(
        &self,
        prompt_tokens: usize,
        params: &GenerateParams,
    ) -> Result<Generation, ModelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.broken {
            return Err(ModelError::Constraint {
                reason: "stand-in told to fail".into(),
            });
        }
        let text = match params.json_schema {
            Some(_) => local_answer().to_string(),
            None => "Local stand-in summary of the change.".to_string(),
        };
        Ok(Generation {
            completion_tokens: text.len() / 4,
            text,
            token_ids: Vec::new(),
            prompt_tokens,
            finish_reason: FinishReason::EndOfText,
            input_summarized: false,
        })
    }
}

impl LanguageModel for StandInModel {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        Ok(text.len().div_ceil(4))
    }

    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        _: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.answer(prompt.len() / 4, params)
    }

    fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        _: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.answer(messages.iter().map(|m| m.content.len() / 4).sum(), params)
    }
}

pub struct Harness {
    pub router: Arc<Router>,
    pub store: Store,
    pub run_id: i64,
    pub _home: tempfile::TempDir,
}

/// `yaml` with `BASE_URL` replaced by the server's URL; a fresh store in a temporary directory.
pub fn harness(server: &FakeOpenAi, yaml: &str, local: Option<Arc<StandInModel>>) -> Harness {
    let settings =
        Settings::parse("cairn.yaml", &yaml.replace("BASE_URL", &server.base_url())).unwrap();
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(&home.path().join("cairn.db")).unwrap();
    let run_id = store
        .write(|txn| {
            txn.create_run(&NewRun {
                workflow: "llm-router-test".into(),
                source_path: None,
                definition: "name: llm-router-test\n".into(),
                context: json!({}),
                step_ids: vec!["analyze".into()],
                owner: "llm_router test".into(),
                lease_ms: 60_000,
            })
        })
        .unwrap();
    let router = match local {
        Some(model) => Router::with_local_model(settings, store.clone(), model).unwrap(),
        None => Router::new(settings, store.clone()).unwrap(),
    };
    Harness {
        router: Arc::new(router),
        store,
        run_id,
        _home: home,
    }
}

pub const INSTRUCTION: &str = "You assess how risky it is to deploy a code change. Answer only with JSON: level (low, \
                           medium or high), score (0-100), up to 5 short reasons, and the deployment strategy \
                           (rolling, blue_green or canary).";

pub const SMALL_DIFF: &str = "diff --git a/src/auth.rs b/src/auth.rs\n--- a/src/auth.rs\n+++ b/src/auth.rs\n@@ -1,2 +1,2 @@\n-fn check() -> bool { verify() }\n+fn check() -> bool { true }\n";

pub fn risk(input: &str) -> Request {
    Request {
        task: Task::AssessRisk,
        instruction: INSTRUCTION.into(),
        input: input.into(),
        diff: Some(SMALL_DIFF.into()),
    }
}

/// Remote with one retry and a breaker that stays closed, `assess_risk` remote then local.
pub const FAILOVER: &str = "llm:
  remote:
    base_url: BASE_URL
    model: fake-gpt
    timeout: 400ms
    retries: 1
    breaker: { failures: 100, cool_down: 1s }
  tasks:
    assess_risk: remote-then-local
  prices:
    remote: { input: 0.15, output: 0.60 }
";

/// One `assess_risk` call against a server answering `script` then `mode`; the tier, the
/// reasons and what was recorded in the run's history are checked by the callers.
pub async fn failing_call(
    script: Vec<Reply>,
    mode: Reply,
    yaml: &str,
    local: Arc<StandInModel>,
) -> (Answer, FakeOpenAi, Harness, Duration) {
    let server = FakeOpenAi::start().await;
    server.script(script);
    server.set_mode(mode);
    let harness = harness(&server, yaml, Some(local));
    let scope = CallScope::new(harness.run_id, "analyze");
    let started = Instant::now();
    let answer = harness
        .router
        .ask(
            Some(&scope),
            risk("Commit subject: trust every token"),
            rules_answer,
        )
        .await;
    let elapsed = started.elapsed();
    // What the run's history says matches what the caller was told.
    let recorded = harness
        .store
        .calls(harness.run_id)
        .unwrap()
        .into_iter()
        .find(|call| call.step_id == "analyze" && call.call_index == 0)
        .unwrap();
    assert_eq!(recorded.tier, answer.tier.as_str());
    assert_eq!(recorded.fallbacks, answer.fallbacks);
    (answer, server, harness, elapsed)
}

pub fn assert_fell_back_to_local(answer: &Answer, reason: &str) {
    assert_eq!(answer.tier, Tier::Local, "{answer:?}");
    assert_eq!(answer.value.as_ref(), Some(&local_answer()));
    assert_eq!(answer.fallbacks.len(), 1, "{:?}", answer.fallbacks);
    assert!(
        answer.fallbacks[0].starts_with("remote: "),
        "{:?}",
        answer.fallbacks
    );
    assert!(
        answer.fallbacks[0].contains(reason),
        "expected `{reason}` in {:?}",
        answer.fallbacks
    );
}
