//! `cairn run WORKFLOW` and `cairn resume [RUN]`: start or continue runs in the foreground.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::sync::mpsc;

use cairn_engine::exec::{self, Engine, RunEvent};
use cairn_engine::store::RunState;

use super::settings::Settings;
use super::view::{ViewOptions, watch};
use super::{EXIT_ERROR, EXIT_INVALID, EXIT_RUN_FAILED};

#[derive(clap::Args)]
pub struct RunArgs {
    /// A workflow file, or the name of one in ./workflows (`ai-pipeline`).
    pub workflow: String,
    /// The repository the run is about (a checkout of the commit becomes its workspace).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// The commit to run for (default: the repository's HEAD).
    #[arg(long, value_name = "SHA", requires = "repo")]
    pub commit: Option<String>,
    /// Most steps running at once (overrides the workflow's `concurrency:`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Do not echo step logs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep the run's checkout after it ends (by default it is removed; see `retention:`).
    #[arg(long)]
    pub keep_workspace: bool,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The run to resume; default: every interrupted run.
    pub run: Option<i64>,
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[arg(long, short)]
    pub quiet: bool,
}

/// Finds a workflow by path or by name under `./workflows`.
pub fn resolve_workflow(name: &str) -> Result<PathBuf, String> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    let candidates = [
        Path::new("workflows").join(format!("{name}.yaml")),
        Path::new("workflows").join(format!("{name}.yml")),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no workflow `{name}`: tried {name}, {} and {}",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

pub async fn run(home: Option<PathBuf>, args: &RunArgs) -> Result<ExitCode> {
    let path = match resolve_workflow(&args.workflow) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let text = match cairn_engine::pipeline::limits::read_limited(&path) {
        Ok(text) => text,
        Err(reason) => {
            eprintln!(
                "{}:1:1: failed to read workflow file: {reason}",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let context = match &args.repo {
        Some(repo) => {
            super::check_repository(repo)?;
            commit_context(repo, args.commit.as_deref())?
        }
        None => json!({ "trigger": "manual" }),
    };
    let mut settings = Settings::resolve(home, args.concurrency)?;
    settings.keep_workspaces = args.keep_workspace;
    let engine = settings.engine()?;
    let file_name = path.display().to_string();
    let source = std::fs::canonicalize(&path)
        .ok()
        .map(|p| p.display().to_string());
    let (run_id, workflow) = match engine.create_run(&text, &file_name, source, context) {
        Ok(created) => created,
        Err(exec::Error::Invalid(error)) => {
            eprintln!("{error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(error) => return Err(error.into()),
    };
    println!("{run_id}");
    eprintln!(
        "run {run_id}: workflow `{}` ({})",
        workflow.name,
        plural(workflow.steps.len(), "step")
    );
    if args.repo.is_none() {
        // Say so: a user may expect the current directory to be the repository under test.
        eprintln!(
            "run {run_id}: no --repo given, so there is no commit to check out; steps run in an \
             empty workspace (pass --repo PATH to run on a repository)"
        );
    }
    let step_ids = workflow.steps.iter().map(|s| s.id.clone()).collect();
    let state = drive_with_view(&engine, run_id, step_ids, !args.quiet).await?;
    Ok(exit_code(&[state]))
}

pub async fn resume(home: Option<PathBuf>, args: &ResumeArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, args.concurrency)?;
    let engine = settings.engine()?;
    let runs = match args.run {
        Some(run_id) => {
            let resumable = engine.resumable_runs()?;
            if !resumable.iter().any(|r| r.id == run_id) {
                let run = engine.store().run(run_id)?;
                if run.state.is_terminal() {
                    bail!("run {run_id} is already finished ({})", run.state);
                }
                bail!(
                    "run {run_id} is being driven by {} (lease held); it cannot be resumed here",
                    run.lease_owner.as_deref().unwrap_or("another engine")
                );
            }
            vec![run_id]
        }
        None => engine.resumable_runs()?.into_iter().map(|r| r.id).collect(),
    };
    if runs.is_empty() {
        eprintln!("nothing to resume: no interrupted runs");
        return Ok(ExitCode::SUCCESS);
    }
    let mut states = Vec::new();
    let explicit = args.run.is_some();
    let mut errors = 0;
    for run_id in runs {
        eprintln!("resuming run {run_id}");
        let steps = match engine.store().steps(run_id) {
            Ok(steps) => steps.into_iter().map(|s| s.step_id).collect(),
            Err(error) => {
                eprintln!("error: run {run_id}: {error}");
                errors += 1;
                continue;
            }
        };
        match drive_with_view(&engine, run_id, steps, !args.quiet).await {
            Ok(state) => states.push(state),
            // Another engine claimed it since we listed it: it is in good hands.
            Err(error) if !explicit && is_lease_held(&error) => {
                eprintln!("run {run_id} was taken over by another engine; skipping it");
            }
            Err(error) if explicit => return Err(error),
            // One run that cannot be driven must not keep the others from being resumed.
            Err(error) => {
                eprintln!("error: run {run_id}: {error:#}; going on with the other runs");
                errors += 1;
            }
        }
    }
    if errors > 0 {
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(exit_code(&states))
}

/// Drives a run with the live view attached. The first Ctrl-C cancels the run; a second one
/// leaves at once, and the run stays resumable.
async fn drive_with_view(
    engine: &Engine,
    run_id: i64,
    step_ids: Vec<String>,
    show_logs: bool,
) -> Result<RunState> {
    let (observer, events) = mpsc::unbounded_channel::<RunEvent>();
    let view = tokio::spawn(watch(events, step_ids, ViewOptions { show_logs }));
    let store = engine.store().clone();
    let terminate = on_sigterm(engine.abandon_handle());
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling run {run_id} (Ctrl-C again to leave it for `cairn resume`)");
            let _ = store.write(|txn| txn.request_cancel(run_id, "ctrl-c"));
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let state = engine.drive(run_id, Some(observer)).await;
    interrupt.abort();
    terminate.abort();
    let _ = view.await;
    Ok(state?)
}

/// SIGTERM (a service manager, `docker stop`): kill the steps of the runs being driven and
/// exit; the runs stay resumable.
pub fn on_sigterm(abandon: exec::Abandon) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut terms) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        if terms.recv().await.is_some() {
            let killed = abandon.now();
            eprintln!(
                "terminated: stopped {killed} step process(es); `cairn resume` continues the run(s)"
            );
            std::process::exit(143);
        }
    })
}

/// Another engine holds the run, or claimed it while this one was driving it.
fn is_lease_held(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<exec::Error>(),
        Some(exec::Error::Store(
            cairn_engine::store::Error::LeaseHeld { .. }
                | cairn_engine::store::Error::LeaseLost { .. }
        ))
    )
}

fn exit_code(states: &[RunState]) -> ExitCode {
    if states.iter().all(|s| *s == RunState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    }
}

/// The trigger context of a manual run for a commit: absolute repository path, full commit id
/// and, when the commit is a branch's head, the branch.
pub fn commit_context(repo: &Path, commit: Option<&str>) -> Result<serde_json::Value> {
    let repo = std::fs::canonicalize(repo)
        .with_context(|| format!("no repository at {}", repo.display()))?;
    let revision = commit.unwrap_or("HEAD");
    let sha = exec::git(
        &repo,
        &["rev-parse", "--verify", &format!("{revision}^{{commit}}")],
    )
    .map_err(|e| anyhow::anyhow!("no commit `{revision}` in {}: {e}", repo.display()))?
    .trim()
    .to_string();
    let branch = exec::git(
        &repo,
        &["branch", "--points-at", &sha, "--format=%(refname:short)"],
    )
    .ok()
    .and_then(|out| out.lines().next().map(str::to_string));
    Ok(json!({
        "trigger": "manual",
        "repo": repo.display().to_string(),
        "commit": sha,
        "branch": branch,
    }))
}

/// "1 step", "3 steps".
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
