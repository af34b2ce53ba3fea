//! The router: every language-model call goes through [`Router::ask`].
//!
//! Per call: replay a recorded answer if this (run, step, call index) already has one →
//! try the configured tiers in order (remote: least context, redact, cache, reserve budget,
//! call, validate, repair once, settle; local: cache, generate with JSON constraints) → fall
//! back to the caller's deterministic rules → record the call in the run's history.
//!
//! A call made for a step knows the step's deadline ([`CallScope::with_deadline`]): the remote
//! tier must give up early enough for the local fallback to answer before the step times out.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn_models::{ChatMessage, GenerateParams, LanguageModel, LoadOptions, LocalModel};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::budget::{Reservation, prompt_upper_bound};
use super::config::{RemoteSees, Settings};
use super::context::minimal_diff;
use super::remote::{Message, RemoteClient};
use super::task::{Task, Tier, TierChoice};
use crate::pipeline::ModelUse;
use crate::store::{CachedResponse, CallRecord, Store};

/// Identifies the calls of one step attempt; the n-th call of a re-run attempt replays the
/// n-th recorded answer.
pub struct CallScope {
    /// The run; 0 for calls made outside any run (`cairn analyze`), whose ids start at 1.
    pub run_id: i64,
    pub step_id: String,
    /// When the step times out: calls give up early enough to fall back before it.
    pub deadline: Option<Instant>,
    /// The models the step may use (its `llm:`); a tier that is off is skipped.
    models: ModelUse,
    next: AtomicU32,
}

impl CallScope {
    pub fn new(run_id: i64, step_id: impl Into<String>) -> Self {
        Self {
            run_id,
            step_id: step_id.into(),
            deadline: None,
            models: ModelUse::default(),
            next: AtomicU32::new(0),
        }
    }

    /// Calls made outside any run (a command such as `cairn analyze`): recorded, so their
    /// spending shows in `cairn costs`, under a label unique to this invocation (nothing to
    /// replay), and charged to no run's budget.
    pub fn outside_run(label: &str) -> Self {
        Self::new(0, format!("{label} {:016x}", rand::random::<u64>()))
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_models(mut self, models: ModelUse) -> Self {
        self.models = models;
        self
    }

    /// Why `tier` may not answer in this scope, if it may not.
    fn refuses(&self, tier: Tier) -> Option<&'static str> {
        match tier {
            Tier::Local if !self.models.local_allowed() => {
                Some("the local model is off for this step (llm: local: off)")
            }
            Tier::Remote if !self.models.remote_allowed() => {
                Some("the remote model is off for this step (llm: remote: off)")
            }
            _ => None,
        }
    }

    fn budget_run(&self) -> Option<i64> {
        (self.run_id > 0).then_some(self.run_id)
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
    /// The stored secrets' values: masked in every request before any tier, the cache or the
    /// call record sees it (`cairn secret set`).
    secrets: crate::secrets::Masker,
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
        // Secrets that cannot be opened (no key) are unknown to every step too.
        let secrets = crate::secrets::Vault::new(&store)
            .values()
            .map(|values| crate::secrets::Masker::new(&values))
            .unwrap_or_default();
        Ok(Router {
            settings,
            store,
            remote,
            local_path,
            local: OnceCell::new(),
            secrets,
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
        let request = self.without_secrets(request);
        let index = scope.map(|s| s.next.fetch_add(1, Ordering::SeqCst));
        let request_sha256 = request.sha256();
        if let (Some(scope), Some(index)) = (scope, index)
            && let Ok(Some(recorded)) = self.store.recorded_call(
                scope.run_id,
                &scope.step_id,
                index,
                request.task.name(),
                &request_sha256,
            )
        {
            return replayed(recorded, request.task);
        }
        let started = Instant::now();
        let tiers: &[Tier] = match self.settings.tier(request.task) {
            TierChoice::Local => &[Tier::Local],
            TierChoice::Remote => &[Tier::Remote],
            TierChoice::RemoteThenLocal => &[Tier::Remote, Tier::Local],
        };
        let run_id = scope.and_then(CallScope::budget_run);
        let deadline = scope.and_then(|s| s.deadline);
        let mut fallbacks = Vec::new();
        let mut answer = None;
        let allowed = |tier: &Tier| scope.and_then(|s| s.refuses(*tier)).is_none();
        for (position, &tier) in tiers.iter().enumerate() {
            if let Some(reason) = scope.and_then(|s| s.refuses(tier)) {
                fallbacks.push(format!("{}: {reason}", tier.as_str()));
                continue;
            }
            let local_follows = tiers[position + 1..]
                .iter()
                .any(|t| *t == Tier::Local && allowed(t));
            let result = match tier {
                Tier::Remote => match self.remote_until(deadline, local_follows) {
                    Ok(until) => self.try_remote(&request, run_id, until).await,
                    Err(reason) => Err(reason),
                },
                _ => match deadline {
                    Some(deadline) if Instant::now() >= deadline => {
                        Err("the step's deadline has passed".to_string())
                    }
                    _ => self.try_local(&request).await,
                },
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

    /// `request` with every stored secret's value masked, in every part of it.
    fn without_secrets(&self, mut request: Request) -> Request {
        if self.secrets.is_empty() {
            return request;
        }
        for text in [&mut request.instruction, &mut request.input] {
            if let std::borrow::Cow::Owned(masked) = self.secrets.mask(text) {
                *text = masked;
            }
        }
        if let Some(diff) = &mut request.diff
            && let std::borrow::Cow::Owned(masked) = self.secrets.mask(diff)
        {
            *diff = masked;
        }
        request
    }

    /// When the remote must have answered: its own `call_timeout`, shortened by the step's
    /// deadline less what the local fallback needs (at most a third of the time left, so a
    /// short step still tries the remote).
    fn remote_until(
        &self,
        deadline: Option<Instant>,
        local_follows: bool,
    ) -> Result<Instant, String> {
        let now = Instant::now();
        let own = now
            + self
                .settings
                .remote
                .as_ref()
                .map_or(Duration::ZERO, |r| r.call_timeout);
        let Some(deadline) = deadline else {
            return Ok(own);
        };
        let left = deadline.saturating_duration_since(now);
        let reserve = if local_follows {
            self.settings.local_reserve.min(left / 3)
        } else {
            // Only the rules follow: enough to record the call.
            Duration::from_secs(1).min(left / 10)
        };
        let until = own.min(deadline - reserve.min(left));
        if until.saturating_duration_since(now) < Duration::from_millis(500) {
            return Err(format!(
                "no time left before the step's deadline ({left:?} left, {reserve:?} kept for the fallback)"
            ));
        }
        Ok(until)
    }

    async fn try_remote(
        &self,
        request: &Request,
        run_id: Option<i64>,
        until: Instant,
    ) -> Result<Attempt, String> {
        let Some(remote) = &self.remote else {
            return Err("no remote tier configured".into());
        };
        let mut input = request.input.clone();
        if let Some(diff) = &request.diff {
            match self.settings.remote_sees {
                // The least the remote needs: changed lines with a line of context; whole
                // added or deleted files as a one-line summary.
                RemoteSees::Diff => input.push_str(&format!("\n\nDiff:\n{}", minimal_diff(diff))),
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
        let outbound = remote.outbound(&messages).map_err(|e| e.to_string())?;
        let key = cache_key(&json!({
            "tier": "remote",
            "base_url": remote.base_url(),
            "model": remote.model(),
            "temperature": 0,
            "seed": 0,
            "max_tokens": max_tokens,
            "schema": schema,
            "messages": outbound,
        }));
        if let Some(cached) = self.cached(&key, schema.as_ref()) {
            return Ok(cached);
        }
        let price = self.settings.price("remote");
        let limits = self.settings.budget("remote");
        // A dead process's reservation expires once its call cannot be running any more.
        let expires_at = crate::store::now_ms()
            + until.saturating_duration_since(Instant::now()).as_millis() as i64
            + 60_000;
        let mut spent = (0u64, 0u64, 0i64);
        // One repair attempt for an answer that breaks the schema.
        for round in 0..2 {
            let prompt_bound = prompt_upper_bound(
                &remote.outbound(&messages).map_err(|e| e.to_string())?,
                schema.as_ref(),
            );
            let mut reservation = Reservation::open(
                &self.store,
                run_id,
                limits,
                prompt_bound,
                max_tokens as u64,
                price,
                expires_at,
            )?;
            let result = remote
                .chat(&messages, max_tokens, schema.as_ref(), until, &mut || {
                    reservation.extend()
                })
                .await;
            let answer = match result {
                Ok(answer) => answer,
                Err(error) => {
                    reservation.fail(error.maybe_billed());
                    return Err(error.to_string());
                }
            };
            let prompt = answer.prompt_tokens.unwrap_or(prompt_bound);
            let completion = answer.completion_tokens.unwrap_or(max_tokens as u64);
            let cost = price.cost_micros(prompt, completion);
            reservation.settle(prompt + completion, cost);
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
