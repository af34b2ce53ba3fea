//! The `deploy_agent` step: read the config → wait for the deploy window → connect (Docker, HAProxy) → recover an
//! interrupted deploy → record the deploy as in progress → run the strategy → record the
//! outcome → retire old releases past `keep_previous` → notify → report. A rollback fails the
//! step, with the reason and the measured rollback time in its message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::choose::choose;
use super::config::DeployConfig;
use super::docker::{self, Replica};
use super::error::Error;
use super::managed;
use super::notify::{Alert, Notifier, Severity};
use super::probe;
use super::proxy::Proxy;
use super::state::{self, InProgress, Record, Release};
use super::strategy::Deployment;
use crate::agents::registry::{Agent, AgentContext, AgentError, AgentFuture};
use crate::exec::LogSink;
use crate::llm::Router;

pub struct DeployAgent {
    llm: Option<Arc<Router>>,
}

impl DeployAgent {
    /// Without a router the strategy is the rules' alone.
    pub fn new(llm: Option<Arc<Router>>) -> DeployAgent {
        DeployAgent { llm }
    }
}

impl Agent for DeployAgent {
    fn name(&self) -> &'static str {
        "deploy_agent"
    }

    fn run(&self, context: AgentContext) -> AgentFuture {
        let llm = self.llm.clone();
        Box::pin(async move { step_result(&context, deploy(&context, llm.as_deref()).await) })
    }

    /// The run's own parse, with a stand-in for what only the run knows (the built image, the
    /// risk, the workspace): whatever it still refuses is wrong in `with:` itself.
    fn check_with(&self, with: &Value) -> Result<(), String> {
        let context = serde_json::json!({ "image": "load-check:latest", "risk": "medium" });
        let workspace = std::path::Path::new("/nonexistent/work/run-0/src");
        super::config::DeployConfig::from_with(with, &context, workspace, |_| None)
            .map(|_| ())
            .map_err(|error| match error {
                super::error::Error::Config(message) => message,
                other => other.to_string(),
            })
    }
}

/// A deploy or monitor step's end: outputs, or a failure (a rollback's message, or an error
/// with its chain) that is also the step log's last line.
pub(super) fn step_result(
    context: &AgentContext,
    result: Result<Result<Value, String>, Error>,
) -> Result<Value, AgentError> {
    let message = match result {
        Ok(Ok(outputs)) => return Ok(outputs),
        Ok(Err(rolled_back)) => rolled_back,
        Err(error) => error.chain(),
    };
    context.logs.line("stderr", message.clone());
    Err(AgentError::new(message))
}

/// Outputs of a deploy, or the message of a rollback.
#[tracing::instrument(skip_all, fields(run_id = call.run_id, step_id = %call.step_id))]
async fn deploy(call: &AgentContext, llm: Option<&Router>) -> Result<Result<Value, String>, Error> {
    let mut config = DeployConfig::from_with(&call.with, &call.context, &call.workspace, |name| {
        std::env::var(name).ok()
    })?;
    let logs = &call.logs;
    let store = &call.store;
    let key = call.idempotency_key.clone();
    let subject = commit_subject(call);
    let branch = call
        .context
        .get("branch")
        .and_then(Value::as_str)
        .unwrap_or("");
    let scope = crate::agents::registry::call_scope(call);
    (config.strategy, config.strategy_reason) =
        choose(&config, &subject, branch, llm, Some(&scope)).await;
    logs.line(
        "stdout",
        format!(
            "deploy {} {} ({}) with {} ({})",
            config.service,
            config.version,
            config.image,
            config.strategy.as_str(),
            config.strategy_reason
        ),
    );
    // Nothing starts outside the deploy's window or inside a freeze (unless a person approves).
    let window = super::gate::wait_for_window(
        store,
        &config,
        &key,
        super::choose::is_hotfix(&subject, branch),
        logs,
    )
    .await?;
    let docker = docker::connect(&config).await?;
    let proxy = Proxy::new(&config.proxy_socket, &config.backend);
    let mut notifier = Notifier::new(
        config.notify.clone(),
        call.run_id,
        &config.service,
        Some(call.store.clone()),
    );

    // One traffic change of a service at a time: a second deploy of it waits here, and a
    // manual or monitor rollback waits for (or is refused by) this one.
    let _traffic = state::lock(
        store,
        &config.service,
        &format!("deploy run {} step {}", call.run_id, call.step_id),
        // The step's own timeout bounds the wait.
        state::Wait::Up(Duration::from_secs(24 * 3600)),
        |other| {
            logs.line(
                "stdout",
                format!(
                    "waiting for {} to finish with {}",
                    other.purpose, config.service
                ),
            );
        },
    )
    .await?;
    let current = state::load(store, &config.service)?;
    if let Some(listen) = &config.listen {
        let dir = config.proxy_socket.parent().unwrap_or(Path::new("."));
        if managed::ensure(dir, &config.backend, listen).await? {
            let mut alive = Vec::new();
            for replica in current.active.iter().flat_map(|a| a.replicas.iter()) {
                if probe::healthy(&probe::client(), &replica.address, &config.health_path).await {
                    alive.push(replica.clone());
                }
            }
            managed::restore(&proxy, &alive).await?;
            logs.line("stdout", format!("started HAProxy on {listen} (socket {}); {} replica(s) of the active release back in rotation", config.proxy_socket.display(), alive.len()));
        }
    }
    if current.active.as_ref().is_some_and(|a| a.key == key) {
        logs.line(
            "stdout",
            "this step's release is already active (an earlier attempt finished it)",
        );
        return Ok(Ok(
            json!({ "service": config.service, "version": config.version, "outcome": "deployed", "resumed": true }),
        ));
    }
    let recovered = match &current.in_progress {
        Some(interrupted) => {
            Some(recover(&docker, &proxy, &config, interrupted, store, logs).await?)
        }
        None => None,
    };
    let old = serving(&proxy, current.active.as_ref()).await?;
    let replaces = current.active.clone().map(|release| Release {
        replicas: old.clone(),
        ..release
    });
    let started_ms = crate::store::now_ms();
    state::update(store, &config.service, |s| {
        s.in_progress = Some(InProgress {
            key: key.clone(),
            version: config.version.clone(),
            strategy: config.strategy.as_str().into(),
            replaces: replaces.clone(),
            started_ms,
        });
    })?;

    let started = Instant::now();
    let deployment = Deployment {
        docker: &docker,
        store,
        proxy: &proxy,
        config: &config,
        key: &key,
        prefix: format!(
            "cairn-{}-{}",
            config.service,
            &hex::encode(Sha256::digest(key.as_bytes()))[..10]
        ),
        old: old.clone(),
        logs,
        client: probe::client(),
        started,
        events: Vec::new(),
        started_replicas: Vec::new(),
    };
    let result = deployment.run().await?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let outcome = if result.rolled_back {
        "rolled_back"
    } else {
        "deployed"
    };
    let details = json!({ "verdicts": result.verdicts, "events": result.events });
    let now = crate::store::now_ms();
    let record = Record {
        key: key.clone(),
        version: config.version.clone(),
        strategy: config.strategy.as_str().into(),
        outcome: outcome.into(),
        reason: result.reason.clone(),
        rollback_ms: result.rollback_ms,
        at_ms: now,
        details: details.clone(),
    };
    let release = Release {
        key: key.clone(),
        version: config.version.clone(),
        image: config.image.clone(),
        replicas: result.replicas.clone(),
        since_ms: now,
    };
    let keep_ms = config.keep_previous.as_millis() as i64;
    let expired = state::update(store, &config.service, |s| {
        s.in_progress = None;
        s.held = None;
        s.proxy = Some(state::ProxyAddress {
            socket: config.proxy_socket.display().to_string(),
            backend: config.backend.clone(),
            listen: config.listen.clone(),
            health_path: config.health_path.clone(),
        });
        s.history.push(record);
        if !result.rolled_back
            && let Some(previous) = s.active.replace(release)
        {
            s.retired.push((
                now,
                Release {
                    replicas: old.clone(),
                    ..previous
                },
            ));
        }
        let (expired, kept): (Vec<_>, Vec<_>) =
            s.retired.drain(..).partition(|(at, _)| now - at >= keep_ms);
        s.retired = kept;
        expired
    })?;
    let kept = state::load(store, &config.service)?;
    let running: Vec<_> = kept
        .active
        .iter()
        .chain(kept.retired.iter().map(|(_, r)| r))
        .flat_map(|r| r.replicas.iter().cloned())
        .collect();
    if let Err(message) = config.metrics.publish_targets(&config.service, &running) {
        logs.line("stderr", message);
    }
    for (_, release) in expired {
        for replica in &release.replicas {
            proxy.delete_server(&replica.name).await?;
            docker::remove(&docker, &replica.name).await?;
        }
        logs.line(
            "stdout",
            format!(
                "removed retired release {} ({} replicas)",
                release.version,
                release.replicas.len()
            ),
        );
    }

    let rollback_text = result.rollback_ms.map(|ms| format!(" (the previous release served all traffic again {ms} ms after the first anomalous sample, or after the decision when there was none)")).unwrap_or_default();
    if result.rolled_back {
        notifier
            .notify(Alert {
                severity: Severity::Critical,
                key: format!("rollback:{}", config.service),
                title: format!("{} {} rolled back", config.service, config.version),
                text: format!("{}{rollback_text}", result.reason),
                success: false,
            })
            .await;
    } else {
        notifier
            .notify(Alert {
                severity: Severity::Info,
                key: format!("deployed:{}:{}", config.service, config.version),
                title: format!("{} {} deployed", config.service, config.version),
                text: result.reason.clone(),
                success: true,
            })
            .await;
    }
    notifier.flush().await;
    let replicas: Vec<Value> = result
        .replicas
        .iter()
        .map(|r| json!({ "name": r.name, "address": r.address }))
        .collect();
    let outputs = json!({
        "service": config.service,
        "version": config.version,
        "image": config.image,
        "strategy": config.strategy.as_str(),
        "strategy_reason": config.strategy_reason,
        "outcome": outcome,
        "reason": result.reason,
        "replicas": replicas,
        "previous": current.active.as_ref().map(|a| json!({ "version": a.version, "image": a.image })),
        "recovered": recovered,
        "window": window,
        "verdicts": details["verdicts"],
        "events": details["events"],
        "rollback_ms": result.rollback_ms,
        "duration_ms": duration_ms,
        "proxy_socket": config.proxy_socket.display().to_string(),
        "backend": config.backend,
        "listen": config.listen,
        "health_path": config.health_path,
        "metrics_path": config.metrics.to_outputs().0,
        "prometheus": config.metrics.to_outputs().1,
        "notifications": notifier.report(),
    });
    if result.rolled_back {
        return Ok(Err(format!(
            "deploy of {} {} rolled back: {}{rollback_text}",
            config.service, config.version, result.reason
        )));
    }
    Ok(Ok(outputs))
}

/// The first line of the deployed commit's message ("" when it cannot be read).
fn commit_subject(call: &AgentContext) -> String {
    let Some(commit) = call.context.get("commit").and_then(Value::as_str) else {
        return String::new();
    };
    crate::exec::git(&call.workspace, &["log", "-1", "--format=%s", commit])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The servers of the active release that are in the proxy; without a recorded release (a
/// lost state file), whatever the backend has in rotation.
async fn serving(proxy: &Proxy, active: Option<&Release>) -> Result<Vec<Replica>, Error> {
    let servers = proxy.servers().await?;
    Ok(match active {
        Some(release) => release
            .replicas
            .iter()
            .filter(|r| servers.iter().any(|s| s.name == r.name))
            .cloned()
            .collect(),
        None => servers
            .into_iter()
            .filter(|s| !s.in_maintenance)
            .map(|s| Replica {
                name: s.name,
                address: s.address,
            })
            .collect(),
    })
}

/// A deploy that was running when the engine died: its release is taken out and the one it
/// replaced restored, so traffic is never left split. Returns what was done.
async fn recover(
    docker: &bollard::Docker,
    proxy: &Proxy,
    config: &DeployConfig,
    interrupted: &InProgress,
    store: &crate::store::Store,
    logs: &LogSink,
) -> Result<Value, Error> {
    let started = Instant::now();
    for replica in interrupted.replaces.iter().flat_map(|r| r.replicas.iter()) {
        proxy
            .set_weight(&replica.name, super::proxy::WEIGHT_SCALE / 2)
            .await?;
        proxy.set_state(&replica.name, "ready").await?;
    }
    let names = docker::of_key(docker, &config.service, &interrupted.key).await?;
    for name in &names {
        if proxy.servers().await?.iter().any(|s| &s.name == name) {
            proxy.set_state(name, "maint").await?;
        }
    }
    let restored_ms = started.elapsed().as_millis() as u64;
    for name in &names {
        proxy.delete_server(name).await?;
        docker::remove(docker, name).await?;
    }
    let reason = format!(
        "deploy {} of {} was interrupted (engine crash); its {} replicas were removed and the previous release restored",
        interrupted.key,
        interrupted.version,
        names.len()
    );
    logs.line("stdout", reason.clone());
    state::update(store, &config.service, |s| {
        s.in_progress = None;
        // A canary held for a person died with its engine: the person has nothing left to
        // decide, the previous release serves again.
        s.held = None;
        s.history.push(Record {
            key: interrupted.key.clone(),
            version: interrupted.version.clone(),
            strategy: interrupted.strategy.clone(),
            outcome: "recovered".into(),
            reason: reason.clone(),
            rollback_ms: Some(restored_ms),
            at_ms: crate::store::now_ms(),
            details: Value::Null,
        });
    })?;
    Ok(
        json!({ "key": interrupted.key, "version": interrupted.version, "removed": names, "restore_ms": restored_ms }),
    )
}
