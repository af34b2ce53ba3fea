//! `GET /metrics`: the engine's own figures in the Prometheus text format (version 0.0.4),
//! computed from the store at each scrape, so every process serving one home reports the same
//! numbers and nothing is lost on a restart.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::auth::CanRead;
use super::error::Result;
use super::state::ApiState;
use crate::store::MetricCounts;

/// Step (attempt) duration buckets, seconds.
const BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

pub async fn metrics(_: CanRead, State(state): State<ApiState>) -> Result<Response> {
    let (counts, deployments) = state
        .read(|store| Ok((store.metric_counts()?, store.deployments_updated()?)))
        .await?;
    let services: Vec<Value> = deployments.into_iter().map(|(_, s, _)| s).collect();
    let body = render(&counts, &services);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// Label values escaped as the text format asks (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text for these counts and the deploy agent's service states.
pub fn render(counts: &MetricCounts, services: &[Value]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "cairn_runs",
        "gauge",
        "Runs in the store by state.",
    );
    for (state, n) in &counts.runs_by_state {
        let _ = writeln!(out, "cairn_runs{{state=\"{}\"}} {n}", label(state));
    }
    family(
        &mut out,
        "cairn_steps",
        "gauge",
        "Steps in the store by state.",
    );
    for (state, n) in &counts.steps_by_state {
        let _ = writeln!(out, "cairn_steps{{state=\"{}\"}} {n}", label(state));
    }
    family(
        &mut out,
        "cairn_step_duration_seconds",
        "histogram",
        "Duration of finished step attempts.",
    );
    let mut cumulative = vec![0u64; BUCKETS.len()];
    let mut sum = 0.0;
    for &ms in &counts.attempt_durations_ms {
        let seconds = ms.max(0) as f64 / 1000.0;
        sum += seconds;
        for (slot, bound) in cumulative.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *slot += 1;
            }
        }
    }
    for (count, bound) in cumulative.iter().zip(BUCKETS) {
        let _ = writeln!(
            out,
            "cairn_step_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
        );
    }
    let total = counts.attempt_durations_ms.len();
    let _ = writeln!(
        out,
        "cairn_step_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(out, "cairn_step_duration_seconds_sum {sum}");
    let _ = writeln!(out, "cairn_step_duration_seconds_count {total}");
    family(
        &mut out,
        "cairn_queue_depth",
        "gauge",
        "Steps of unfinished runs waiting to start (pending or waiting to retry).",
    );
    let _ = writeln!(out, "cairn_queue_depth {}", counts.queue_depth);
    family(
        &mut out,
        "cairn_lease_reclaims_total",
        "counter",
        "Runs taken over from an engine whose lease had lapsed or that had died.",
    );
    let _ = writeln!(out, "cairn_lease_reclaims_total {}", counts.lease_reclaims);
    family(
        &mut out,
        "cairn_model_calls_total",
        "counter",
        "Language-model calls by the tier that answered.",
    );
    for (tier, calls, _, _, _) in &counts.model_calls {
        let _ = writeln!(
            out,
            "cairn_model_calls_total{{tier=\"{}\"}} {calls}",
            label(tier)
        );
    }
    family(
        &mut out,
        "cairn_model_tokens_total",
        "counter",
        "Language-model tokens by tier and kind.",
    );
    for (tier, _, prompt, completion, _) in &counts.model_calls {
        let tier = label(tier);
        let _ = writeln!(
            out,
            "cairn_model_tokens_total{{tier=\"{tier}\",kind=\"prompt\"}} {prompt}"
        );
        let _ = writeln!(
            out,
            "cairn_model_tokens_total{{tier=\"{tier}\",kind=\"completion\"}} {completion}"
        );
    }
    family(
        &mut out,
        "cairn_model_cache_hits_total",
        "counter",
        "Language-model calls answered from the cache.",
    );
    for (tier, _, _, _, hits) in &counts.model_calls {
        let _ = writeln!(
            out,
            "cairn_model_cache_hits_total{{tier=\"{}\"}} {hits}",
            label(tier)
        );
    }
    family(
        &mut out,
        "cairn_budget_refusals_total",
        "counter",
        "Model calls where a tier was refused by its token or cost budget.",
    );
    let _ = writeln!(
        out,
        "cairn_budget_refusals_total {}",
        counts.budget_refusals
    );
    // Deploys and rollbacks from every service's history, by strategy and outcome.
    let mut deploys: BTreeMap<(String, String), u64> = BTreeMap::new();
    for service in services {
        for record in service["history"].as_array().into_iter().flatten() {
            let strategy = record["strategy"].as_str().unwrap_or("unknown").to_string();
            let outcome = record["outcome"].as_str().unwrap_or("unknown").to_string();
            *deploys.entry((strategy, outcome)).or_default() += 1;
        }
    }
    family(
        &mut out,
        "cairn_deploys_total",
        "counter",
        "Deploys by strategy and outcome (deployed, rolled_back, recovered).",
    );
    for ((strategy, outcome), n) in &deploys {
        let _ = writeln!(
            out,
            "cairn_deploys_total{{strategy=\"{}\",outcome=\"{}\"}} {n}",
            label(strategy),
            label(outcome)
        );
    }
    family(
        &mut out,
        "cairn_rollbacks_total",
        "counter",
        "Deploys that were rolled back, by strategy.",
    );
    let mut rollbacks: BTreeMap<&str, u64> = BTreeMap::new();
    for ((strategy, outcome), n) in &deploys {
        if outcome != "deployed" {
            *rollbacks.entry(strategy).or_default() += n;
        }
    }
    for (strategy, n) in rollbacks {
        let _ = writeln!(
            out,
            "cairn_rollbacks_total{{strategy=\"{}\"}} {n}",
            label(strategy)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_deploys_are_counted() {
        let counts = MetricCounts {
            attempt_durations_ms: vec![50, 700, 2_000],
            runs_by_state: vec![("succeeded".into(), 2)],
            ..MetricCounts::default()
        };
        let services = vec![serde_json::json!({ "history": [
            { "strategy": "canary", "outcome": "deployed" },
            { "strategy": "canary", "outcome": "rolled_back" },
            { "strategy": "blue_green", "outcome": "deployed" }
        ]})];
        let text = render(&counts, &services);
        assert!(
            text.contains("cairn_step_duration_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_step_duration_seconds_bucket{le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_step_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_runs{state=\"succeeded\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("cairn_deploys_total{strategy=\"canary\",outcome=\"rolled_back\"} 1\n")
        );
        assert!(
            text.contains("cairn_rollbacks_total{strategy=\"canary\"} 1\n"),
            "{text}"
        );
    }
}
