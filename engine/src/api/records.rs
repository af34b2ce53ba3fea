//! `/api/v1/costs`, `/api/v1/deployments`, `/api/v1/flaky-tests`, `/api/v1/test-proposals`:
//! what the agents remember, as the store holds it, redacted.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::CanRead;
use super::error::Result;
use super::redact;
use super::state::ApiState;

/// Model spending by day, task and tier, with cache savings, newest day first.
pub async fn costs(_: CanRead, State(state): State<ApiState>) -> Result<Json<Value>> {
    let rows = state.read(|store| store.costs()).await?;
    Ok(Json(json!({ "costs": rows })))
}

/// Every service's deployment: what is active, what is in progress, and its history of
/// deploys and rollbacks with their strategy, outcome, reason and canary analysis.
pub async fn deployments(_: CanRead, State(state): State<ApiState>) -> Result<Json<Value>> {
    let rows = state.read(|store| store.deployments_updated()).await?;
    let mut services: Vec<Value> = rows
        .into_iter()
        .map(|(service, state, updated_at)| {
            json!({ "service": service, "updated_at": updated_at, "state": state })
        })
        .collect();
    services
        .iter_mut()
        .for_each(|s| redact::fields(s, &["reason", "details", "error", "message"]));
    Ok(Json(json!({ "deployments": services })))
}

pub async fn flaky_tests(_: CanRead, State(state): State<ApiState>) -> Result<Json<Value>> {
    let rows = state.read(|store| store.flaky_tests()).await?;
    Ok(Json(json!({ "flaky_tests": rows })))
}

#[derive(Debug, Deserialize)]
pub struct ProposalQuery {
    pub repo: Option<String>,
    pub limit: Option<usize>,
}

pub async fn test_proposals(
    _: CanRead,
    State(state): State<ApiState>,
    Query(query): Query<ProposalQuery>,
) -> Result<Json<Value>> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = state
        .read(move |store| store.test_proposals(query.repo.as_deref(), limit))
        .await?;
    let mut rows = serde_json::to_value(rows).unwrap_or_default();
    redact::value(&mut rows);
    Ok(Json(json!({ "test_proposals": rows })))
}
