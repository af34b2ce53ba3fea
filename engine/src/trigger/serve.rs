//! `cairn serve`: resume interrupted runs, then poll watched repositories on each workflow's
//! cron schedule and drive the runs new commits start.
//!
//! Every [`ADOPT_EVERY`] it also looks for runs another engine left: one whose engine died on
//! this host, or whose lease expired (an engine on another host sharing the store died or was
//! cut off). It claims and drives them like the runs it resumed at start; the claim raises the
//! run's epoch, so an engine that was only stalled fences itself out when it comes back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Local;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::poller::{Poller, Watch};
use crate::exec::{Engine, Observer};
use crate::retention::Retention;
use crate::store::RunState;

/// How often `serve` looks for runs another engine left behind.
pub const ADOPT_EVERY: Duration = Duration::from_secs(10);

pub struct ServeOptions {
    /// Where polled repositories are mirrored.
    pub mirrors: PathBuf,
    /// Most runs driven at once.
    pub max_runs: usize,
    /// Poll every repository once now, drive the runs to the end, and return.
    pub once: bool,
    /// Run directories and the retention applied to them and the database once an hour.
    pub retention: Option<(PathBuf, Retention)>,
    /// Requests from the HTTP service (`cairn serve --listen`); with them, `serve` keeps going
    /// even when no workflow has a schedule.
    pub commands: Option<mpsc::UnboundedReceiver<ServeCommand>>,
}

/// What the HTTP service asks of the serving loop. Runs are driven and repositories polled
/// only here, so a webhook's poll and a cron tick never race inside one process, and runs are
/// still created only through the durable cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeCommand {
    /// Drive a run this engine is not driving: one the API started, or resumes.
    Drive(i64),
    /// Poll one repository now (a webhook said it changed).
    Poll(String),
}

async fn next_command(
    commands: &mut Option<mpsc::UnboundedReceiver<ServeCommand>>,
) -> Option<ServeCommand> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

/// What `serve` did, returned when it stops (only with `once`).
#[derive(Debug, Default)]
pub struct ServeReport {
    pub resumed: Vec<i64>,
    pub started: Vec<i64>,
    pub failed_repositories: Vec<(String, String)>,
    pub states: Vec<(i64, RunState)>,
}

pub async fn serve(
    engine: Arc<Engine>,
    watches: Vec<Watch>,
    mut options: ServeOptions,
    observer: Option<Observer>,
) -> ServeReport {
    let mut report = ServeReport::default();
    // Runs handed to a task of `runs` and not finished yet.
    let mut driving: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let limit = Arc::new(Semaphore::new(options.max_runs.max(1)));
    let mut runs: JoinSet<(i64, RunState)> = JoinSet::new();
    // Runs of the same workflow and branch go one after another, in commit order, so an older
    // commit can never deploy after a newer one; different branches run side by side.
    let mut previous_on_branch: HashMap<String, watch::Receiver<bool>> = HashMap::new();
    let mut spawn = |runs: &mut JoinSet<(i64, RunState)>, run_id: i64| {
        let engine = engine.clone();
        let limit = limit.clone();
        let observer = observer.clone();
        let (done, done_receiver) = watch::channel(false);
        let key = engine.store().run(run_id).ok().and_then(|run| {
            let context = &run.context;
            let url = context.get("repo_url").and_then(|v| v.as_str())?;
            let branch = context.get("branch").and_then(|v| v.as_str())?;
            Some(format!("{}\0{url}\0{branch}", run.workflow))
        });
        let before = key.and_then(|key| previous_on_branch.insert(key, done_receiver));
        runs.spawn(async move {
            if let Some(mut before) = before {
                // An error means the earlier run's task is gone: it finished one way or another.
                let _ = before.wait_for(|finished| *finished).await;
            }
            let permit = limit.acquire_owned().await;
            let state = match engine.drive(run_id, observer).await {
                Ok(state) => state,
                Err(error) => {
                    tracing::error!(run_id, "failed to drive run: {error}");
                    RunState::Failed
                }
            };
            drop(permit);
            let _ = done.send(true);
            (run_id, state)
        });
    };

    match engine.resumable_runs() {
        Ok(interrupted) => {
            for run in interrupted {
                tracing::info!(
                    run_id = run.id,
                    workflow = run.workflow,
                    "resuming interrupted run"
                );
                report.resumed.push(run.id);
                driving.insert(run.id);
                spawn(&mut runs, run.id);
            }
        }
        Err(error) => tracing::error!("failed to list interrupted runs: {error}"),
    }

    let poller = Poller::new(&engine, options.mirrors.clone());
    if options.once {
        let all: Vec<&Watch> = watches.iter().collect();
        let tick = poller.tick(&all, false).await;
        report.failed_repositories = tick.failed;
        for run_id in tick.runs {
            report.started.push(run_id);
            spawn(&mut runs, run_id);
        }
        while let Some(done) = runs.join_next().await {
            if let Ok(state) = done {
                report.states.push(state);
            }
        }
        return report;
    }

    // The first tick fires at once; opening the store has just run `quick_check`, so skip it.
    let mut integrity = tokio::time::interval_at(
        tokio::time::Instant::now() + super::upkeep::INTEGRITY_EVERY,
        super::upkeep::INTEGRITY_EVERY,
    );
    let mut gc = tokio::time::interval(super::upkeep::GC_EVERY);
    let mut adopt =
        tokio::time::interval_at(tokio::time::Instant::now() + ADOPT_EVERY, ADOPT_EVERY);
    let mut commands = options.commands.take();
    loop {
        let now = Local::now();
        let next: Vec<Option<chrono::DateTime<Local>>> = watches
            .iter()
            .map(|w| {
                w.schedule
                    .as_ref()
                    .and_then(|cron| cron.find_next_occurrence(&now, false).ok())
            })
            .collect();
        let earliest = next.iter().flatten().min().copied();
        if earliest.is_none() && commands.is_none() {
            tracing::warn!("no workflow has a schedule; only resumed runs are driven");
            while runs.join_next().await.is_some() {}
            return report;
        }
        // Without a schedule only the HTTP service's requests wake the loop.
        let wait = earliest.map_or(Duration::from_secs(24 * 3600), |earliest| {
            tracing::info!(at = %earliest.format("%H:%M:%S"), "next poll");
            (earliest - now).to_std().unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if earliest.is_none() {
                    continue;
                }
            }
            Some(command) = next_command(&mut commands) => {
                match command {
                    // Twice driven by one engine would have it fence itself out.
                    ServeCommand::Drive(run_id) => {
                        if driving.insert(run_id) {
                            spawn(&mut runs, run_id);
                        }
                    }
                    ServeCommand::Poll(url) => {
                        let due: Vec<&Watch> = watches
                            .iter()
                            .filter(|w| w.trigger.repositories.iter().any(|r| r.url == url))
                            .collect();
                        let tick = poller.tick(&due, false).await;
                        tracing::info!(repository = url, runs = tick.runs.len(), "polled on request");
                        for run_id in tick.runs {
                            driving.insert(run_id);
                            spawn(&mut runs, run_id);
                        }
                    }
                }
                continue;
            }
            Some(done) = runs.join_next(), if !runs.is_empty() => {
                if let Ok((run_id, _)) = done {
                    driving.remove(&run_id);
                }
                continue;
            }
            _ = gc.tick() => {
                if let Some((work_dir, retention)) = &options.retention {
                    super::upkeep::collect_garbage(&engine, work_dir.clone(), *retention).await;
                }
                continue;
            }
            _ = adopt.tick() => {
                // A store read (over the network, patient through a PostgreSQL restart) runs
                // on a blocking thread, not on the loop's.
                let looking = engine.clone();
                let left = tokio::task::spawn_blocking(move || looking.resumable_runs()).await;
                match left.map_err(|error| error.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                    Ok(left) => {
                        for run in left {
                            if driving.insert(run.id) {
                                tracing::info!(
                                    run_id = run.id,
                                    previous = run.lease_owner.as_deref().unwrap_or("none"),
                                    "adopting a run another engine left"
                                );
                                spawn(&mut runs, run.id);
                            }
                        }
                    }
                    Err(error) => tracing::warn!("failed to look for runs left behind: {error}"),
                }
                continue;
            }
            _ = integrity.tick() => {
                super::upkeep::check_integrity(&engine).await;
                continue;
            }
        }
        let due: Vec<&Watch> = watches
            .iter()
            .zip(&next)
            .filter(|(_, at)| **at == earliest)
            .map(|(w, _)| w)
            .collect();
        let tick = poller.tick(&due, true).await;
        for run_id in tick.runs {
            driving.insert(run_id);
            spawn(&mut runs, run_id);
        }
    }
}
