//! The router: every language-model call goes through [`Router::ask`].
//!
//! Per call: replay a recorded answer if this (run, step, call index) already has one →
//! try the configured tiers in order (remote: redact, cache, reserve budget, call, validate,
//! repair once, settle; local: cache, generate with JSON constraints) → fall back to the
//! caller's deterministic rules → record the call in the run's history.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use cairn_models::{ChatMessage, GenerateParams, LanguageModel, LoadOptions, LocalModel};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::config::{RemoteSees, Settings};
use super::remote::{Message, RemoteClient};
use super::task::{Task, Tier, TierChoice};
use crate::store::{CachedResponse, CallRecord, Store};

/// Identifies the calls of one step attempt; the n-th call of a re-run attempt replays the
/// n-th recorded answer.
pub struct CallScope {
    pub run_id: i64,
    pub step_id: String,
    next: AtomicU32,
}

impl CallScope {
    pub fn new(run_id: i64, step_id: impl Into<String>) -> Self {
        Self {
            run_id,
            step_id: step_id.into(),
            next: AtomicU32::new(0),
        }
    }
}

/// A task to answer. The prompt is `instruction` (system) + `input`, plus the diff when
/// given (the remote may be configured to see only the local model's summary of it).
#[derive(Debug, Clone)]
pub struct Request {
    pub task: Task,
    pub instruction: String,
    pub input: String,
    pub diff: Option<String>,
}

impl Request {
    /// Identifies the question for replay: the task and every text it is asked with.
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in [
            self.task.name(),
            &self.instruction,
            &self.input,
            self.diff.as_deref().unwrap_or(""),
        ] {
            // Length-prefixed, so moving text between fields changes the hash.
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer's text (for structured tasks, its JSON).
    pub text: String,
    /// The parsed answer of a structured task.
    pub value: Option<Value>,
    pub tier: Tier,
    pub cache_hit: bool,
    /// Replayed from the run's history: nothing was spent.
    pub replayed: bool,
    /// Why earlier tiers did not answer, in order.
    pub fallbacks: Vec<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
}

pub struct Router {
    settings: Settings,
    store: Store,
    remote: Option<RemoteClient>,
    local_path: Option<PathBuf>,
    local: OnceCell<Result<Arc<dyn LanguageModel>, String>>,
}

struct Attempt {
    text: String,
    value: Option<Value>,
    cache_hit: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: i64,
    saved_micros: i64,
}

impl Router {
    pub fn new(settings: Settings, store: Store) -> Result<Router, String> {
        let remote = settings.remote.clone().map(RemoteClient::new).transpose()?;
        let local_path = settings.local.model.clone();
        Ok(Router {
            settings,
            store,
            remote,
            local_path,
            local: OnceCell::new(),
        })
    }

    /// A router whose local tier is an already-loaded model (tests, benchmarks).
    pub fn with_local_model(
        settings: Settings,
        store: Store,
        model: Arc<dyn LanguageModel>,
    ) -> Result<Router, String> {
        let router = Router::new(settings, store)?;
        let _ = router.local.set(Ok(model));
        Ok(router)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The local model, loaded on first use and shared afterwards.
    pub async fn local_model(&self) -> Result<Arc<dyn LanguageModel>, String> {
        let path = self.local_path.clone();
        let threads = self.settings.local.threads;
        self.local
            .get_or_init(|| async move {
                let path = match path {
                    Some(path) => path,
                    None => cairn_models::default_model_path().map_err(|e| e.to_string())?,
                };
                let loaded = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let model = LocalModel::load(&path, LoadOptions { threads, ..LoadOptions::default() }, &mut |_| {});
                    tracing::info!(path = %path.display(), elapsed = ?started.elapsed(), ok = model.is_ok(), "local model loaded");
                    model
                })
                .await
                .map_err(|e| format!("model loading task failed: {e}"))?;
                loaded.map(|m| Arc::new(m) as Arc<dyn LanguageModel>).map_err(|e| format!("{e}"))
            })
            .await
            .clone()
    }

    /// Answers `request`, falling back remote → local → `rules`; never fails.
    pub async fn ask(
        &self,
        scope: Option<&CallScope>,
        request: Request,
        rules: impl FnOnce() -> Value,
    ) -> Answer {
        let index = scope.map(|s| s.next.fetch_add(1, Ordering::SeqCst));
        let request_sha256 = request.sha256();
        if let (Some(scope), Some(index)) = (scope, index)
            && let Ok(Some(recorded)) = self.store.recorded_call(
                scope.run_id,
                &scope.step_id,
                index,
                request.task.name(),
                &request_sha256,
            ) {
                return replayed(recorded, request.task);
            }
        let started = Instant::now();
        let tiers: &[Tier] = match self.settings.tier(request.task) {
            TierChoice::Local => &[Tier::Local],
            TierChoice::Remote => &[Tier::Remote],
            TierChoice::RemoteThenLocal => &[Tier::Remote, Tier::Local],
        };
        let run_id = scope.map(|s| s.run_id);
        let mut fallbacks = Vec::new();
        let mut answer = None;
        for &tier in tiers {
            let result = match tier {
                Tier::Remote => self.try_remote(&request, run_id).await,
                _ => self.try_local(&request).await,
            };
            match result {
                Ok(attempt) => {
                    answer = Some((tier, attempt));
                    break;
                }
                Err(reason) => {
                    tracing::info!(
                        task = request.task.name(),
                        tier = tier.as_str(),
                        "falling back: {reason}"
                    );
                    fallbacks.push(format!("{}: {reason}", tier.as_str()));
                }
            }
        }
        let (tier, attempt) = answer.unwrap_or_else(|| {
            let value = rules();
            let text = match &value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let structured = request.task.schema().is_some();
            (
                Tier::Rules,
                Attempt {
                    text,
                    value: structured.then_some(value),
                    cache_hit: false,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cost_micros: 0,
                    saved_micros: 0,
                },
            )
        });
        let answer = Answer {
            text: attempt.text,
            value: attempt.value,
            tier,
            cache_hit: attempt.cache_hit,
            replayed: false,
            fallbacks,
            prompt_tokens: attempt.prompt_tokens,
            completion_tokens: attempt.completion_tokens,
            cost_micros: attempt.cost_micros,
        };
        if let (Some(scope), Some(index)) = (scope, index) {
            let record = CallRecord {
                run_id: scope.run_id,
                step_id: scope.step_id.clone(),
                call_index: index,
                task: request.task.name().to_string(),
                tier: tier.as_str().to_string(),
                cache_hit: answer.cache_hit,
                prompt_tokens: answer.prompt_tokens,
                completion_tokens: answer.completion_tokens,
                cost_micros: answer.cost_micros,
                saved_micros: attempt.saved_micros,
                latency_ms: started.elapsed().as_millis() as i64,
                result: answer.text.clone(),
                fallbacks: answer.fallbacks.clone(),
                request_sha256: Some(request_sha256),
            };
            if let Err(error) = self.store.write(|txn| txn.record_call(&record)) {
                tracing::warn!(%error, "failed to record a language-model call");
            }
        }
        answer
    }

    async fn try_remote(&self, request: &Request, run_id: Option<i64>) -> Result<Attempt, String> {
        let Some(remote) = &self.remote else {
            return Err("no remote tier configured".into());
        };
        let mut input = request.input.clone();
        if let Some(diff) = &request.diff {
            match self.settings.remote_sees {
                RemoteSees::Diff => input.push_str(&format!("\n\nDiff:\n{diff}")),
                RemoteSees::Summary => {
                    let summary = self.local_summary(diff).await.map_err(|e| {
                        format!("the remote may only see a summary of the diff, and none could be made: {e}")
                    })?;
                    input.push_str(&format!("\n\nSummary of the diff:\n{summary}"));
                }
            }
        }
        let mut messages = vec![
            Message {
                role: "system",
                content: request.instruction.clone(),
            },
            Message {
                role: "user",
                content: input,
            },
        ];
        let schema = request.task.schema();
        let max_tokens = request.task.max_tokens();
        let key = cache_key(&json!({
            "tier": "remote",
            "base_url": remote.base_url(),
            "model": remote.model(),
            "temperature": 0,
            "seed": 0,
            "max_tokens": max_tokens,
            "schema": schema,
            "messages": RemoteClient::outbound(&messages),
        }));
        if let Some(cached) = self.cached(&key, schema.as_ref()) {
            return Ok(cached);
        }
        let price = self.settings.price("remote");
        let limits = self.settings.budget("remote");
        let mut spent = (0u64, 0u64, 0i64);
        // One repair attempt for an answer that breaks the schema.
        for round in 0..2 {
            let estimate_prompt = messages
                .iter()
                .map(|m| m.content.len() as u64 / 3 + 8)
                .sum::<u64>();
            let estimate = estimate_prompt + max_tokens as u64;
            let cost = price.cost_micros(estimate_prompt, max_tokens as u64);
            let reservation = self
                .store
                .write(|txn| txn.reserve("remote", run_id, estimate, cost, &limits))
                .map_err(|e| format!("budget ledger unavailable: {e}"))??;
            let result = remote.chat(&messages, max_tokens, schema.as_ref()).await;
            let answer = match result {
                Ok(answer) => answer,
                Err(error) => {
                    if error.maybe_billed() {
                        let _ = self
                            .store
                            .write(|txn| txn.settle(reservation, estimate, cost));
                    } else {
                        let _ = self.store.write(|txn| txn.release(reservation));
                    }
                    return Err(error.to_string());
                }
            };
            let prompt = answer.prompt_tokens.unwrap_or(estimate_prompt);
            let completion = answer.completion_tokens.unwrap_or(max_tokens as u64);
            let cost = price.cost_micros(prompt, completion);
            let _ = self
                .store
                .write(|txn| txn.settle(reservation, prompt + completion, cost));
            spent = (spent.0 + prompt, spent.1 + completion, spent.2 + cost);
            match check(&answer.text, schema.as_ref()) {
                Ok(value) => {
                    let response = CachedResponse {
                        response: answer.text.clone(),
                        prompt_tokens: spent.0,
                        completion_tokens: spent.1,
                        cost_micros: spent.2,
                    };
                    self.cache(&key, request.task, "remote", remote.model(), &response);
                    return Ok(Attempt {
                        text: answer.text,
                        value,
                        cache_hit: false,
                        prompt_tokens: spent.0,
                        completion_tokens: spent.1,
                        cost_micros: spent.2,
                        saved_micros: 0,
                    });
                }
                Err(problem) if round == 0 => {
                    tracing::info!(
                        "remote answer broke the schema ({problem}); asking once to repair it"
                    );
                    messages.push(Message {
                        role: "assistant",
                        content: answer.text,
                    });
                    messages.push(Message {
                        role: "user",
                        content: format!("That answer is invalid: {problem}. Reply with only a JSON object matching this schema: {}", schema.clone().unwrap_or_default()),
                    });
                }
                Err(problem) => return Err(format!("invalid answer after one repair: {problem}")),
            }
        }
        Err("invalid answer".into())
    }

    async fn try_local(&self, request: &Request) -> Result<Attempt, String> {
        let model = self.local_model().await?;
        let schema = request.task.schema();
        let mut input = request.input.clone();
        if let Some(diff) = &request.diff {
            input.push_str(&format!("\n\nDiff:\n{diff}"));
        }
        let params = GenerateParams {
            max_tokens: request.task.max_tokens(),
            json_schema: schema.clone(),
            ..GenerateParams::default()
        };
        let identity = model.identity();
        let key = cache_key(&json!({
            "tier": "local",
            "model": [identity.file_name, identity.file_size, identity.modified_unix, identity.sha256],
            "params": params,
            "instruction": request.instruction,
            "input": input,
        }));
        if let Some(cached) = self.cached(&key, schema.as_ref()) {
            return Ok(cached);
        }
        let messages = vec![
            ChatMessage::system(request.instruction.clone()),
            ChatMessage::user(input),
        ];
        let generation = tokio::task::spawn_blocking({
            let model = model.clone();
            let params = params.clone();
            move || model.chat(&messages, &params, &mut |_| {})
        })
        .await
        .map_err(|e| format!("local generation task failed: {e}"))?
        .map_err(|e| format!("local model failed: {e}"))?;
        let text = generation.text.trim().to_string();
        if text.is_empty() {
            return Err("the local model produced no text".into());
        }
        let value = check(&text, schema.as_ref())?;
        let response = CachedResponse {
            response: text.clone(),
            prompt_tokens: generation.prompt_tokens as u64,
            completion_tokens: generation.completion_tokens as u64,
            cost_micros: 0,
        };
        let model_name = identity.file_name.clone();
        self.cache(&key, request.task, "local", &model_name, &response);
        Ok(Attempt {
            text,
            value,
            cache_hit: false,
            prompt_tokens: response.prompt_tokens,
            completion_tokens: response.completion_tokens,
            cost_micros: 0,
            saved_micros: 0,
        })
    }

    /// The local model's one-sentence summary of a diff (for `remote_sees: summary`).
    async fn local_summary(&self, diff: &str) -> Result<String, String> {
        let model = self.local_model().await?;
        let diff = diff.to_string();
        let generation = tokio::task::spawn_blocking(move || {
            let params = GenerateParams {
                max_tokens: Task::SummarizeDiff.max_tokens(),
                ..GenerateParams::default()
            };
            model.summarize(
                &diff,
                "Summarize this code change in one sentence.",
                &params,
            )
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(generation.text.trim().to_string())
    }

    fn cached(&self, key: &str, schema: Option<&Value>) -> Option<Attempt> {
        let cached = self.store.cache_get(key).ok().flatten()?;
        let value = check(&cached.response, schema).ok()?;
        let _ = self.store.write(|txn| txn.cache_hit(key));
        Some(Attempt {
            text: cached.response,
            value,
            cache_hit: true,
            prompt_tokens: cached.prompt_tokens,
            completion_tokens: cached.completion_tokens,
            cost_micros: 0,
            saved_micros: cached.cost_micros,
        })
    }

    fn cache(&self, key: &str, task: Task, tier: &str, model: &str, response: &CachedResponse) {
        let ttl = self.settings.cache_ttl.as_millis() as i64;
        if let Err(error) = self
            .store
            .write(|txn| txn.cache_put(key, task.name(), tier, model, response, ttl))
        {
            tracing::warn!(%error, "failed to cache a language-model answer");
        }
    }
}

fn replayed(recorded: CallRecord, task: Task) -> Answer {
    let tier = match recorded.tier.as_str() {
        "remote" => Tier::Remote,
        "local" => Tier::Local,
        _ => Tier::Rules,
    };
    let value = task
        .schema()
        .and_then(|_| serde_json::from_str(&recorded.result).ok());
    Answer {
        text: recorded.result,
        value,
        tier,
        cache_hit: recorded.cache_hit,
        replayed: true,
        fallbacks: recorded.fallbacks,
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_micros: 0,
    }
}

/// Parses and validates a structured answer; plain-text tasks pass through.
fn check(text: &str, schema: Option<&Value>) -> Result<Option<Value>, String> {
    let Some(schema) = schema else {
        return Ok(None);
    };
    let trimmed = text
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let value: Value = serde_json::from_str(trimmed).map_err(|e| format!("not JSON: {e}"))?;
    let validator = jsonschema::validator_for(schema).map_err(|e| format!("bad schema: {e}"))?;
    if let Some(error) = validator.iter_errors(&value).next() {
        return Err(format!("{} at `{}`", error, error.instance_path()));
    }
    Ok(Some(value))
}

/// Exact keys only: SHA-256 over everything that determines the answer.
pub fn cache_key(material: &Value) -> String {
    hex::encode(Sha256::digest(material.to_string().as_bytes()))
}
