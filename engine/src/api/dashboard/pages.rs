//! The runs list (risk and route at a glance) and one run: its DAG, step states and logs live,
//! risk reasons, model calls, and a cancel form.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{badge, page, route_text, short, time};
use super::session::{Csrf, csrf_for, csrf_matches, session_scope, session_token};
use crate::api::auth::Scope;
use crate::api::error::Error;
use crate::api::runs::ListQuery;
use crate::api::state::ApiState;
use crate::store::{RunFilter, RunState};

/// Who is looking: signed in (with the CSRF token of the session and the scope), or reading
/// publicly.
pub struct Viewer {
    pub csrf: Option<String>,
    pub scope: Option<Scope>,
}

/// The viewer, or a redirect to the sign-in page.
pub async fn viewer(state: &ApiState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let scope = session_scope(state, headers)
        .await
        .map_err(IntoResponse::into_response)?;
    if scope.is_none() && !state.inner.options.public_read {
        return Err(Redirect::to("/login").into_response());
    }
    Ok(Viewer {
        csrf: scope
            .and(session_token(headers))
            .map(|token| csrf_for(&token)),
        scope,
    })
}

pub async fn runs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let filter = RunFilter {
        workflow: query.workflow.filter(|s| !s.is_empty()),
        repository: query.repository.filter(|s| !s.is_empty()),
        branch: query.branch.filter(|s| !s.is_empty()),
        state: query.state.filter(|s| s.parse::<RunState>().is_ok()),
        risk: query.risk.filter(|s| !s.is_empty()),
        limit: query.limit.unwrap_or(100).clamp(1, 500),
        before: query.before,
    };
    let runs = match state.read(move |store| store.filtered_runs(&filter)).await {
        Ok(runs) => runs,
        Err(error) => return error.into_response(),
    };
    page(
        "Runs",
        viewer.csrf.as_deref(),
        html! {
            h1 { "Runs" }
            @if runs.is_empty() {
                p { "No runs yet." }
            } @else {
                div.scroll {
                table.runs {
                    thead { tr {
                        th scope="col" { "Run" } th scope="col" { "Workflow" }
                        th scope="col" { "Branch" } th scope="col" { "Commit" }
                        th scope="col" { "State" } th scope="col" { "Risk" }
                        th scope="col" { "Route" } th scope="col" { "Started (UTC)" }
                    } }
                    tbody {
                        @for summary in &runs {
                            @let run = &summary.run;
                            tr {
                                td { a href={"/runs/" (run.id)} { "#" (run.id) } }
                                td { (run.workflow) }
                                td { (run.context["branch"].as_str().unwrap_or("–")) }
                                td { code { (short(run.context["commit"].as_str().unwrap_or("–"))) } }
                                td { (badge(run.state.as_str())) }
                                td { @if let Some(r) = &summary.risk { span class={"risk risk-" (r)} { (r) } } @else { "–" } }
                                td { (summary.route.as_ref().map_or_else(|| "–".to_string(), route_text)) }
                                td { (time(run.created_at)) }
                            }
                        }
                    }
                }
                }
            }
        },
    )
    .into_response()
}

pub async fn run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let detail = match crate::api::runs::detail(&state, run_id).await {
        Ok(detail) => detail,
        Err(error) => return error.into_response(),
    };
    let steps: Vec<(String, String)> = detail["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step_id"].as_str().unwrap_or("").to_string(),
                s["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let edges: Vec<(String, String)> = detail["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").to_string(),
                e["to"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let run = &detail["run"];
    let state_text = run["state"].as_str().unwrap_or("");
    let title = format!("Run #{run_id}");
    page(&title, viewer.csrf.as_deref(), html! {
        h1 { (title) " · " (run["workflow"].as_str().unwrap_or("")) " " span id="run-state" { (badge(state_text)) } }
        p.meta {
            "Branch " strong { (run["context"]["branch"].as_str().unwrap_or("–")) }
            " · commit " code { (short(run["context"]["commit"].as_str().unwrap_or("–"))) }
            " · started " (time(run["created_at"].as_i64().unwrap_or(0))) " UTC"
        }
        @if let Some(reason) = run["reason"].as_str() { p.problem { (reason) } }
        (analysis(&detail))
        section aria-labelledby="dag-title" {
            h2 id="dag-title" { "Steps" }
            div.scroll { (super::dag::svg(&steps, &edges)) }
            table.steps {
                thead { tr { th scope="col" { "Step" } th scope="col" { "State" } th scope="col" { "Attempts" } th scope="col" { "Error" } } }
                tbody {
                    @for step in detail["steps"].as_array().into_iter().flatten() {
                        @let id = step["step_id"].as_str().unwrap_or("");
                        tr data-step=(id) {
                            td { (id) }
                            td.step-state { (badge(step["state"].as_str().unwrap_or(""))) }
                            td { (step["attempts"].as_u64().unwrap_or(0)) }
                            td { (step["error"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if state_text == "running" && viewer.scope == Some(Scope::Write) {
            @if let Some(csrf) = &viewer.csrf {
                form method="post" action={"/runs/" (run_id) "/cancel"} {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Cancel run" }
                }
            }
        }
        (model_calls(&detail))
        section aria-labelledby="logs-title" {
            h2 id="logs-title" { "Logs" }
            pre id="logs" data-run=(run_id) aria-live="polite" tabindex="0" {}
            p id="logs-status" { "Connecting…" }
        }
        script src="/static/run.js" {}
    })
    .into_response()
}

fn analysis(detail: &Value) -> Markup {
    let reasons: Vec<String> = detail["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| match r {
            Value::String(s) => s.clone(),
            other => other["message"]
                .as_str()
                .or_else(|| other["reason"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string()),
        })
        .collect();
    html! {
        @if let Some(risk) = detail["risk"].as_str() {
            section.analysis aria-labelledby="risk-title" {
                h2 id="risk-title" { "Risk " span class={"risk risk-" (risk)} { (risk) }
                    @if !detail["route"].is_null() { " · route " strong { (route_text(&detail["route"])) } } }
                @if let Some(summary) = detail["summary"].as_str() { p { (summary) } }
                @if !reasons.is_empty() {
                    ul { @for reason in &reasons { li { (reason) } } }
                }
            }
        }
    }
}

fn model_calls(detail: &Value) -> Markup {
    let calls = detail["model_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    html! {
        @if !calls.is_empty() {
            section aria-labelledby="calls-title" {
                h2 id="calls-title" { "Model calls" }
                div.scroll { table {
                    thead { tr { th scope="col" { "Step" } th scope="col" { "Task" } th scope="col" { "Tier" } th scope="col" { "Tokens" } th scope="col" { "Cache" } th scope="col" { "Latency" } } }
                    tbody { @for call in &calls { tr {
                        td { (call["step_id"].as_str().unwrap_or("")) }
                        td { (call["task"].as_str().unwrap_or("")) }
                        td { (call["tier"].as_str().unwrap_or("")) }
                        td { (call["prompt_tokens"].as_u64().unwrap_or(0) + call["completion_tokens"].as_u64().unwrap_or(0)) }
                        td { @if call["cache_hit"].as_bool() == Some(true) { "hit" } @else { "–" } }
                        td { (call["latency_ms"].as_i64().unwrap_or(0)) " ms" }
                    } } }
                } }
            }
        }
    }
}

pub async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
    Form(form): Form<Csrf>,
) -> Response {
    if !csrf_matches(&headers, &form.csrf) {
        return Error::BadCsrf.into_response();
    }
    match session_scope(&state, &headers).await {
        Ok(Some(Scope::Write)) => {}
        Ok(Some(Scope::Read)) => return Error::NeedsWrite.into_response(),
        Ok(None) => return Error::NoToken.into_response(),
        Err(error) => return error.into_response(),
    }
    if let Err(error) = crate::api::runs::request_cancel(&state, run_id).await {
        return error.into_response();
    }
    Redirect::to(&format!("/runs/{run_id}")).into_response()
}
