//! Step logs: a page as JSON, the whole log as plain text, and live over Server-Sent Events.
//! The stream reads the store (lines are stored every 100 ms by the engine that drives the
//! run, whichever process that is), sends each line once with its `seq` as the event id (a
//! client reconnecting with `Last-Event-ID` goes on from there), and ends with an `end` event
//! once the run has finished and every line was sent. Every line is redacted.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::CanRead;
use super::error::{Error, Result};
use super::redact;
use super::state::ApiState;
use crate::store::StoredLogLine;

/// Lines per read: bounds memory per request whatever the log's size.
const PAGE: usize = 1000;
/// How often a live stream looks for new lines.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    pub step: Option<String>,
    #[serde(default)]
    pub after: i64,
    pub limit: Option<usize>,
}

fn line_json(line: &StoredLogLine) -> Value {
    json!({
        "seq": line.seq,
        "step_id": line.step_id,
        "attempt": line.attempt,
        "stream": line.stream,
        "line": redact::text(&line.line),
        "at": line.at,
    })
}

async fn exists(state: &ApiState, run_id: i64) -> Result<()> {
    state
        .read(move |store| store.run(run_id))
        .await
        .map(|_| ())
        .map_err(|error| match error {
            Error::Store(crate::store::Error::RunNotFound(id)) => {
                Error::NotFound(format!("there is no run {id}"))
            }
            other => other,
        })
}

pub async fn page(
    _: CanRead,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> Result<Json<Value>> {
    exists(&state, run_id).await?;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, PAGE);
    let after = query.after;
    let lines = state
        .read(move |store| store.logs_page(run_id, query.step.as_deref(), after, limit))
        .await?;
    let next = lines.last().map_or(after, |l| l.seq);
    let lines: Vec<Value> = lines.iter().map(line_json).collect();
    Ok(Json(json!({ "lines": lines, "next": next })))
}

/// The whole log as text, one `step | line` per line, read page by page.
pub async fn text(
    _: CanRead,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> Result<Response> {
    exists(&state, run_id).await?;
    let mut out = String::new();
    let mut after = query.after;
    loop {
        let step = query.step.clone();
        let lines = state
            .read(move |store| store.logs_page(run_id, step.as_deref(), after, PAGE))
            .await?;
        for line in &lines {
            out.push_str(&format!(
                "{} | {}\n",
                line.step_id,
                redact::text(&line.line)
            ));
        }
        match lines.last() {
            Some(last) if lines.len() == PAGE => after = last.seq,
            _ => break,
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

struct Follow {
    state: ApiState,
    run_id: i64,
    step: Option<String>,
    after: i64,
    finished: bool,
}

pub async fn live(
    _: CanRead,
    State(state): State<ApiState>,
    Path(run_id): Path<i64>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    exists(&state, run_id).await?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let follow = Follow {
        state,
        run_id,
        step: query.step,
        after: resumed.unwrap_or(query.after),
        finished: false,
    };
    let events = stream::unfold(follow, next_events).flat_map(stream::iter);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The next batch of events: new lines, or the `end` event once the run is over and drained.
async fn next_events(
    mut follow: Follow,
) -> Option<(Vec<std::result::Result<Event, Infallible>>, Follow)> {
    if follow.finished {
        return None;
    }
    loop {
        // Read the run's state before its lines: lines stored before it finished are then
        // all visible to the read that follows.
        let run_id = follow.run_id;
        let done = match follow.state.read(move |store| store.run(run_id)).await {
            Ok(run) => run.state.is_terminal().then(|| run.state.as_str()),
            // Deleted by retention meanwhile: nothing more will come.
            Err(_) => Some("gone"),
        };
        let (step, after) = (follow.step.clone(), follow.after);
        let lines = follow
            .state
            .read(move |store| store.logs_page(run_id, step.as_deref(), after, PAGE))
            .await
            .unwrap_or_default();
        if let Some(last) = lines.last() {
            follow.after = last.seq;
            let events = lines
                .iter()
                .map(|line| {
                    Ok(Event::default()
                        .event("log")
                        .id(line.seq.to_string())
                        .data(line_json(line).to_string()))
                })
                .collect();
            return Some((events, follow));
        }
        if let Some(state) = done {
            follow.finished = true;
            let end = Event::default()
                .event("end")
                .data(json!({ "state": state }).to_string());
            return Some((vec![Ok(end)], follow));
        }
        tokio::time::sleep(POLL).await;
    }
}
