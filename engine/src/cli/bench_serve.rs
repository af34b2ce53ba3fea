//! `cairn bench serve`: what the HTTP service costs the pipelines. Three pipelines (chains of
//! shell steps that print a line each) run once alone and once while 50 API clients read the
//! runs list as fast as they can and one client follows a run's live log; reported are the
//! pipelines' step throughput both times and the API's p50/p99 latency under that load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::mpsc;

use cairn_engine::agents::Registry;
use cairn_engine::api::{self, ApiOptions, ApiState, HookSecrets, hash_token, new_token};
use cairn_engine::exec::sandbox::{self, Sandbox};
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::{RunState, Store};

#[derive(clap::Args)]
pub struct BenchServeArgs {
    /// Shell steps in each of the three pipelines.
    #[arg(long, default_value_t = 150)]
    pub steps: usize,
    /// Concurrent API clients reading the runs list.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Directory for the scratch state (default: under $CAIRN_HOME, the state's disk).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct ServeReport {
    pub pipelines: usize,
    pub steps_per_pipeline: usize,
    pub clients: usize,
    pub alone_steps_per_s: f64,
    pub loaded_steps_per_s: f64,
    pub throughput_change_percent: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub followed_log_lines: u64,
}

const PIPELINES: usize = 3;

fn chain(steps: usize) -> String {
    let mut text = "name: chain\nsteps:\n".to_string();
    for i in 0..steps {
        let _ = writeln!(text, "  - id: s{i}\n    run: echo step {i}");
        if i > 0 {
            let _ = writeln!(text, "    depends_on: s{}", i - 1);
        }
    }
    text
}

/// Creates the pipelines' runs and drives them at once; steps per second over all of them.
async fn drive_pipelines(
    engine: &Arc<Engine>,
    definition: &str,
    steps: usize,
) -> Result<(f64, Vec<i64>)> {
    let mut ids = Vec::new();
    for _ in 0..PIPELINES {
        let (run_id, _) = engine.create_run(definition, "chain", None, serde_json::json!({}))?;
        ids.push(run_id);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for &run_id in &ids {
        let engine = engine.clone();
        tasks.spawn(async move { engine.drive(run_id, None).await });
    }
    while let Some(done) = tasks.join_next().await {
        let state = done.context("a pipeline's task failed")??;
        if state != RunState::Succeeded {
            bail!("a benchmark pipeline ended {state}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(((PIPELINES * steps) as f64 / elapsed, ids))
}

pub async fn bench_serve(home_dir: &Path, args: &BenchServeArgs) -> Result<()> {
    let scratch = args
        .dir
        .clone()
        .unwrap_or_else(|| home_dir.join("bench"))
        .join(format!("serve-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("failed to create {}", scratch.display()))?;
    let report = measure(&scratch, args).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "pipelines alone:        {:>8.1} steps/s ({} pipelines of {} shell steps)",
            report.alone_steps_per_s, report.pipelines, report.steps_per_pipeline
        );
        println!(
            "pipelines under load:   {:>8.1} steps/s ({:+.1}%)",
            report.loaded_steps_per_s, report.throughput_change_percent
        );
        println!(
            "API under load:         {} clients, {} requests ({:.0}/s, {} failed), p50 {:.1} ms, p99 {:.1} ms",
            report.clients,
            report.requests,
            report.requests_per_s,
            report.failed_requests,
            report.p50_ms,
            report.p99_ms
        );
        println!(
            "live log follower:      {} lines received",
            report.followed_log_lines
        );
    }
    Ok(())
}

async fn measure(scratch: &Path, args: &BenchServeArgs) -> Result<ServeReport> {
    // The same conditions both times: shell steps without the sandbox, so what is measured is
    // the engine and the API, not namespace setup.
    sandbox::install(Sandbox::off());
    let store = Store::open(&scratch.join("cairn.db"))?;
    let token = new_token();
    store.write(|txn| txn.create_token("bench", "read", &hash_token(&token)))?;
    let engine = Arc::new(Engine::new(
        store,
        Arc::new(Registry::builtin(None)),
        EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: scratch.join("work"),
        },
    ));
    let definition = chain(args.steps);
    // Warm up (first process spawns, page cache), then alone.
    drive_pipelines(&engine, &chain(10), 10).await?;
    let (alone, _) = drive_pipelines(&engine, &definition, args.steps).await?;

    let (sender, _receiver) = mpsc::unbounded_channel();
    let state = ApiState::new(
        engine.clone(),
        sender,
        BTreeMap::new(),
        HookSecrets::default(),
        ApiOptions::default(),
    )?;
    let listening = api::listen("127.0.0.1:0", state, None).await?;
    let base = format!("http://{}", listening.address);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients + 2)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (client, base, token, stop, failed) = (
            client.clone(),
            base.clone(),
            token.clone(),
            stop.clone(),
            failed.clone(),
        );
        readers.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = match client
                    .get(format!("{base}/api/v1/runs?limit=50"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(started.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            latencies
        });
    }
    // The follower: the live log of the first loaded pipeline (the next run id).
    let lines = Arc::new(AtomicU64::new(0));
    let next_run = engine.store().runs(1)?.first().map_or(1, |r| r.id + 1);
    let follower = {
        let (client, base, token, lines) =
            (client.clone(), base.clone(), token.clone(), lines.clone());
        tokio::spawn(async move {
            // The run may not exist for a moment: retry until it does.
            for _ in 0..200 {
                let Ok(mut response) = client
                    .get(format!("{base}/api/v1/runs/{next_run}/logs/stream"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    return;
                };
                if !response.status().is_success() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                while let Ok(Some(chunk)) = response.chunk().await {
                    let text = String::from_utf8_lossy(&chunk);
                    lines.fetch_add(text.matches("event: log").count() as u64, Ordering::Relaxed);
                    if text.contains("event: end") {
                        return;
                    }
                }
                return;
            }
        })
    };
    let load_started = Instant::now();
    let (loaded, _) = drive_pipelines(&engine, &definition, args.steps).await?;
    stop.store(true, Ordering::Relaxed);
    let load_seconds = load_started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    while let Some(done) = readers.join_next().await {
        latencies.extend(done.context("an API client task failed")?);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
    listening.task.abort();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(ServeReport {
        pipelines: PIPELINES,
        steps_per_pipeline: args.steps,
        clients: args.clients,
        alone_steps_per_s: alone,
        loaded_steps_per_s: loaded,
        throughput_change_percent: (loaded / alone - 1.0) * 100.0,
        requests: latencies.len() as u64,
        failed_requests: failed.load(Ordering::Relaxed),
        requests_per_s: latencies.len() as f64 / load_seconds,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        followed_log_lines: lines.load(Ordering::Relaxed),
    })
}
