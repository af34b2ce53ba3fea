//! `cairn serve`: resume interrupted runs, then poll watched repositories on each workflow's
//! cron schedule and drive the runs new commits start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Local;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::poller::{Poller, Watch};
use crate::exec::{Engine, Observer};
use crate::store::RunState;

pub struct ServeOptions {
    /// Where polled repositories are mirrored.
    pub mirrors: PathBuf,
    /// Most runs driven at once.
    pub max_runs: usize,
    /// Poll every repository once now, drive the runs to the end, and return.
    pub once: bool,
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
    options: ServeOptions,
    observer: Option<Observer>,
) -> ServeReport {
    let mut report = ServeReport::default();
    let limit = Arc::new(Semaphore::new(options.max_runs.max(1)));
    let admission = Arc::new(Admission::default());
    let mut tickets = 0u64;
    let mut runs: JoinSet<(i64, RunState)> = JoinSet::new();
    let mut spawn = |runs: &mut JoinSet<(i64, RunState)>, run_id: i64| {
        let engine = engine.clone();
        let limit = limit.clone();
        let admission = admission.clone();
        let ticket = tickets;
        tickets += 1;
        let observer = observer.clone();
        runs.spawn(async move {
            let _permit = admission.admit(ticket, limit).await;
            match engine.drive(run_id, observer).await {
                Ok(state) => (run_id, state),
                Err(error) => {
                    tracing::error!(run_id, "failed to drive run: {error}");
                    (run_id, RunState::Failed)
                }
            }
        });
    };

    match engine.resumable_runs() {
        Ok(interrupted) => {
            for run in interrupted {
                tracing::info!(run_id = run.id, workflow = run.workflow, "resuming interrupted run");
                report.resumed.push(run.id);
                spawn(&mut runs, run.id);
            }
        }
        Err(error) => tracing::error!("failed to list interrupted runs: {error}"),
    }

    let poller = Poller::new(&engine, options.mirrors.clone());
    if options.once {
        let all: Vec<&Watch> = watches.iter().collect();
        let tick = poller.tick(&all).await;
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

    loop {
        let now = Local::now();
        let next: Vec<Option<chrono::DateTime<Local>>> = watches
            .iter()
            .map(|w| w.schedule.as_ref().and_then(|cron| cron.find_next_occurrence(&now, false).ok()))
            .collect();
        let Some(earliest) = next.iter().flatten().min().copied() else {
            tracing::warn!("no workflow has a schedule; only resumed runs are driven");
            while runs.join_next().await.is_some() {}
            return report;
        };
        let wait = (earliest - now).to_std().unwrap_or(Duration::ZERO);
        tracing::info!(at = %earliest.format("%H:%M:%S"), "next poll");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            Some(_) = runs.join_next(), if !runs.is_empty() => continue,
        }
        let due: Vec<&Watch> = watches
            .iter()
            .zip(&next)
            .filter(|(_, at)| **at == Some(earliest))
            .map(|(w, _)| w)
            .collect();
        let tick = poller.tick(&due).await;
        for run_id in tick.runs {
            spawn(&mut runs, run_id);
        }
    }
}

/// Hands out run slots in the order runs were spawned (resumed runs, then new commits oldest
/// first), which the semaphore alone does not: spawned tasks reach it in whatever order the
/// runtime first polls them, so with `--max-runs 1` a branch's commits could run out of order.
#[derive(Default)]
struct Admission {
    /// The ticket whose turn it is to wait for a slot.
    next: AtomicU64,
    turn: Notify,
}

impl Admission {
    async fn admit(&self, ticket: u64, limit: Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        loop {
            let notified = self.turn.notified();
            tokio::pin!(notified);
            // Registered before the check, so a turn handed over in between is not missed.
            notified.as_mut().enable();
            if self.next.load(Ordering::Acquire) == ticket {
                break;
            }
            notified.await;
        }
        let permit = limit.acquire_owned().await.ok();
        self.next.fetch_add(1, Ordering::AcqRel);
        self.turn.notify_waiters();
        permit
    }
}
