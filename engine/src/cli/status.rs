//! `cairn status [RUN]` and `cairn runs`: what the store says, with interrupted runs called
//! what they are.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use cairn_engine::agents::deploy::ServiceState;
use cairn_engine::exec::{humanize, owner_alive};
use cairn_engine::store::{RunRecord, RunState, StepRecord, Store, now_ms};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct StatusArgs {
    pub run: Option<i64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RunsArgs {
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

/// A running run whose engine is gone is "interrupted", with the reason.
pub fn liveness(run: &RunRecord) -> Option<String> {
    if run.state != RunState::Running {
        return None;
    }
    match &run.lease_owner {
        None => Some("interrupted: no engine holds it; `cairn resume` continues it".into()),
        Some(owner) if !owner_alive(owner) => Some(format!(
            "interrupted: its engine ({owner}) is gone; `cairn resume` continues it"
        )),
        Some(owner) if run.lease_expires_at.unwrap_or(0) < now_ms() => Some(format!(
            "interrupted: the lease of {owner} expired; `cairn resume` continues it"
        )),
        Some(_) => None,
    }
}

fn shown_state(run: &RunRecord) -> String {
    if liveness(run).is_some() {
        "interrupted".into()
    } else {
        run.state.to_string()
    }
}

fn duration(start: i64, end: Option<i64>) -> String {
    let end = end.unwrap_or_else(now_ms);
    humanize(std::time::Duration::from_millis((end - start).max(0) as u64))
}

pub fn status(home: Option<PathBuf>, args: &StatusArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    match args.run {
        Some(run_id) => show_run(&store, run_id, args.json),
        None if args.json => {
            // What waits for a person or a window, as the text view lists it.
            let states = cairn_engine::agents::deploy::service_states(&store)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let waiting: Vec<_> = states
                .iter()
                .flat_map(|(service, state)| {
                    state.waiting.iter().map(
                        move |w| json!({ "service": service, "run": run_of(&w.key), "waiting": w }),
                    )
                })
                .collect();
            let held: Vec<_> = states
                .iter()
                .filter_map(|(service, state)| {
                    let held = state.held.as_ref()?;
                    Some(json!({ "service": service, "run": run_of(&held.key), "held": held }))
                })
                .collect();
            let document = json!({
                "runs": run_rows(&store.runs(10)?),
                "repositories": store.repositories()?,
                "deploys_waiting_for_a_window": waiting,
                "canaries_waiting_for_a_person": held,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
        None => {
            runs(&store, 10, false)?;
            held(&store)?;
            repositories(&store)
        }
    }
}

pub fn list(home: Option<PathBuf>, args: &RunsArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    runs(&store, args.limit, args.json)
}

fn runs(store: &Store, limit: usize, as_json: bool) -> Result<()> {
    let runs = store.runs(limit)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&run_rows(&runs))?);
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs yet");
        return Ok(());
    }
    println!(
        "{:>5}  {:<20} {:<12} {:>8}  {:<7} {:<16} COMMIT",
        "RUN", "WORKFLOW", "STATE", "TIME", "RISK", "BRANCH"
    );
    for run in &runs {
        let text = |key: &str| {
            run.context
                .get(key)
                .and_then(|c| c.as_str())
                .unwrap_or("-")
                .to_owned()
        };
        let commit = text("commit");
        println!(
            "{:>5}  {:<20} {:<12} {:>8}  {:<7} {:<16} {}",
            run.id,
            run.workflow,
            shown_state(run),
            duration(run.created_at, run.finished_at),
            run_risk(store, run.id).unwrap_or_else(|| "-".to_owned()),
            text("branch"),
            commit.get(..12).unwrap_or(&commit)
        );
    }
    Ok(())
}

/// The risk level the run's orchestrator decided (the first step output named `risk`).
fn run_risk(store: &Store, run_id: i64) -> Option<String> {
    store.steps(run_id).ok()?.iter().find_map(|step| {
        step.outputs
            .as_ref()?
            .get("risk")?
            .as_str()
            .map(str::to_owned)
    })
}

/// Why each step that did not run was skipped or cancelled, from its event.
pub fn step_reasons(store: &Store, run_id: i64) -> Result<HashMap<String, String>> {
    let mut reasons = HashMap::new();
    for event in store.events(run_id)? {
        if !matches!(event.kind.as_str(), "step_skipped" | "step_cancelled") {
            continue;
        }
        if let (Some(step), Some(reason)) = (
            &event.step_id,
            event.data.get("reason").and_then(|r| r.as_str()),
        ) {
            reasons.insert(step.clone(), reason.to_owned());
        }
    }
    Ok(reasons)
}

fn run_rows(runs: &[RunRecord]) -> Vec<serde_json::Value> {
    runs.iter()
        .map(|r| {
            let mut value = serde_json::to_value(r).unwrap_or_default();
            value["shown_state"] = json!(shown_state(r));
            value
        })
        .collect()
}

fn show_run(store: &Store, run_id: i64, as_json: bool) -> Result<()> {
    let run = store.run(run_id)?;
    let steps = store.steps(run_id)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "run": run,
                "shown_state": shown_state(&run),
                "interrupted": liveness(&run),
                "steps": steps,
            }))?
        );
        return Ok(());
    }
    println!("run {} · {} · {}", run.id, run.workflow, shown_state(&run));
    if let Some(reason) = liveness(&run).or(run.reason.clone()) {
        println!("  {reason}");
    }
    if let Some(commit) = run.context.get("commit").and_then(|c| c.as_str()) {
        // `serve` runs from a mirror; the person watches the repository it mirrors.
        let repo = ["repo_url", "repo"]
            .iter()
            .find_map(|key| run.context.get(*key).and_then(|c| c.as_str()))
            .unwrap_or("?");
        let branch = run
            .context
            .get("branch")
            .and_then(|c| c.as_str())
            .map(|branch| format!(" (branch {branch})"))
            .unwrap_or_default();
        println!("  commit {commit} in {repo}{branch}");
    }
    println!(
        "  definition sha256 {}",
        run.definition_sha256
            .get(..16)
            .unwrap_or(&run.definition_sha256)
    );
    let reasons = step_reasons(store, run_id)?;
    for step in &steps {
        println!("  {}", step_line(step, reasons.get(&step.step_id)));
    }
    Ok(())
}

fn step_line(step: &StepRecord, reason: Option<&String>) -> String {
    let took = step
        .started_at
        .map(|s| duration(s, step.finished_at))
        .unwrap_or_default();
    let attempts = if step.attempts > 1 {
        format!(" ({} attempts)", step.attempts)
    } else {
        String::new()
    };
    let error = step
        .error
        .as_deref()
        .or(reason.map(String::as_str))
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!(
        "{:<20} {:<14} {:>8}{attempts}{error}",
        step.step_id,
        step.state.as_str(),
        took
    )
}

/// The run of a deploy's idempotency key (`run_id/step_id`).
fn run_of(key: &str) -> Option<i64> {
    key.split('/').next().and_then(|run| run.parse().ok())
}

/// Deploys waiting for a window, and canaries waiting for a person (`inconclusive: hold`), with
/// the commands that answer them.
fn held(store: &Store) -> Result<()> {
    let states =
        cairn_engine::agents::deploy::service_states(store).map_err(|e| anyhow::anyhow!("{e}"))?;
    waiting(&states);
    let mut first = true;
    for (service, state) in &states {
        let Some(held) = &state.held else { continue };
        if first {
            println!();
            println!("waiting for a person:");
            first = false;
        }
        let run = held.key.split('/').next().unwrap_or("?");
        println!(
            "  {service} {} canary held at {}% for {}: {} — `cairn promote {run}` or `cairn rollback {run}`",
            held.version,
            held.share,
            duration(held.since_ms, None),
            held.reason
        );
    }
    Ok(())
}

/// Deploys waiting for their window or the end of a freeze.
fn waiting(states: &[(String, ServiceState)]) {
    let mut first = true;
    for (service, state) in states {
        for wait in &state.waiting {
            if first {
                println!();
                println!("deploys waiting for a window:");
                first = false;
            }
            let run = wait.key.split('/').next().unwrap_or("?");
            let opens = wait
                .opens_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or("not within two weeks".to_string(), |at| {
                    at.format("%Y-%m-%d %H:%M UTC").to_string()
                });
            let approved = wait
                .approved
                .as_ref()
                .map(|why| format!(" (approved: {why}; its step goes at its next look)"))
                .unwrap_or_default();
            println!(
                "  {service} {} (run {run}, {} risk) waiting {}: {}; opens {opens}{approved} — `cairn approve {run}`",
                wait.version,
                wait.risk,
                duration(wait.since_ms, None),
                wait.reason
            );
        }
    }
}

fn repositories(store: &Store) -> Result<()> {
    let repositories = store.repositories()?;
    if repositories.is_empty() {
        return Ok(());
    }
    println!();
    println!("{:<50} {:<12} DETAIL", "REPOSITORY", "POLL");
    for repo in &repositories {
        let (state, detail) = match &repo.last_error {
            Some(error) => (format!("failing ×{}", repo.failures), error.clone()),
            None => ("ok".to_string(), repo.last_note.clone().unwrap_or_default()),
        };
        println!("{:<50} {:<12} {}", repo.url, state, detail);
    }
    Ok(())
}
