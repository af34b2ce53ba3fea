//! `cairn serve`: the long-running engine: resumes interrupted runs, polls the repositories of
//! every workflow with a `trigger:` on its cron schedule, and drives the runs new commits start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use cairn_engine::exec::RunEvent;
use cairn_engine::store::RunState;
use cairn_engine::trigger::{self, ServeOptions, Watch};

use super::settings::Settings;
use super::view::{ViewOptions, watch};
use super::{EXIT_INVALID, EXIT_RUN_FAILED};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Workflow files or directories of them (default: ./workflows).
    pub workflows: Vec<PathBuf>,
    /// Poll every repository once, drive the new runs to the end, and exit
    /// (exit 1 if a run failed or a repository could not be polled).
    #[arg(long)]
    pub once: bool,
    /// Most runs driven at once.
    #[arg(long, default_value_t = 4)]
    pub max_runs: usize,
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn serve(home: Option<PathBuf>, args: &ServeArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, args.concurrency)?;
    let engine = Arc::new(settings.engine()?);
    let names = engine.agent_names();
    let mut files = Vec::new();
    let roots = if args.workflows.is_empty() {
        vec![PathBuf::from("workflows")]
    } else {
        args.workflows.clone()
    };
    for root in roots {
        if !root.exists() {
            if args.workflows.is_empty() {
                eprintln!(
                    "error: there is no ./workflows directory here; name the workflow files or \
                     directories to serve (`cairn serve PATH...`)"
                );
            } else {
                eprintln!("error: {}: no such file or directory", root.display());
            }
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        if root.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
                .with_context(|| format!("failed to read {}", root.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(root);
        }
    }
    let mut watches = Vec::new();
    let mut invalid = false;
    for file in &files {
        match Watch::load(file, &names) {
            Ok(Some(watch)) => {
                eprintln!(
                    "watching {} for `{}` ({})",
                    describe(&watch),
                    watch.name,
                    file.display()
                );
                watches.push(watch);
            }
            Ok(None) => eprintln!("{}: no trigger, not watched", file.display()),
            Err(error) => {
                eprintln!("{error}");
                invalid = true;
            }
        }
    }
    if invalid {
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let (observer, events) = mpsc::unbounded_channel::<RunEvent>();
    let view = tokio::spawn(watch(
        events,
        Vec::new(),
        ViewOptions {
            show_logs: !args.quiet,
        },
    ));
    let options = ServeOptions {
        mirrors: settings.home.join("mirrors"),
        max_runs: args.max_runs,
        once: args.once,
        retention: Some((settings.work_dir(), settings.retention()?)),
    };
    let terminate = super::run::on_sigterm(engine.abandon_handle());
    let report = trigger::serve(engine, watches, options, Some(observer)).await;
    terminate.abort();
    let _ = view.await;
    for (url, error) in &report.failed_repositories {
        eprintln!("repository {url} could not be polled: {error}");
    }
    let ok = report.failed_repositories.is_empty()
        && report
            .states
            .iter()
            .all(|(_, state)| *state == RunState::Succeeded);
    eprintln!(
        "resumed {} run(s), started {} run(s)",
        report.resumed.len(),
        report.started.len()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    })
}

fn describe(watch: &Watch) -> String {
    let repos: Vec<String> = watch
        .trigger
        .repositories
        .iter()
        .map(|r| {
            if r.branches.is_empty() {
                r.url.clone()
            } else {
                format!("{} [{}]", r.url, r.branches.join(", "))
            }
        })
        .collect();
    let schedule = watch.trigger.schedule.as_deref().unwrap_or("no schedule");
    format!("{} on `{schedule}`", repos.join(", "))
}
