//! The `build_agent` step: review → connect → decide → archive → build → inspect → enforce
//! limits → move the branch tag → record → report. Each stage is a function in a sibling
//! module; this file only sequences them and shapes the outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::cache::{self, Decision, Mode};
use super::config::BuildConfig;
use super::context;
use super::docker::{self, BuildRequest};
use super::error::Error;
use super::history::{self, BuildRecord};
use super::naming::{repository_name, tag_name};
use super::review::{Finding, review};
use super::size::format_size;
use super::{prove, rewrite};
use crate::agents::orchestrator::changed_files;
use crate::agents::registry::{Agent, AgentContext, AgentError, AgentFuture};
use crate::llm::{Request, Router, Task};

/// Label carrying the commit an image was built from; the next build diffs against it.
const REVISION_LABEL: &str = "org.opencontainers.image.revision";

pub struct BuildAgent {
    llm: Option<Arc<Router>>,
}

impl BuildAgent {
    pub fn new(llm: Option<Arc<Router>>) -> Self {
        Self { llm }
    }
}

impl Agent for BuildAgent {
    fn name(&self) -> &'static str {
        "build_agent"
    }

    /// `with:` alone decides the build configuration (plus the Docker environment, which a
    /// load-time check leaves out).
    fn check_with(&self, with: &serde_json::Value) -> Result<(), String> {
        super::config::BuildConfig::from_with(with, |_| None)
            .map(|_| ())
            .map_err(|error| match error {
                super::error::Error::Config(message) => message,
                other => other.to_string(),
            })
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        let llm = self.llm.clone();
        Box::pin(async move {
            build(llm.as_deref(), &context).await.map_err(|error| {
                context.logs.line("stderr", error.chain());
                AgentError::new(error.chain())
            })
        })
    }
}

#[tracing::instrument(skip_all, fields(run_id = call.run_id, step_id = %call.step_id))]
async fn build(llm: Option<&Router>, call: &AgentContext) -> Result<Value, Error> {
    let config = BuildConfig::from_with(&call.with, |name| std::env::var(name).ok())?;
    let logs = &call.logs;
    let context_dir = call.workspace.join(&config.context);
    let repository = repository_name(config.image.as_deref(), &call.context, &call.workspace);
    let branch = call
        .context
        .get("branch")
        .and_then(Value::as_str)
        .map(str::to_string);
    let commit = resolve_commit(
        &call.workspace,
        call.context.get("commit").and_then(Value::as_str),
    )
    .await;
    let version_tag = match &commit {
        Some(sha) => tag_name(&sha[..sha.len().min(12)]),
        None => format!("run-{}", call.run_id),
    };
    let image = format!("{repository}:{version_tag}");
    let branch_tag = branch.as_deref().map(tag_name);

    // Review first: it needs no engine, and its findings are worth having even if the build fails.
    let dockerfile_path = context_dir.join(&config.dockerfile);
    let dockerfile_text = std::fs::read_to_string(&dockerfile_path)
        .map_err(|_| Error::NoDockerfile(dockerfile_path.clone()))?;
    let findings = review(
        &dockerfile_text,
        context_dir.join(".dockerignore").is_file(),
    );

    let docker = docker::connect(&config.docker_host, config.tls_cert_path.as_deref()).await?;
    let previous = match &branch_tag {
        Some(tag) => docker::inspect(&docker, &format!("{repository}:{tag}")).await?,
        None => None,
    };
    let previous_revision = previous.as_ref().and_then(|p| {
        p.config
            .as_ref()?
            .labels
            .as_ref()?
            .get(REVISION_LABEL)
            .cloned()
    });
    let changed = match &commit {
        Some(commit) => changed_since(&call.workspace, previous_revision.as_deref(), commit).await,
        None => None,
    };
    let has_previous = previous.is_some() || history::any(&call.store, &repository);
    let categories: Vec<String> = call
        .context
        .pointer("/change/categories")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let decision = cache::decide(&cache::Inputs {
        forced: config.nocache,
        has_previous,
        changed: changed.as_deref(),
        categories: &categories,
        dockerfile: &config.dockerfile,
        full_rebuild_paths: &config.full_rebuild_paths,
    });
    logs.line(
        "stdout",
        format!(
            "build {image}: {} build — {}",
            decision.mode.as_str(),
            decision.reason
        ),
    );

    let archive = context::archive_blocking(&context_dir, &config.dockerfile, Vec::new()).await?;
    logs.line(
        "stdout",
        format!(
            "context: {} files, {} ({} excluded by .dockerignore)",
            archive.files,
            format_size(archive.bytes),
            archive.excluded
        ),
    );
    let context_summary = json!({ "files": archive.files, "bytes": archive.bytes, "excluded": archive.excluded, "dockerignore": archive.has_dockerignore });

    let build_args: HashMap<String, String> = config.build_args.clone().into_iter().collect();
    // One label only: the classic builder adds each as its own step, and every step costs a
    // container. The revision is what the next build diffs against.
    let mut labels = HashMap::new();
    if let Some(commit) = &commit {
        labels.insert(REVISION_LABEL.to_string(), commit.clone());
    }
    let request = BuildRequest {
        tag: &image,
        dockerfile: &config.dockerfile,
        target: config.target.as_deref(),
        build_args: &build_args,
        labels: &labels,
        nocache: decision.mode == Mode::Full,
        pull: config.pull,
    };
    let started = Instant::now();
    let outcome = docker::build(&docker, &request, archive.archive, |line| {
        logs.line("stdout", line.to_string())
    })
    .await?;
    let duration_ms = started.elapsed().as_millis() as u64;

    let built = docker::inspect(&docker, &image)
        .await?
        .ok_or_else(|| Error::BuildFailed {
            tag: image.clone(),
            message: "the engine reported success but has no such image".into(),
        })?;
    let image_id = built
        .id
        .clone()
        .or(outcome.image_id.clone())
        .unwrap_or_default();
    let size = built.size.unwrap_or(0).max(0) as u64;
    let digest = built.repo_digests.as_ref().and_then(|d| d.first().cloned());
    let layers: Vec<Value> = docker::history(&docker, &image)
        .await?
        .iter()
        .map(|layer| {
            let created_by = layer
                .created_by
                .trim_start_matches("/bin/sh -c #(nop) ")
                .trim();
            json!({
                "id": layer.id.trim_start_matches("sha256:").chars().take(12).collect::<String>(),
                "created_by": created_by.chars().take(160).collect::<String>(),
                "size": layer.size,
                "size_human": format_size(layer.size.max(0) as u64),
            })
        })
        .collect();
    logs.line(
        "stdout",
        format!(
            "built {image} ({}) in {:.1} s: {} of {} steps from cache, {}",
            short_id(&image_id),
            duration_ms as f64 / 1000.0,
            outcome.cache_hits,
            outcome.steps,
            format_size(size)
        ),
    );

    if let Some((limit, limit_text)) = &config.max_image_size
        && size > *limit
    {
        return Err(Error::TooLarge {
            tag: image.clone(),
            size: format_size(size),
            limit: limit_text.clone(),
        });
    }
    let mut tags = vec![image.clone()];
    if let Some(tag) = &branch_tag {
        docker::tag(&docker, &image, &repository, tag).await?;
        tags.push(format!("{repository}:{tag}"));
    }

    let last_full = history::last_full(&call.store, &repository, &call.idempotency_key);
    let record = BuildRecord {
        repository: repository.clone(),
        branch: branch.clone(),
        commit: commit.clone(),
        decision: decision.mode.as_str().to_string(),
        duration_ms,
        image_id: image_id.clone(),
        size,
        at_ms: crate::store::now_ms(),
        key: call.idempotency_key.clone(),
    };
    if let Err(error) = history::record(&call.store, &record) {
        tracing::warn!(%error, "failed to record the build in the history");
    }
    let time_saved_ms = match (&last_full, decision.mode) {
        (Some(full), Mode::Cached) => Some(full.duration_ms as i64 - duration_ms as i64),
        _ => None,
    };
    if let (Some(saved), Some(full)) = (time_saved_ms, &last_full) {
        logs.line("stdout", format!("cached build took {duration_ms} ms; the last full build took {} ms: {saved} ms saved", full.duration_ms));
    }

    let previous_size = previous
        .as_ref()
        .and_then(|p| p.size)
        .map(|s| s.max(0) as u64);
    let size_change = previous_size.map(|before| size as i64 - before as i64);
    if let (Some(before), Some(change)) = (previous_size, size_change) {
        logs.line(
            "stdout",
            format!(
                "size {} (was {}, {change:+} bytes)",
                format_size(size),
                format_size(before)
            ),
        );
    }

    let proposal = match &config.optimize {
        None => {
            json!({ "status": "none", "reason": "`optimize:` is off: no rewritten Dockerfile is proposed" })
        }
        Some(optimize) => {
            let proving = prove::Built {
                docker: &docker,
                context_dir: &context_dir,
                dockerfile: &config.dockerfile,
                original_text: &dockerfile_text,
                image: &image,
                build_args: &build_args,
                target: config.target.as_deref(),
                scratch_name: format!("{repository}-optimize-{}", call.run_id),
            };
            let in_context = |path: &str| context_dir.join(path).is_file();
            match rewrite::propose(&dockerfile_text, &in_context) {
                None => {
                    json!({ "status": "none", "reason": "no finding has a rewrite the rules can make" })
                }
                Some(rewritten) => {
                    logs.line(
                        "stdout",
                        format!(
                            "optimize: proving a rewritten Dockerfile ({} changes)",
                            rewritten.changes.len()
                        ),
                    );
                    let log = |line: String| logs.line("stdout", line);
                    let verdict = prove::prove(&proving, &rewritten, optimize, &log).await;
                    logs.line(
                        "stdout",
                        format!("optimize: proposal {}: {}", verdict.status, verdict.reason),
                    );
                    serde_json::to_value(&verdict).unwrap_or(Value::Null)
                }
            }
        }
    };
    let review_report = explain(llm, call, &findings, proposal).await;

    Ok(json!({
        "image": image,
        "repository": repository,
        "tags": tags,
        "id": image_id,
        "digest": digest,
        "size": size,
        "size_human": format_size(size),
        "previous": previous.as_ref().map(|p| json!({
            "id": p.id,
            "size": previous_size,
            "revision": previous_revision,
        })),
        "size_change": size_change,
        "decision": decision.mode.as_str(),
        "reason": decision.reason,
        "cache": cache_report(&decision, changed.as_deref(), &config, outcome.cache_hits, outcome.steps),
        "duration_ms": duration_ms,
        "last_full_build_ms": last_full.as_ref().map(|b| b.duration_ms),
        "time_saved_ms": time_saved_ms,
        "layers": layers,
        "context": context_summary,
        "review": review_report,
        "docker_host": config.docker_host,
        "commit": commit,
    }))
}

fn cache_report(
    decision: &Decision,
    changed: Option<&[String]>,
    config: &BuildConfig,
    hits: usize,
    steps: usize,
) -> Value {
    json!({
        "nocache": decision.mode == Mode::Full,
        "pull": config.pull,
        "triggers": decision.triggers,
        "changed_files": changed,
        "cache_hits": hits,
        "steps": steps,
    })
}

/// The findings, explained by the local model when there is one (its rules fallback is the
/// findings' own text), and the proposal status. A small model can loop on one sentence; such
/// an answer is kept out of the report (the findings' text stands instead) and the reason noted.
async fn explain(
    llm: Option<&Router>,
    call: &AgentContext,
    findings: &[Finding],
    proposal: Value,
) -> Value {
    let text: String = findings.iter().map(|f| format!("{f}\n")).collect();
    for finding in findings {
        call.logs.line("stdout", format!("review: {finding}"));
    }
    let mut note = None;
    let (explanation, explained_by) = match (llm, findings.is_empty()) {
        (_, true) => ("no findings".to_string(), "rules"),
        (None, false) => (text.clone(), "rules"),
        (Some(router), false) => {
            let scope = crate::agents::registry::call_scope(call);
            // Findings only, not the Dockerfile: they carry the line and the instruction, the
            // prompt stays short, and no ENV value reaches a model.
            let request = Request {
                task: Task::ReviewDockerfile,
                instruction: "You review Dockerfiles. For each finding, write one short sentence on how to fix it. Do not add findings. Stop after the last finding.".into(),
                input: text.clone(),
                diff: None,
            };
            let rules_text = text.clone();
            let answer = router
                .ask(Some(&scope), request, move || Value::String(rules_text))
                .await;
            match repetitive(&answer.text) {
                Some(why) => {
                    note = Some(format!(
                        "the {} tier's explanation was discarded: {why}",
                        answer.tier.as_str()
                    ));
                    (text.clone(), "rules")
                }
                None => (answer.text, answer.tier.as_str()),
            }
        }
    };
    if let Some(note) = &note {
        call.logs.line("stdout", format!("review: {note}"));
    }
    json!({
        "findings": findings,
        "explanation": explanation,
        "explained_by": explained_by,
        "explanation_note": note,
        // Only a proposal that was built and measured is ever `accepted` (`prove.rs`).
        "proposal": proposal,
    })
}

/// Why `text` is a degenerate answer (empty, or one sentence said again and again), if it is.
fn repetitive(text: &str) -> Option<String> {
    let sentences: Vec<String> = text
        .split(['.', '\n'])
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|s| s.len() > 3)
        .collect();
    if sentences.is_empty() {
        return Some("it was empty".into());
    }
    let mut counts = std::collections::HashMap::new();
    for sentence in &sentences {
        *counts.entry(sentence.as_str()).or_insert(0usize) += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    (most >= 3).then(|| format!("one sentence repeats {most} times"))
}

/// The full SHA of `commit` in the checkout; `HEAD` when the context names none but the
/// workspace is a checkout.
async fn resolve_commit(workspace: &Path, commit: Option<&str>) -> Option<String> {
    let workspace = workspace.to_path_buf();
    let revision = format!("{}^{{commit}}", commit.unwrap_or("HEAD"));
    let given = commit.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        crate::exec::git(&workspace, &["rev-parse", "--verify", &revision])
    })
    .await
    .ok()
    .and_then(Result::ok)
    .map(|sha| sha.trim().to_string())
    .or(given)
}

/// Paths changed since `previous` (the commit the branch's image was built from) when git
/// knows it as an ancestor, else the commit's own diff; `None` when git cannot tell.
async fn changed_since(
    workspace: &Path,
    previous: Option<&str>,
    commit: &str,
) -> Option<Vec<String>> {
    let workspace: PathBuf = workspace.to_path_buf();
    let previous = previous.map(str::to_string);
    let commit = commit.to_string();
    tokio::task::spawn_blocking(move || {
        match previous {
            // Rebuilding the commit the image already holds: nothing changed.
            Some(previous) if previous == commit => return Some(Vec::new()),
            Some(previous) => {
                let ancestor = crate::exec::git(
                    &workspace,
                    &["merge-base", "--is-ancestor", &previous, &commit],
                )
                .is_ok();
                if ancestor {
                    let names = crate::exec::git(
                        &workspace,
                        &["diff", "--name-only", "--no-renames", &previous, &commit],
                    )
                    .ok()?;
                    return Some(
                        names
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect(),
                    );
                }
            }
            None => {}
        }
        changed_files(&workspace, &commit)
            .ok()
            .map(|files| files.into_iter().map(|f| f.path).collect())
    })
    .await
    .ok()
    .flatten()
}

fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::repetitive;

    #[test]
    fn looping_answers_are_recognized() {
        assert!(repetitive("Add USER. Add USER. Add USER. Add USER.").is_some());
        assert!(repetitive("  ").is_some());
        assert!(
            repetitive(
                "Add `USER 65534`. Move the token to a runtime secret. Add a .dockerignore."
            )
            .is_none()
        );
    }
}
