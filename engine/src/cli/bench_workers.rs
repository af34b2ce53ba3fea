//! `cairn bench workers`: how runs speed up with workers. One run of `--steps` parallel
//! `runs_on:` steps, each `sleep --seconds`, is driven once per worker count (`--workers
//! 1,2,4`), each time with that many `cairn worker` processes of this binary started for it on
//! the store (`--store postgres://…`, else the home's store). The speed-up against one worker
//! is what adding build hosts buys; its distance from the worker count is the cost of leasing,
//! polling and reporting through the store.
//!
//! Each round's workers carry a label of their own, so a worker left from an earlier round (or
//! another team's) never takes its steps.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use cairn_engine::agents::Registry;
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::{Location, RunState};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct BenchWorkersArgs {
    /// The store the engine and its workers share (`postgres://…`); default: the home's.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Steps in the run, all independent.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// What each step does: `sleep SECONDS`.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Worker counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct WorkersRound {
    pub workers: usize,
    pub seconds: f64,
    /// Against the first count measured (normally one worker).
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct WorkersReport {
    pub store: String,
    pub steps: usize,
    pub step_seconds: f64,
    pub rounds: Vec<WorkersRound>,
}

pub async fn bench_workers(home: Option<PathBuf>, args: &BenchWorkersArgs) -> Result<()> {
    if args.steps == 0
        || args.workers.contains(&0)
        || !args.seconds.is_finite()
        || args.seconds < 0.0
    {
        return Err(super::Invalid(
            "--steps and every --workers count must be at least 1, --seconds not negative".into(),
        )
        .into());
    }
    let settings = Settings::resolve(home, None)?;
    let store = match &args.store {
        Some(url) => Location::Postgres(url.clone()).open(&settings.home)?,
        None => settings.open_store()?,
    };
    let location = store.location();
    let work_dir = settings
        .home
        .join("bench")
        .join(format!("workers-{}", std::process::id()));
    let engine = Engine::new(
        store,
        Arc::new(Registry::builtin(None)),
        EngineSettings {
            concurrency: Some(args.steps),
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: work_dir.clone(),
        },
    );
    let mut rounds: Vec<WorkersRound> = Vec::new();
    for &count in &args.workers {
        let label = format!("bench-{}-{}", std::process::id(), rounds.len());
        let workers = Workers::start(&settings.home, args.store.as_deref(), &label, count)?;
        let started = Instant::now();
        let (run_id, _) = engine.create_run(
            &workflow(args.steps, args.seconds, &label),
            "bench-workers",
            None,
            serde_json::json!({}),
        )?;
        let state = engine.drive(run_id, None).await;
        let seconds = started.elapsed().as_secs_f64();
        drop(workers);
        let state = state?;
        if state != RunState::Succeeded {
            bail!("run {run_id} with {count} workers ended {state}");
        }
        let speedup = rounds.first().map_or(1.0, |first| first.seconds / seconds);
        if !args.json {
            println!(
                "{count} worker(s): {seconds:>7.2} s for {} steps of sleep {} ({speedup:.2}x)",
                args.steps, args.seconds
            );
        }
        rounds.push(WorkersRound {
            workers: count,
            seconds,
            speedup,
        });
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    let report = WorkersReport {
        store: location,
        steps: args.steps,
        step_seconds: args.seconds,
        rounds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("store: {}", report.store);
    }
    Ok(())
}

fn workflow(steps: usize, seconds: f64, label: &str) -> String {
    let mut text = String::from("name: bench-workers\nsteps:\n");
    for i in 0..steps {
        text.push_str(&format!(
            "  - id: s{i}\n    runs_on: [{label}]\n    run: sleep {seconds}\n"
        ));
    }
    text
}

/// The worker processes of one round; stopped (SIGTERM, then SIGKILL) when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(
        home: &std::path::Path,
        store: Option<&str>,
        label: &str,
        count: usize,
    ) -> Result<Workers> {
        let exe = std::env::current_exe().context("failed to find this binary")?;
        let mut workers = Workers(Vec::new());
        for i in 0..count {
            let mut command = Command::new(&exe);
            command
                .arg("--home")
                .arg(home)
                .args([
                    "worker",
                    "--labels",
                    label,
                    "--name",
                    &format!("{label}-{i}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(url) = store {
                command.args(["--store", url]);
            }
            workers.0.push(
                command
                    .spawn()
                    .with_context(|| format!("failed to start {}", exe.display()))?,
            );
        }
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
