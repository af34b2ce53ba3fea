//! `cairn serve`: the long-running engine: resumes interrupted runs, polls the repositories of
//! every workflow with a `trigger:` on its cron schedule, and drives the runs new commits start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use cairn_engine::api::{self, ApiOptions, ApiState, HookSecrets, ServedWorkflow};
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
    /// Serve the HTTP API (`/api/v1`), `/metrics` and webhooks (`/hooks/…`) on this address
    /// (`--listen` alone: 127.0.0.1:8700). Not with `--once`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8700")]
    pub listen: Option<String>,
    /// Let anyone who reaches the address read (runs, logs, metrics) without a token; writing
    /// still needs a `write` token.
    #[arg(long, requires = "listen")]
    pub public_read: bool,
    /// Serve HTTPS (rustls) with this PEM certificate chain (with `--tls-key`).
    #[arg(long, value_name = "PEM", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "PEM", requires_all = ["listen", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
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
    let (commands, listening) = match (&args.listen, args.once) {
        (Some(_), true) => {
            eprintln!("error: --listen serves until stopped; it cannot go with --once");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        (Some(address), false) => {
            let hooks = match hook_secrets(&watches) {
                Ok(hooks) => hooks,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            let (sender, receiver) = mpsc::unbounded_channel();
            let state = ApiState::new(
                engine.clone(),
                sender,
                served_workflows(&files, &watches, &names),
                hooks,
                ApiOptions {
                    public_read: args.public_read,
                    tls: args.tls_cert.is_some(),
                },
            )?;
            let tls = args
                .tls_cert
                .clone()
                .zip(args.tls_key.clone())
                .map(|(cert, key)| api::Tls { cert, key });
            let scheme = if tls.is_some() { "https" } else { "http" };
            let listening = match api::listen(address, state, tls).await {
                Ok(listening) => listening,
                Err(error) => {
                    eprintln!("error: {error}: {}", error_chain(&error));
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            };
            // Scripts wait for this line (and read the port when given port 0).
            eprintln!("listening on {scheme}://{}", listening.address);
            (Some(receiver), Some(listening))
        }
        (None, _) => (None, None),
    };
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
        commands,
    };
    let terminate = super::run::on_sigterm(engine.abandon_handle());
    let report = trigger::serve(engine, watches, options, Some(observer)).await;
    terminate.abort();
    if let Some(listening) = listening {
        listening.task.abort();
    }
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

/// Each watched repository's webhook secret, read from the environment variable its workflow
/// names; a named variable that is unset or empty is an error at start, not a 401 later.
fn hook_secrets(watches: &[Watch]) -> Result<HookSecrets, String> {
    let mut secrets = std::collections::BTreeMap::new();
    for watch in watches {
        for repository in &watch.trigger.repositories {
            let Some(variable) = &repository.webhook_secret_env else {
                continue;
            };
            match std::env::var(variable) {
                Ok(secret) if !secret.is_empty() => {
                    secrets.insert(repository.url.clone(), secret);
                }
                _ => {
                    return Err(format!(
                        "{}: repository {} names webhook_secret_env `{variable}`, but that \
                         environment variable is unset or empty",
                        watch.file_name, repository.url
                    ));
                }
            }
        }
    }
    Ok(HookSecrets::new(secrets))
}

/// The workflows `POST /api/v1/runs` may start, by name: every file given, triggered or not.
fn served_workflows(
    files: &[PathBuf],
    watches: &[Watch],
    names: &[&str],
) -> std::collections::BTreeMap<String, ServedWorkflow> {
    let mut served = std::collections::BTreeMap::new();
    for watch in watches {
        served.insert(
            watch.name.clone(),
            ServedWorkflow {
                file_name: watch.file_name.clone(),
                source_path: watch.source_path.clone(),
                definition: watch.definition.clone(),
            },
        );
    }
    let options = cairn_engine::pipeline::LoadOptions {
        known_agents: names,
        check_with: None,
    };
    for file in files {
        let Ok(workflow) = cairn_engine::pipeline::load_file(file, &options) else {
            continue;
        };
        let Ok(definition) = cairn_engine::pipeline::limits::read_limited(file) else {
            continue;
        };
        served
            .entry(workflow.name)
            .or_insert_with(|| ServedWorkflow {
                file_name: file.display().to_string(),
                source_path: std::fs::canonicalize(file)
                    .ok()
                    .map(|p| p.display().to_string()),
                definition,
            });
    }
    served
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
