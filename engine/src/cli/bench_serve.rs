//! `cairn bench serve`: what the HTTP service costs the pipelines. Three pipelines at a time
//! (chains of shell steps that print a line each, batch after batch for `--phase`) run alone,
//! then again while 50 API clients read the runs list and one client follows the first run's
//! live log, for `--rounds` rounds in turn; reported
//! are the pipelines' step throughput both ways (each round and the medians) and the API's
//! p50/p99 latency under that load.
//!
//! Each client reads the list, waits `--interval` (default 1 s, what the dashboard's pages wait
//! between refreshes) and reads again; the clients' first reads are spread evenly over the
//! first interval so the 50 do not arrive in step. `--interval 0s` makes them read back to
//! back: a stress figure of what two cores can serve, not a team's load.

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
    /// Each phase (alone, loaded) runs batches of the three pipelines for at least this long.
    #[arg(long, default_value = "10s", value_parser = cairn_engine::pipeline::parse_duration)]
    pub phase: Duration,
    /// Concurrent API clients reading the runs list.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Alone-then-loaded rounds; the report gives each round and the medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Each client's wait between reads (`0s`: back to back).
    #[arg(long, default_value = "1s", value_parser = cairn_engine::pipeline::parse_duration)]
    pub interval: Duration,
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
    pub client_interval_ms: u128,
    pub rounds: usize,
    pub alone_steps_per_s_each: Vec<f64>,
    pub loaded_steps_per_s_each: Vec<f64>,
    pub alone_steps_per_s: f64,
    pub loaded_steps_per_s: f64,
    pub throughput_change_percent: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub followed_log_lines: u64,
    /// This process's CPU per pipeline step, alone.
    pub engine_cpu_ms_per_step: f64,
    /// This process's extra CPU under load, per API request (clients included: they run here).
    pub api_cpu_ms_per_request: f64,
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

/// Creates the pipelines' runs and drives them at once.
async fn drive_pipelines(engine: &Arc<Engine>, definition: &str) -> Result<()> {
    let mut ids = Vec::new();
    for _ in 0..PIPELINES {
        let (run_id, _) = engine.create_run(definition, "chain", None, serde_json::json!({}))?;
        ids.push(run_id);
    }
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
    Ok(())
}

/// CPU seconds this process has used (user + system), the engine and the API together; the
/// steps' own processes are children and not counted.
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// Batches of the three pipelines, one after another, until `at_least` has passed: how many
/// steps ran, and in how many seconds.
async fn drive_for(
    engine: &Arc<Engine>,
    definition: &str,
    steps: usize,
    at_least: Duration,
) -> Result<(usize, f64)> {
    let started = Instant::now();
    let mut batches = 0;
    while batches == 0 || started.elapsed() < at_least {
        drive_pipelines(engine, definition).await?;
        batches += 1;
    }
    Ok((batches * PIPELINES * steps, started.elapsed().as_secs_f64()))
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
        let each = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "pipelines alone:        {:>8.1} steps/s median of {} rounds ({}; {} pipelines of {} shell steps)",
            report.alone_steps_per_s,
            report.rounds,
            each(&report.alone_steps_per_s_each),
            report.pipelines,
            report.steps_per_pipeline
        );
        println!(
            "pipelines under load:   {:>8.1} steps/s ({:+.1}%; {})",
            report.loaded_steps_per_s,
            report.throughput_change_percent,
            each(&report.loaded_steps_per_s_each)
        );
        println!(
            "API under load:         {} clients every {} ms, {} requests ({:.0}/s, {} failed), p50 {:.1} ms, p99 {:.1} ms",
            report.clients,
            report.client_interval_ms,
            report.requests,
            report.requests_per_s,
            report.failed_requests,
            report.p50_ms,
            report.p99_ms
        );
        println!(
            "CPU of this process:    {:.2} ms per step alone; {:.2} ms per API request (server and client)",
            report.engine_cpu_ms_per_step, report.api_cpu_ms_per_request
        );
        println!(
            "live log follower:      {} lines received (fewest of the rounds)",
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
    // Warm up (first process spawns, page cache), then alone and loaded in turn, so a change
    // in the machine's other load falls on both alike.
    drive_pipelines(&engine, &chain(10)).await?;
    let (mut alone, mut loaded) = (Vec::new(), Vec::new());
    let mut latencies = Vec::new();
    let (mut failed, mut lines, mut load_seconds) = (0, u64::MAX, 0.0);
    // CPU of this process per step alone, and per step + request under load: what one API
    // request costs, whatever else the machine is doing.
    let (mut alone_cpu, mut alone_steps, mut loaded_cpu, mut loaded_steps) = (0.0, 0, 0.0, 0);
    for _ in 0..args.rounds.max(1) {
        let cpu = own_cpu_seconds();
        let (steps, seconds) = drive_for(&engine, &definition, args.steps, args.phase).await?;
        alone_cpu += own_cpu_seconds() - cpu;
        alone_steps += steps;
        alone.push(steps as f64 / seconds);
        let cpu = own_cpu_seconds();
        let phase = loaded_phase(&engine, &definition, args, &base, &token).await?;
        loaded_cpu += own_cpu_seconds() - cpu;
        loaded_steps += phase.steps;
        loaded.push(phase.steps as f64 / phase.seconds);
        latencies.extend(phase.latencies);
        failed += phase.failed;
        lines = lines.min(phase.lines);
        load_seconds += phase.seconds;
    }
    listening.task.abort();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let median = |values: &[f64]| super::bench_model::median(values.iter().copied()).unwrap_or(0.0);
    let (alone_median, loaded_median) = (median(&alone), median(&loaded));
    let cpu_ms_per_step = alone_cpu / alone_steps.max(1) as f64 * 1000.0;
    let api_cpu_ms_per_request = (loaded_cpu * 1000.0 - cpu_ms_per_step * loaded_steps as f64)
        / (latencies.len().max(1) as f64);
    Ok(ServeReport {
        pipelines: PIPELINES,
        steps_per_pipeline: args.steps,
        clients: args.clients,
        client_interval_ms: args.interval.as_millis(),
        rounds: alone.len(),
        alone_steps_per_s_each: alone,
        loaded_steps_per_s_each: loaded,
        alone_steps_per_s: alone_median,
        loaded_steps_per_s: loaded_median,
        throughput_change_percent: (loaded_median / alone_median - 1.0) * 100.0,
        requests: latencies.len() as u64,
        failed_requests: failed,
        requests_per_s: latencies.len() as f64 / load_seconds,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        followed_log_lines: lines,
        engine_cpu_ms_per_step: cpu_ms_per_step,
        api_cpu_ms_per_request,
    })
}

/// What one loaded phase measured.
struct Phase {
    steps: usize,
    latencies: Vec<Duration>,
    failed: u64,
    lines: u64,
    seconds: f64,
}

/// The pipelines again, while the clients read and one follows the first pipeline's log.
async fn loaded_phase(
    engine: &Arc<Engine>,
    definition: &str,
    args: &BenchServeArgs,
    base: &str,
    token: &str,
) -> Result<Phase> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients + 2)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for index in 0..args.clients {
        // Spread over the first interval (deterministically: the same run, the same arrivals).
        let offset = args.interval.mul_f64(index as f64 / args.clients as f64);
        let interval = args.interval;
        let (client, base, token, stop, failed) = (
            client.clone(),
            base.to_string(),
            token.to_string(),
            stop.clone(),
            failed.clone(),
        );
        readers.spawn(async move {
            let mut latencies = Vec::new();
            tokio::time::sleep(offset).await;
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
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            latencies
        });
    }
    // The follower: the live log of the first loaded pipeline (the next run id).
    let lines = Arc::new(AtomicU64::new(0));
    let next_run = engine.store().runs(1)?.first().map_or(1, |r| r.id + 1);
    let follower = {
        let (client, base, token, lines) = (
            client.clone(),
            base.to_string(),
            token.to_string(),
            lines.clone(),
        );
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
    let (steps, seconds) = drive_for(engine, definition, args.steps, args.phase).await?;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = readers.join_next().await {
        latencies.extend(done.context("an API client task failed")?);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), follower).await;
    Ok(Phase {
        steps,
        latencies,
        failed: failed.load(Ordering::Relaxed),
        lines: lines.load(Ordering::Relaxed),
        seconds,
    })
}
