//! `cairn bench engine`: no-op steps per second through the durable path, for a wide DAG and
//! a deep chain, beside the raw rate of durable SQLite commits on the same disk.
//!
//! The comparison is the point: group commit should let a wide DAG finish steps at least as
//! fast as SQLite can commit single transactions, and a chain (one commit per step) at half.
//! With `--store postgres://…` the two DAGs run through that PostgreSQL database instead (the
//! raw SQLite rate stays as the yardstick), so the two backends compare on one machine.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use cairn_engine::agents::Registry;
use cairn_engine::exec::sandbox::{self, Sandbox};
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::{RunState, Store};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchTarget,
}

#[derive(clap::Subcommand)]
pub enum BenchTarget {
    /// Durable engine throughput.
    Engine {
        /// Steps in each DAG (default 1000; 200 with `--sandbox`).
        #[arg(long)]
        steps: Option<usize>,
        /// Concurrency limit for the wide DAG (the engine default otherwise).
        #[arg(long, default_value_t = EngineSettings::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Directory for the scratch databases (default: under $CAIRN_HOME, the state's disk).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Instead: the sandbox's cost per step, a chain of `run: 'true'` steps run
        /// unsandboxed and then in the configured sandbox (`--steps` defaults to 200 here).
        #[arg(long)]
        sandbox: bool,
        /// Run the DAGs through this PostgreSQL database (`postgres://…`) instead of scratch
        /// SQLite files.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// The HTTP service's cost: three pipelines alone, then while 50 API clients read runs
    /// and one follows a live log; step throughput both times and API latency.
    Serve(super::bench_serve::BenchServeArgs),
    /// Analysis time per commit and peak memory over a repository's recent commits.
    Analyze(super::bench_analyze::BenchAnalyzeArgs),
    /// How a run of parallel `runs_on:` steps speeds up with 1, 2, 4… workers on the store.
    Workers(super::bench_workers::BenchWorkersArgs),
    /// Local model speed, load time and peak memory, measured (optionally beside llama.cpp's
    /// llama-bench on the same file, interleaved).
    Model(super::bench_model::BenchModelArgs),
}

#[derive(Serialize)]
pub struct EngineReport {
    /// The SQLite file or PostgreSQL address (without password) the DAGs ran through.
    pub store: String,
    pub steps: usize,
    pub concurrency: usize,
    pub raw_commits_per_s: f64,
    pub wide_steps_per_s: f64,
    pub deep_steps_per_s: f64,
    pub wide_vs_raw: f64,
    pub deep_vs_raw: f64,
}

pub async fn bench(home: Option<PathBuf>, args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchTarget::Analyze(analyze) => super::bench_analyze::bench_analyze(home, analyze).await,
        BenchTarget::Serve(serve) => {
            let settings = Settings::resolve(home, None)?;
            super::bench_serve::bench_serve(&settings.home, serve).await
        }
        BenchTarget::Model(model) => super::bench_model::bench_model(model).await,
        BenchTarget::Workers(workers) => super::bench_workers::bench_workers(home, workers).await,
        BenchTarget::Engine {
            steps,
            concurrency,
            dir,
            json,
            sandbox,
            store,
        } => {
            let settings = Settings::resolve(home, None)?;
            let base = dir.clone().unwrap_or_else(|| settings.home.join("bench"));
            let scratch = base.join(format!("engine-{}", std::process::id()));
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("failed to create {}", scratch.display()))?;
            if *sandbox {
                let report = sandbox_bench(&settings, &scratch, steps.unwrap_or(200)).await;
                let _ = std::fs::remove_dir_all(&scratch);
                let report = report?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "chain of {} `run: true` steps, sandbox: {}",
                        report.steps, report.mechanism
                    );
                    println!(
                        "unsandboxed: {:>8.2} ms/step\nsandboxed:   {:>8.2} ms/step\noverhead:    {:>8.2} ms/step",
                        report.unsandboxed_ms_per_step,
                        report.sandboxed_ms_per_step,
                        report.overhead_ms_per_step
                    );
                }
                return Ok(());
            }
            let steps = steps.unwrap_or(1000);
            let report = engine_bench(&scratch, steps, *concurrency, store.as_deref()).await;
            let _ = std::fs::remove_dir_all(&scratch);
            let report = report?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "raw SQLite durable commits: {:>9.0} /s (1 row per synchronous=FULL transaction)",
                    report.raw_commits_per_s
                );
                println!("store: {}", report.store);
                println!(
                    "wide DAG ({} steps, concurrency {}): {:>9.0} steps/s ({:.2}x raw)",
                    report.steps, report.concurrency, report.wide_steps_per_s, report.wide_vs_raw
                );
                println!(
                    "deep chain ({} steps):              {:>9.0} steps/s ({:.2}x raw)",
                    report.steps, report.deep_steps_per_s, report.deep_vs_raw
                );
            }
            Ok(())
        }
    }
}

async fn engine_bench(
    dir: &std::path::Path,
    steps: usize,
    concurrency: usize,
    url: Option<&str>,
) -> Result<EngineReport> {
    let raw = raw_commit_rate(&dir.join("raw.db"), steps)?;
    let open = |name: &str| -> Result<Store> {
        let file = dir.join(format!("{name}.db"));
        Ok(match url {
            Some(url) => Store::open_postgres(url, &file)?,
            None => Store::open(&file)?,
        })
    };
    let wide_store = open("wide")?;
    let location = wide_store.location();
    let wide = dag_rate(
        wide_store,
        dir,
        "wide",
        &workflow(steps, concurrency, false),
    )
    .await?;
    let deep = dag_rate(open("deep")?, dir, "deep", &workflow(steps, 1, true)).await?;
    Ok(EngineReport {
        store: location,
        steps,
        concurrency,
        raw_commits_per_s: raw,
        wide_steps_per_s: wide,
        deep_steps_per_s: deep,
        wide_vs_raw: wide / raw,
        deep_vs_raw: deep / raw,
    })
}

#[derive(Serialize)]
pub struct SandboxReport {
    pub steps: usize,
    pub mechanism: String,
    pub unsandboxed_ms_per_step: f64,
    pub sandboxed_ms_per_step: f64,
    pub overhead_ms_per_step: f64,
}

/// The same chain of shell steps without and with the sandbox (mechanism, namespaces,
/// control groups): the difference is what sandboxing costs a step.
async fn sandbox_bench(
    settings: &Settings,
    dir: &std::path::Path,
    steps: usize,
) -> Result<SandboxReport> {
    let sandboxed = settings.sandbox()?;
    if !sandboxed.mechanism.is_available() {
        bail!("no sandbox to measure: {}", sandboxed.mechanism.describe());
    }
    let mechanism = sandboxed.mechanism.describe();
    let mut chain = "name: bench\nsteps:\n".to_string();
    for i in 0..steps {
        let _ = writeln!(chain, "  - id: s{i}\n    run: 'true'");
        if i > 0 {
            let _ = writeln!(chain, "    depends_on: s{}", i - 1);
        }
    }
    sandbox::install(Sandbox::off());
    let plain = dag_rate(Store::open(&dir.join("plain.db"))?, dir, "plain", &chain).await?;
    sandbox::install(sandboxed);
    let boxed = dag_rate(Store::open(&dir.join("boxed.db"))?, dir, "boxed", &chain).await?;
    let (plain_ms, boxed_ms) = (1000.0 / plain, 1000.0 / boxed);
    Ok(SandboxReport {
        steps,
        mechanism,
        unsandboxed_ms_per_step: plain_ms,
        sandboxed_ms_per_step: boxed_ms,
        overhead_ms_per_step: boxed_ms - plain_ms,
    })
}

fn workflow(steps: usize, concurrency: usize, chain: bool) -> String {
    let mut text = format!("name: bench\nconcurrency: {concurrency}\nsteps:\n");
    for i in 0..steps {
        let _ = writeln!(text, "  - id: s{i}\n    agent: noop");
        if chain && i > 0 {
            let _ = writeln!(text, "    depends_on: s{}", i - 1);
        }
    }
    text
}

fn raw_commit_rate(path: &std::path::Path, commits: usize) -> Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
    let started = Instant::now();
    for i in 0..commits {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])?;
        conn.execute_batch("COMMIT")?;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}

async fn dag_rate(
    store: Store,
    dir: &std::path::Path,
    name: &str,
    definition: &str,
) -> Result<f64> {
    let engine = Engine::new(
        store,
        Arc::new(Registry::builtin(None)),
        EngineSettings {
            concurrency: None,
            lease: EngineSettings::DEFAULT_LEASE,
            work_dir: dir.join(format!("{name}-work")),
        },
    );
    let started = Instant::now();
    let (run_id, workflow) = engine.create_run(definition, name, None, serde_json::json!({}))?;
    let state = engine.drive(run_id, None).await?;
    let elapsed = started.elapsed().as_secs_f64();
    if state != RunState::Succeeded {
        bail!("benchmark run {name} ended {state}");
    }
    Ok(workflow.steps.len() as f64 / elapsed)
}
