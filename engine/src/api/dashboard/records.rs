//! Deployments (each deploy's canary analysis plotted: latency and error rate, canary against
//! baseline, and the decision), costs over time (tokens by tier, cache savings), flaky tests
//! and the test agent's proposed tests (accepted or rejected, with the reason and the code).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde_json::Value;

use super::layout::{page, time};
use super::pages::viewer;
use crate::api::redact;
use crate::api::state::ApiState;

const CHART_W: f64 = 320.0;
const CHART_H: f64 = 120.0;

/// A small line chart of two series (canary, baseline) over the analysis rounds.
fn chart(label: &str, unit: &str, canary: &[f64], baseline: &[f64]) -> Markup {
    let top = canary
        .iter()
        .chain(baseline)
        .copied()
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let rounds = canary.len().max(baseline.len()).max(2) - 1;
    let points = |series: &[f64]| {
        let mut out = String::new();
        for (i, v) in series.iter().enumerate() {
            let x = 30.0 + (CHART_W - 40.0) * i as f64 / rounds as f64;
            let y = CHART_H - 20.0 - (CHART_H - 30.0) * v / top;
            let _ = write!(out, "{x:.1},{y:.1} ");
        }
        out
    };
    html! {
        figure.chart {
            svg width=(CHART_W) height=(CHART_H) viewBox={"0 0 " (CHART_W) " " (CHART_H)} role="img"
                aria-label={(label) ": canary against baseline over " (canary.len()) " rounds"} {
                line.axis x1="30" y1=(CHART_H - 20.0) x2=(CHART_W - 10.0) y2=(CHART_H - 20.0) {}
                text x="2" y="14" { (format!("{top:.3}")) " " (unit) }
                polyline.baseline points=(points(baseline)) {}
                polyline.canary points=(points(canary)) {}
            }
            figcaption { (label) ": " span.key-canary { "canary" } " vs " span.key-baseline { "baseline" } }
        }
    }
}

fn deploy_record(record: &Value) -> Markup {
    let verdicts = record["details"]["verdicts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let series = |side: &str, key: &str| -> Vec<f64> {
        verdicts
            .iter()
            .map(|v| v[side][key].as_f64().unwrap_or(0.0))
            .collect()
    };
    let outcome = record["outcome"].as_str().unwrap_or("");
    html! {
        article.deploy {
            h3 {
                (record["version"].as_str().unwrap_or("?")) " · " (record["strategy"].as_str().unwrap_or("?"))
                " · " span class={"badge state-" (outcome)} { (outcome) }
            }
            p.meta { (time(record["at_ms"].as_i64().unwrap_or(0))) " UTC · " (record["reason"].as_str().unwrap_or("")) }
            @if !verdicts.is_empty() {
                div.charts {
                    (chart("Latency p95", "ms", &series("canary", "latency_p95_ms"), &series("baseline", "latency_p95_ms")))
                    (chart("Error rate", "", &series("canary", "error_rate"), &series("baseline", "error_rate")))
                }
                p { "Decision per round: "
                    @for v in &verdicts { span class={"badge state-" (v["outcome"].as_str().unwrap_or(""))} { (v["outcome"].as_str().unwrap_or("?")) } " " }
                }
            }
        }
    }
}

pub async fn deployments(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let rows = match state.read(|store| store.deployments_updated()).await {
        Ok(rows) => rows,
        Err(error) => return error.into_response(),
    };
    let rows: Vec<(String, Value, i64)> = rows
        .into_iter()
        .map(|(service, mut service_state, updated)| {
            redact::fields(
                &mut service_state,
                &["reason", "details", "error", "message"],
            );
            (service, service_state, updated)
        })
        .collect();
    page("Deployments", viewer.csrf.as_deref(), html! {
        h1 { "Deployments" }
        @if rows.is_empty() { p { "Nothing has been deployed yet." } }
        @for (service, service_state, updated) in &rows {
            section.service aria-label={"Service " (service)} {
                h2 { (service) }
                p.meta {
                    "Active: " strong { (service_state["active"]["version"].as_str().unwrap_or("none")) }
                    @if let Some(v) = service_state["in_progress"]["version"].as_str() { " · deploying " (v) }
                    " · updated " (time(*updated)) " UTC"
                }
                @for record in service_state["history"].as_array().into_iter().flatten().rev() {
                    (deploy_record(record))
                }
            }
        }
    })
    .into_response()
}

pub async fn costs(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let rows = match state.read(|store| store.costs()).await {
        Ok(rows) => rows,
        Err(error) => return error.into_response(),
    };
    // Day → tier → (tokens, saved micros).
    let mut by_day: BTreeMap<String, BTreeMap<String, (u64, i64, i64)>> = BTreeMap::new();
    for row in &rows {
        let cell = by_day
            .entry(row.day.clone())
            .or_default()
            .entry(row.tier.clone())
            .or_default();
        cell.0 += row.tokens;
        cell.1 += row.cost_micros;
        cell.2 += row.saved_micros;
    }
    let top = by_day
        .values()
        .map(|tiers| tiers.values().map(|c| c.0).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    page("Costs", viewer.csrf.as_deref(), html! {
        h1 { "Costs" }
        @if rows.is_empty() { p { "No language-model calls recorded yet." } }
        @else {
            h2 { "Tokens by day and tier" }
            div.bars role="img" aria-label="Tokens per day, by tier" {
                @for (day, tiers) in &by_day {
                    div.bar-row {
                        span.bar-day { (day) }
                        @for (tier, cell) in tiers {
                            span class={"bar tier-" (tier)} style=(PreEscaped(format!("width:{:.1}%", 70.0 * cell.0 as f64 / top as f64))) title={(tier) ": " (cell.0) " tokens"} {}
                        }
                        span.bar-total { (tiers.values().map(|c| c.0).sum::<u64>()) " tokens" }
                    }
                }
            }
            div.scroll { table {
                thead { tr { th scope="col" { "Day" } th scope="col" { "Task" } th scope="col" { "Tier" } th scope="col" { "Calls" } th scope="col" { "Cache hits" } th scope="col" { "Tokens" } th scope="col" { "Cost" } th scope="col" { "Saved" } } }
                tbody { @for row in &rows { tr {
                    td { (row.day) } td { (row.task) } td { (row.tier) } td { (row.calls) } td { (row.cache_hits) }
                    td { (row.tokens) } td { (format!("{:.4}", row.cost_micros as f64 / 1e6)) } td { (format!("{:.4}", row.saved_micros as f64 / 1e6)) }
                } } }
            } }
        }
    })
    .into_response()
}

pub async fn flaky(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let rows = match state.read(|store| store.flaky_tests()).await {
        Ok(rows) => rows,
        Err(error) => return error.into_response(),
    };
    page("Flaky tests", viewer.csrf.as_deref(), html! {
        h1 { "Flaky tests" }
        @if rows.is_empty() { p { "No test has failed or flaked." } }
        @else { div.scroll { table {
            thead { tr { th scope="col" { "Repository" } th scope="col" { "Test" } th scope="col" { "Runs" } th scope="col" { "Failed" } th scope="col" { "Flaky" } th scope="col" { "Quarantine" } } }
            tbody { @for t in &rows { tr {
                td { (t.repo) } td { code { (t.test_id) } } td { (t.runs) } td { (t.failed) } td { (t.flaky) }
                td { @if let Some(since) = t.quarantined_since { "since " (time(since)) ": " (t.quarantine_reason.as_deref().unwrap_or("")) } @else { "–" } }
            } } }
        } } }
    })
    .into_response()
}

/// What the test agent proposed: tests for uncovered changed functions and fixes for failing
/// tests, what the gate decided and why, newest first, each with its code folded away.
pub async fn proposals(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&state, &headers).await {
        Ok(viewer) => viewer,
        Err(redirect) => return redirect,
    };
    let rows = match state.read(|store| store.test_proposals(None, 100)).await {
        Ok(rows) => rows,
        Err(error) => return error.into_response(),
    };
    page("Test proposals", viewer.csrf.as_deref(), html! {
        h1 { "Test proposals" }
        p.hint { "Tests the test agent wrote for changed functions no test covered, accepted only when they pass on the change and fail on its parent; and fixes it proposed for failing tests, accepted only when they apply, build, make the failing tests pass and break none." }
        @if rows.is_empty() { p { "No test or fix has been proposed yet." } }
        @else { div.scroll { table {
            thead { tr { th scope="col" { "Run" } th scope="col" { "Kind" } th scope="col" { "For" } th scope="col" { "Files" } th scope="col" { "Decision" } th scope="col" { "Why" } th scope="col" { "Code" } } }
            tbody { @for p in &rows { tr {
                td { a href={"/runs/" (p.run_id)} { "#" (p.run_id) } " " code { (p.commit_id.get(..8).unwrap_or(&p.commit_id)) } }
                @if p.kind == "fix" {
                    td { "fix" }
                    td { "failing " code { (p.function) } }
                    td { code { (if p.source_path.is_empty() { "–" } else { p.source_path.as_str() }) } }
                } @else {
                    td { "test" }
                    td { code { (p.source_path) ":" (p.function) } }
                    td { code { (p.test_path) } }
                }
                td { span class={"badge state-" (if p.status == "accepted" { "succeeded" } else { "failed" })} { (p.status) } }
                td { (p.reason.replace('_', " ")) @if !p.detail.is_empty() { ": " (redact::text(&p.detail)) } }
                td { details { summary { "show (" (p.tier) ")" } pre { code { (redact::text(&p.code)) } } } }
            } } }
        } } }
    })
    .into_response()
}
