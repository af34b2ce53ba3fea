//! `/api/v1/runs…`: list with filters, one run with its steps, attempts, events, route, risk
//! reasons and model calls, and the write actions: start, cancel, resume.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{CanRead, CanWrite};
use super::error::{Error, Result};
use super::redact;
use super::state::ApiState;
use crate::store::{RunFilter, RunState};
use crate::trigger::ServeCommand;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub workflow: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub state: Option<String>,
    pub risk: Option<String>,
    pub limit: Option<usize>,
    pub before: Option<i64>,
}

pub async fn list(
    _: CanRead,
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    if let Some(s) = &query.state
        && s.parse::<RunState>().is_err()
    {
        return Err(Error::Invalid(format!(
            "state `{s}` is not one of running, succeeded, failed, cancelled"
        )));
    }
    if let Some(r) = &query.risk
        && !matches!(r.as_str(), "low" | "medium" | "high")
    {
        return Err(Error::Invalid(format!(
            "risk `{r}` is not one of low, medium, high"
        )));
    }
    let filter = RunFilter {
        workflow: query.workflow,
        repository: query.repository,
        branch: query.branch,
        state: query.state,
        risk: query.risk,
        limit: query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        before: query.before,
    };
    let runs = state
        .read(move |store| store.filtered_runs(&filter))
        .await?;
    let mut runs = serde_json::to_value(runs).unwrap_or_default();
    redact_runs(&mut runs);
    Ok(Json(json!({ "runs": runs })))
}

/// Free text of runs (reasons) is redacted; the trigger context (commit, branch) is not text.
fn redact_runs(runs: &mut Value) {
    if let Some(list) = runs.as_array_mut() {
        for run in list {
            if let Some(reason) = run.get_mut("reason") {
                redact::value(reason);
            }
        }
    }
}

pub async fn one(
    _: CanRead,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
) -> Result<Json<Value>> {
    detail(&state, run_id).await.map(Json)
}

/// One run in detail, redacted: what `GET /api/v1/runs/{id}` answers and the run page shows.
pub async fn detail(state: &ApiState, run_id: i64) -> Result<Value> {
    let detail = state
        .read(move |store| {
            let run = store.run(run_id)?;
            let steps = store.steps(run_id)?;
            let attempts = store.attempts(run_id)?;
            let events = store.events(run_id)?;
            let calls = store.calls(run_id)?;
            Ok((run, steps, attempts, events, calls))
        })
        .await
        .map_err(|error| match error {
            Error::Store(crate::store::Error::RunNotFound(id)) => {
                Error::NotFound(format!("there is no run {id}"))
            }
            other => other,
        })?;
    let (run, steps, attempts, events, calls) = detail;
    // The orchestrator's outputs say the route and why: the first step that published a risk.
    let analysis = steps
        .iter()
        .filter_map(|s| s.outputs.as_ref())
        .find(|o| o.get("risk").is_some());
    let pick = |key: &str| {
        analysis
            .and_then(|o| o.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let graph = edges(state, &run.definition);
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "step_id": c.step_id, "call_index": c.call_index, "task": c.task,
                "tier": c.tier, "cache_hit": c.cache_hit, "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens, "cost_micros": c.cost_micros,
                "latency_ms": c.latency_ms, "fallbacks": c.fallbacks,
            })
        })
        .collect();
    let mut body = json!({
        "run": run,
        "risk": pick("risk"),
        "route": pick("route"),
        "score": pick("score"),
        "reasons": pick("reasons"),
        "summary": pick("summary"),
        "steps": steps,
        "attempts": attempts,
        "events": events,
        "model_calls": calls,
        "edges": graph,
    });
    for key in [
        "steps",
        "attempts",
        "events",
        "reasons",
        "summary",
        "model_calls",
    ] {
        if let Some(part) = body.get_mut(key) {
            redact::value(part);
        }
    }
    if let Some(reason) = body.pointer_mut("/run/reason") {
        redact::value(reason);
    }
    Ok(body)
}

async fn known_unfinished(state: &ApiState, run_id: i64) -> Result<crate::store::RunRecord> {
    let run = state
        .read(move |store| store.run(run_id))
        .await
        .map_err(|error| match error {
            Error::Store(crate::store::Error::RunNotFound(id)) => {
                Error::NotFound(format!("there is no run {id}"))
            }
            other => other,
        })?;
    if run.state.is_terminal() {
        return Err(Error::Conflict(format!(
            "run {run_id} is already finished ({})",
            run.state
        )));
    }
    Ok(run)
}

pub async fn cancel(
    _: CanWrite,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
) -> Result<(StatusCode, Json<Value>)> {
    request_cancel(&state, run_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run_id, "cancel_requested": true })),
    ))
}

/// Sets the run's cancel flag; a run nobody drives is handed to the serving loop, so that its
/// cancellation completes.
pub async fn request_cancel(state: &ApiState, run_id: i64) -> Result<()> {
    known_unfinished(state, run_id).await?;
    let engine = state.inner.engine.clone();
    let owner = engine.owner().to_string();
    let store = engine.store().clone();
    tokio::task::spawn_blocking(move || store.write(|txn| txn.request_cancel(run_id, &owner)))
        .await
        .map_err(|_| Error::Task)??;
    // Nobody driving it (an interrupted run): drive it here so that its cancellation completes.
    if state
        .inner
        .engine
        .resumable_runs()?
        .iter()
        .any(|r| r.id == run_id)
        && !state.inner.engine.is_driving(run_id)
    {
        state.send(ServeCommand::Drive(run_id))?;
    }
    Ok(())
}

pub async fn resume(
    _: CanWrite,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
) -> Result<(StatusCode, Json<Value>)> {
    let run = known_unfinished(&state, run_id).await?;
    let engine = &state.inner.engine;
    if engine.is_driving(run_id) {
        return Err(Error::Conflict(format!(
            "run {run_id} is being driven by this engine"
        )));
    }
    if !engine.resumable_runs()?.iter().any(|r| r.id == run_id) {
        return Err(Error::Conflict(format!(
            "run {run_id} is being driven by {} (lease held); it cannot be resumed here",
            run.lease_owner.as_deref().unwrap_or("another engine")
        )));
    }
    state.send(ServeCommand::Drive(run_id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run_id, "resumed": true })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The `name:` of a workflow `cairn serve` was given.
    pub workflow: String,
    /// A git repository on the server's machine; without it the steps run in an empty
    /// workspace.
    pub repo: Option<String>,
    /// A commit (any revision) of `repo`; default its HEAD.
    pub commit: Option<String>,
}

pub async fn start(
    _: CanWrite,
    State(state): State<ApiState>,
    Json(request): Json<StartRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let Some(workflow) = state.inner.workflows.get(&request.workflow).cloned() else {
        let known: Vec<&str> = state.inner.workflows.keys().map(String::as_str).collect();
        return Err(Error::Invalid(format!(
            "no workflow named `{}` is served here (served: {})",
            request.workflow,
            known.join(", ")
        )));
    };
    let context = match &request.repo {
        Some(repo) => commit_context(repo, request.commit.as_deref()).await?,
        None if request.commit.is_some() => {
            return Err(Error::Invalid("`commit` needs `repo`".into()));
        }
        None => json!({ "trigger": "api" }),
    };
    let engine = state.inner.engine.clone();
    let (run_id, _) = tokio::task::spawn_blocking(move || {
        engine.create_run(
            &workflow.definition,
            &workflow.file_name,
            workflow.source_path.clone(),
            context,
        )
    })
    .await
    .map_err(|_| Error::Task)??;
    state.send(ServeCommand::Drive(run_id))?;
    Ok((StatusCode::CREATED, Json(json!({ "run_id": run_id }))))
}

/// The trigger context of a run started through the API on `repo` at `commit`.
async fn commit_context(repo: &str, commit: Option<&str>) -> Result<Value> {
    let path = std::path::Path::new(repo);
    let path =
        std::fs::canonicalize(path).map_err(|e| Error::Invalid(format!("`repo` {repo}: {e}")))?;
    let revision = format!("{}^{{commit}}", commit.unwrap_or("HEAD"));
    let timeout = std::time::Duration::from_secs(30);
    let sha = crate::exec::git_async(&path, &["rev-parse", "--verify", &revision], timeout)
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "no commit `{}` in {}: {}",
                commit.unwrap_or("HEAD"),
                path.display(),
                e.trim()
            ))
        })?
        .trim()
        .to_string();
    let branch = crate::exec::git_async(
        &path,
        &["branch", "--points-at", &sha, "--format=%(refname:short)"],
        timeout,
    )
    .await
    .ok()
    .and_then(|out| out.lines().next().map(str::to_string));
    Ok(json!({
        "trigger": "api",
        "repo": path.display().to_string(),
        "commit": sha,
        "branch": branch,
    }))
}

/// The DAG's edges `{from, to}` (a dependency to its dependant) from the run's stored
/// definition; empty when it no longer parses (it did when the run started).
fn edges(state: &ApiState, definition: &str) -> Value {
    let names = state.inner.engine.agent_names();
    let options = crate::pipeline::LoadOptions {
        known_agents: &names,
        check_with: None,
    };
    let Ok(workflow) = crate::pipeline::load_str("run", definition, &options) else {
        return json!([]);
    };
    let edges: Vec<Value> = workflow
        .steps
        .iter()
        .flat_map(|step| {
            step.depends_on
                .iter()
                .map(move |from| json!({ "from": from, "to": step.id }))
        })
        .collect();
    Value::Array(edges)
}
