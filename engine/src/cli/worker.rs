//! `cairn worker --labels docker,linux`: run the `runs_on:` steps of the runs that engines
//! sharing this store (`store: postgres://…`) drive, on this machine. Stops on Ctrl-C or
//! SIGTERM after the task it is running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use cairn_engine::exec::worker::{WorkerSettings, run_worker};
use cairn_engine::store::Location;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The store the engines use (`postgres://…`); default: `store:` in cairn.yaml or
    /// `CAIRN_STORE`, else the SQLite file in the home.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// What this worker offers; a step runs here only if its `runs_on` labels are all listed.
    #[arg(long, value_delimiter = ',', value_name = "LABEL,…")]
    pub labels: Vec<String>,
    /// This worker's name in the store (default: host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// How long a task's lease lasts without renewal (`30s`, `1500ms`): how soon another
    /// worker takes over a task of this one if it dies or is cut off.
    #[arg(long, default_value = "30s")]
    pub lease: String,
}

pub async fn worker(home: Option<PathBuf>, args: &WorkerArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, None)?;
    let store = match &args.store {
        Some(url) => Location::Postgres(url.clone()).open(&settings.home)?,
        None => settings.open_store()?,
    };
    let lease = cairn_engine::pipeline::parse_duration(&args.lease)
        .map_err(|reason| anyhow::anyhow!("--lease {:?}: {reason}", args.lease))?;
    if lease < Duration::from_millis(300) {
        anyhow::bail!("--lease {:?} is too short: use 300ms or more", args.lease);
    }
    cairn_engine::exec::sandbox::install(settings.sandbox()?);
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}", std::process::id())
    });
    let dir = settings
        .home
        .join("worker")
        .join(name.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(term) => { term.recv().await; } None => std::future::pending().await } } => {}
        }
        let _ = stop.send(true);
    });
    eprintln!(
        "worker {name}: labels [{}], store {}",
        args.labels.join(", "),
        store.location()
    );
    let stats = run_worker(
        store,
        WorkerSettings {
            name: name.clone(),
            labels: args.labels.clone(),
            lease,
            dir,
            poll: Duration::from_millis(250),
        },
        shutdown,
    )
    .await;
    eprintln!(
        "worker {name}: {} tasks finished, {} lost to another worker",
        stats.finished, stats.lost
    );
    Ok(ExitCode::SUCCESS)
}
