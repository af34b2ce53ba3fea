//! The `cairn` command line: one file per subcommand, all sharing [`settings::Settings`].
//!
//! Exit codes: 0 success; 1 a run failed or was cancelled; 2 invalid input (a workflow or
//! configuration that does not validate, a bad argument, a run, step or path that does not
//! exist); 3 any other error (state database, I/O, git).

pub mod analyze;
pub mod approve;
pub mod artifacts;
pub mod bench;
pub mod bench_analyze;
pub mod bench_model;
pub mod bench_serve;
pub mod bench_workers;
pub mod bundle;
pub mod cancel;
pub mod convert;
pub mod costs;
pub mod doctor;
pub mod doctor_target;
pub mod gc;
pub mod graph;
pub mod logs;
pub mod measure;
pub mod model;
pub mod promote;
pub mod risk;
pub mod rollback;
pub mod run;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod status;
pub mod tests;
pub mod token;
pub mod validate;
pub mod view;
pub mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A mistake in what the user asked for (a path that is not there, a bad argument): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// `path` as a git repository the user named with `--repo`, or why it is not one.
pub fn check_repository(path: &std::path::Path) -> Result<(), Invalid> {
    if !path.exists() {
        return Err(Invalid(format!(
            "--repo {}: no such directory",
            path.display()
        )));
    }
    if !path.is_dir() {
        return Err(Invalid(format!(
            "--repo {}: not a directory",
            path.display()
        )));
    }
    if cairn_engine::exec::git(path, &["rev-parse", "--git-dir"]).is_err() {
        return Err(Invalid(format!(
            "--repo {}: not a git repository",
            path.display()
        )));
    }
    Ok(())
}

pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_ERROR: u8 = 3;

/// Cairn: a durable, air-gapped-first CI/CD pipeline engine.
#[derive(Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    /// Where state lives (database, workspaces, models). Default: the per-user data dir.
    #[arg(long, env = "CAIRN_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a run of a workflow and follow it to the end.
    Run(run::RunArgs),
    /// Continue interrupted runs (all of them, or one).
    Resume(run::ResumeArgs),
    /// Show one run's steps, or an overview of recent runs.
    Status(status::StatusArgs),
    /// List runs, newest first.
    Runs(status::RunsArgs),
    /// Print a run's step logs.
    Logs(logs::LogsArgs),
    /// Cancel a run (its running steps are killed).
    Cancel(cancel::CancelArgs),
    /// Restore the previous version of what a run deployed.
    Rollback(rollback::RollbackArgs),
    /// Promote a canary held for a person (`inconclusive: hold`).
    Promote(promote::PromoteArgs),
    /// Let a deploy waiting for its window (or a freeze's end) go now.
    Approve(approve::ApproveArgs),
    /// Check a workflow file and report every problem with file, line and column.
    Validate(validate::ValidateArgs),
    /// Print a workflow written in another form (the design brief's `pipeline:`, a GitHub or
    /// Gitea Actions workflow) as the Cairn workflow it runs as.
    Convert(convert::ConvertArgs),
    /// Store, list and remove the secrets `run:` steps are given (sealed in the database).
    Secret(secret::SecretArgs),
    /// Draw a workflow's DAG as Mermaid or Graphviz DOT.
    Graph(graph::GraphArgs),
    /// Explain what a commit changes, how risky it is and which route it takes.
    Analyze(analyze::AnalyzeArgs),
    /// Poll watched repositories on their cron schedules and run every new commit; with
    /// `--listen`, also serve the HTTP API, metrics and webhooks.
    Serve(serve::ServeArgs),
    /// API tokens for `cairn serve --listen`: create (printed once), list, revoke.
    Token(token::TokenArgs),
    /// What the test agent knows: flaky tests and their quarantine; measuring its selection.
    Tests(tests::TestsArgs),
    /// Language-model spending by day, task and tier, with cache savings.
    Costs(costs::CostsArgs),
    /// Risk learned from a repository's own history: calibrate a model, report how it fares.
    Risk(risk::RiskArgs),
    /// Measure the engine's durable throughput, the local model's speed, or analysis time.
    Bench(bench::BenchArgs),
    /// Check a GGUF model file: its metadata, its tokenizer, a continuation with speed.
    Model(model::ModelArgs),
    /// A run's artifacts: list them, or extract one step's into a directory.
    Artifacts(artifacts::ArtifactsArgs),
    /// Apply the retention policy now: delete old runs, logs and finished runs' workspaces.
    Gc(gc::GcArgs),
    /// Pack this binary, the configured model, the workflow templates and a SHA-256 manifest
    /// into one tar for an air-gapped machine.
    Bundle(bundle::BundleArgs),
    /// Check Cairn's state thoroughly (the full database integrity check) and report what this
    /// machine gives Cairn (the step sandbox and its limits), changing nothing.
    Doctor(doctor::DoctorArgs),
    /// Run the `runs_on:` steps of runs that engines sharing this store drive, here.
    Worker(worker::WorkerArgs),
}
