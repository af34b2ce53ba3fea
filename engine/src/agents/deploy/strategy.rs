//! The four strategies over one set of primitives: start a replica and wait for its health
//! check, put it in rotation, retire the old release, and roll back (old servers ready at their
//! weights, new servers in maintenance, then deleted with their containers).
//!
//! Rolling replaces replicas one at a time; blue-green starts the whole new set, checks it, then
//! switches; hotfix is blue-green with the checks only (no monitor window); canary shifts a
//! growing share of traffic to one new replica and analyses it against the baseline at every
//! step (see `analysis.rs`), then promotes.

use std::time::Duration;

use bollard::Docker;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::analysis::{Outcome, Verdict, analyse};
use super::config::{DeployConfig, Inconclusive, Strategy};
use super::docker::{self, Replica};
use super::error::Error;
use super::metrics::Snapshot;
use super::probe;
use super::proxy::{Proxy, WEIGHT_SCALE, split_weights};
use super::state::{self, Decision, Held};
use crate::exec::LogSink;

/// How long a retiring server may finish the requests it has.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Equal weight of every server when no split is wanted.
const EVEN: u32 = WEIGHT_SCALE / 2;

/// How a deploy ended.
#[derive(Debug)]
pub struct Result {
    pub rolled_back: bool,
    pub reason: String,
    pub replicas: Vec<Replica>,
    pub verdicts: Vec<Value>,
    /// From the first anomalous sample (or failed check) to the old release serving all traffic.
    pub rollback_ms: Option<u64>,
    pub events: Vec<Value>,
}

pub struct Deployment<'a> {
    pub docker: &'a Docker,
    pub store: &'a crate::store::Store,
    pub proxy: &'a Proxy,
    pub config: &'a DeployConfig,
    pub key: &'a str,
    /// Replica names are `{prefix}-{index}`.
    pub prefix: String,
    pub old: Vec<Replica>,
    pub logs: &'a LogSink,
    pub client: reqwest::Client,
    pub started: Instant,
    pub events: Vec<Value>,
    /// Replicas this deploy started, for the Prometheus targets file.
    pub started_replicas: Vec<Replica>,
}

impl Deployment<'_> {
    fn event(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.logs.line("stdout", what.clone());
        self.events
            .push(json!({ "at_ms": self.started.elapsed().as_millis() as u64, "event": what }));
    }

    pub async fn run(self) -> std::result::Result<Result, Error> {
        match self.config.strategy {
            Strategy::Rolling => self.rolling().await,
            Strategy::BlueGreen | Strategy::Hotfix => self.switch().await,
            Strategy::Canary => self.canary().await,
        }
    }

    fn done(self, replicas: Vec<Replica>, reason: String) -> Result {
        Result {
            rolled_back: false,
            reason,
            replicas,
            verdicts: Vec::new(),
            rollback_ms: None,
            events: self.events,
        }
    }

    /// Starts replica `index` and waits for its health check; `Err` is the reason it failed.
    async fn start_healthy(
        &mut self,
        index: usize,
    ) -> std::result::Result<std::result::Result<Replica, String>, Error> {
        let name = format!("{}-{index}", self.prefix);
        let replica = match docker::start(self.docker, self.config, &name, self.key).await {
            Ok(replica) => replica,
            Err(Error::Unhealthy(message)) => return Ok(Err(message)),
            Err(other) => return Err(other),
        };
        let deadline = Instant::now() + self.config.health_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let slice = remaining.min(Duration::from_millis(500));
            if let Ok(took) = probe::wait_healthy(
                &self.client,
                &replica.address,
                &self.config.health_path,
                slice,
            )
            .await
            {
                self.event(format!(
                    "{name} ({}) healthy after {} ms",
                    replica.address,
                    took.as_millis()
                ));
                self.started_replicas.push(replica.clone());
                let listed: Vec<Replica> = self
                    .old
                    .iter()
                    .chain(self.started_replicas.iter())
                    .cloned()
                    .collect();
                if let Err(message) = self
                    .config
                    .metrics
                    .publish_targets(&self.config.service, &listed)
                {
                    self.event(message);
                }
                return Ok(Ok(replica));
            }
            if let Some(code) = docker::exited(self.docker, &name).await? {
                return Ok(Err(format!(
                    "{name} crashed (exit code {code}) before it became healthy"
                )));
            }
            if remaining.is_zero() {
                return Ok(Err(format!(
                    "{name} failed its health check {} for {:.1} s",
                    self.config.health_path,
                    self.config.health_timeout.as_secs_f64()
                )));
            }
        }
    }

    /// The old release takes all traffic again; the new servers leave rotation at once, then
    /// are deleted with their containers. Returns when the old release served everything.
    async fn roll_back(
        &mut self,
        new: &[Replica],
        extra: &[String],
    ) -> std::result::Result<Instant, Error> {
        for old in self.old.clone() {
            self.proxy.set_weight(&old.name, EVEN).await?;
            self.proxy.set_state(&old.name, "ready").await?;
        }
        let names: Vec<String> = new
            .iter()
            .map(|r| r.name.clone())
            .chain(extra.iter().cloned())
            .collect();
        for name in &names {
            if self.proxy.servers().await?.iter().any(|s| &s.name == name) {
                self.proxy.set_state(name, "maint").await?;
            }
        }
        let restored = Instant::now();
        self.event(format!(
            "rolled back: {} serve all traffic",
            if self.old.is_empty() {
                "no servers (first deploy)".to_string()
            } else {
                self.old
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        for name in &names {
            self.proxy.delete_server(name).await?;
            docker::remove(self.docker, name).await?;
        }
        Ok(restored)
    }

    fn rolled_back(self, reason: String, verdicts: Vec<Value>, rollback_ms: Option<u64>) -> Result {
        Result {
            rolled_back: true,
            reason,
            replicas: self.old.clone(),
            verdicts,
            rollback_ms,
            events: self.events,
        }
    }

    async fn rolling(mut self) -> std::result::Result<Result, Error> {
        let mut new: Vec<Replica> = Vec::new();
        for index in 0..self.config.replicas {
            match self.start_healthy(index).await? {
                Ok(replica) => {
                    self.proxy
                        .add_server(&replica.name, &replica.address, EVEN)
                        .await?;
                    self.event(format!("{} in rotation", replica.name));
                    new.push(replica);
                }
                Err(reason) => {
                    let failed_at = Instant::now();
                    self.event(format!("health check failed: {reason}"));
                    let name = format!("{}-{index}", self.prefix);
                    let restored = self.roll_back(&new, std::slice::from_ref(&name)).await?;
                    docker::remove(self.docker, &name).await?;
                    let ms = restored.duration_since(failed_at).as_millis() as u64;
                    return Ok(self.rolled_back(
                        format!("health check failed: {reason}"),
                        Vec::new(),
                        Some(ms),
                    ));
                }
            }
            if let Some(old) = self.old.get(index).cloned() {
                self.proxy.retire(&old.name, DRAIN_GRACE).await?;
                self.event(format!("{} retired", old.name));
            }
        }
        for old in self.old.clone().iter().skip(self.config.replicas) {
            self.proxy.retire(&old.name, DRAIN_GRACE).await?;
            self.event(format!("{} retired", old.name));
        }
        Ok(self.done(
            new,
            "rolled out one replica at a time, each healthy before it took traffic".into(),
        ))
    }

    async fn switch(mut self) -> std::result::Result<Result, Error> {
        let mut new = Vec::new();
        for index in 0..self.config.replicas {
            match self.start_healthy(index).await? {
                Ok(replica) => new.push(replica),
                Err(reason) => {
                    let failed_at = Instant::now();
                    self.event(format!("health check failed: {reason}"));
                    let restored = self
                        .roll_back(&new, &[format!("{}-{index}", self.prefix)])
                        .await?;
                    for replica in &new {
                        docker::remove(self.docker, &replica.name).await?;
                    }
                    docker::remove(self.docker, &format!("{}-{index}", self.prefix)).await?;
                    return Ok(self.rolled_back(
                        format!("health check failed: {reason}"),
                        Vec::new(),
                        Some(restored.duration_since(failed_at).as_millis() as u64),
                    ));
                }
            }
        }
        for replica in &new {
            self.proxy
                .add_server(&replica.name, &replica.address, EVEN)
                .await?;
        }
        for old in self.old.clone() {
            self.proxy.retire(&old.name, DRAIN_GRACE).await?;
        }
        self.event(format!(
            "switched: {} serve all traffic",
            new.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        // The new set must stay up once it has the traffic; the old set is still running.
        for replica in new.clone() {
            if !probe::healthy(&self.client, &replica.address, &self.config.health_path).await {
                let failed_at = Instant::now();
                let restored = self.roll_back(&new, &[]).await?;
                let reason = format!("{} failed its health check after the switch", replica.name);
                return Ok(self.rolled_back(
                    reason,
                    Vec::new(),
                    Some(restored.duration_since(failed_at).as_millis() as u64),
                ));
            }
        }
        let how = if self.config.strategy == Strategy::Hotfix {
            "hotfix: new set health-checked, switched at once"
        } else {
            "blue-green: new set health-checked, then switched; the old set is kept for instant rollback"
        };
        Ok(self.done(new, how.into()))
    }

    /// Records the canary as held for a person (`inconclusive: hold`), visible in `cairn
    /// status`, answered by `cairn promote RUN` or `cairn rollback RUN`.
    fn hold(&mut self, share: f64, verdict: &Verdict) -> std::result::Result<(), Error> {
        let run = self.key.split('/').next().unwrap_or(self.key).to_string();
        let reason = verdict.reasons.join("; ");
        state::update(self.store, &self.config.service, |s| {
            s.held = Some(Held {
                key: self.key.to_string(),
                version: self.config.version.clone(),
                share,
                reason: reason.clone(),
                since_ms: crate::store::now_ms(),
                decision: None,
                decided_because: None,
            });
        })?;
        self.event(format!(
            "canary held at {share}% without a verdict ({reason}): waiting for `cairn promote {run}` or `cairn rollback {run}`; errors or a crash still roll it back"
        ));
        Ok(())
    }

    /// A person's decision on the held canary, if one was made; it is consumed here.
    fn decision(&self) -> std::result::Result<Option<(Decision, String)>, Error> {
        let key = self.key.to_string();
        state::update(self.store, &self.config.service, |s| {
            let decided = s.held.as_ref().filter(|h| h.key == key).and_then(|h| {
                h.decision
                    .map(|d| (d, h.decided_because.clone().unwrap_or_default()))
            });
            if decided.is_some() {
                s.held = None;
            }
            decided
        })
    }

    async fn baseline(&self) -> Snapshot {
        self.config.metrics.total(&self.client, &self.old).await
    }

    async fn canary(mut self) -> std::result::Result<Result, Error> {
        if self.old.is_empty() {
            self.event("no release serves traffic yet: nothing to compare a canary with, deploying as rolling");
            return self.rolling().await;
        }
        let canary = match self.start_healthy(0).await? {
            Ok(replica) => replica,
            Err(reason) => {
                let failed_at = Instant::now();
                let restored = self.roll_back(&[], &[format!("{}-0", self.prefix)]).await?;
                docker::remove(self.docker, &format!("{}-0", self.prefix)).await?;
                return Ok(self.rolled_back(
                    format!("health check failed: {reason}"),
                    Vec::new(),
                    Some(restored.duration_since(failed_at).as_millis() as u64),
                ));
            }
        };
        let canary_start = self
            .config
            .metrics
            .snapshot(&self.client, &canary)
            .await
            .unwrap_or_default();
        let baseline_start = self.baseline().await;
        let step_time = self
            .config
            .monitor_window
            .div_f64(self.config.canary_steps.len() as f64);
        let mut onset: Option<Instant> = None;
        let analysis_started = Instant::now();
        let mut verdicts = Vec::new();
        // Thin traffic extends steps, the canary as a whole by at most `max_wait`.
        let wait_deadline = analysis_started + self.config.monitor_window + self.config.max_wait;
        let mut held = false;
        let mut promoted_by_person = false;
        let steps = self.config.canary_steps.clone();
        for (index, share) in steps.iter().copied().enumerate() {
            let (canary_weight, baseline_weight) = split_weights(share, 1, self.old.len());
            if index == 0 {
                self.proxy
                    .add_server(&canary.name, &canary.address, canary_weight)
                    .await?;
            } else {
                self.proxy.set_weight(&canary.name, canary_weight).await?;
            }
            for old in self.old.clone() {
                self.proxy.set_weight(&old.name, baseline_weight).await?;
            }
            self.event(format!("canary step {}: {share}% of traffic to {} (weights {canary_weight} vs {baseline_weight} per baseline server)", index + 1, canary.name));
            let step_end = Instant::now() + step_time;
            let mut told_waiting = false;
            let verdict: Verdict = loop {
                // Up to the step's end, land on it; past it (waiting for traffic or for a
                // person), analyse at the interval.
                let until_end = step_end.saturating_duration_since(Instant::now());
                tokio::time::sleep(if until_end.is_zero() {
                    self.config.analysis_interval
                } else {
                    self.config
                        .analysis_interval
                        .min(until_end.max(Duration::from_millis(50)))
                })
                .await;
                let crashed = docker::exited(self.docker, &canary.name).await?;
                let healthy = crashed.is_none()
                    && probe::healthy(&self.client, &canary.address, &self.config.health_path)
                        .await;
                if !healthy {
                    let failed_at = onset.unwrap_or_else(Instant::now);
                    let reason = match crashed {
                        Some(code) => format!("canary {} crashed (exit code {code})", canary.name),
                        None => format!("canary {} failed its health check", canary.name),
                    };
                    self.event(reason.clone());
                    let restored = self.roll_back(std::slice::from_ref(&canary), &[]).await?;
                    return Ok(self.rolled_back(
                        reason,
                        verdicts,
                        Some(restored.duration_since(failed_at).as_millis() as u64),
                    ));
                }
                let now_canary = self
                    .config
                    .metrics
                    .snapshot(&self.client, &canary)
                    .await
                    .unwrap_or_default();
                let now_baseline = self.baseline().await;
                let verdict = analyse(
                    &now_canary.since(&canary_start),
                    &now_baseline.since(&baseline_start),
                    self.config.thresholds,
                );
                if verdict.anomalous() && onset.is_none() {
                    onset = Some(Instant::now());
                    self.event(format!("first anomalous sample: {}", verdict.summary()));
                }
                if verdict.outcome == Outcome::Fail {
                    let failed_at = onset.unwrap_or_else(Instant::now);
                    self.event(format!(
                        "canary analysis failed at {share}%: {}",
                        verdict.summary()
                    ));
                    verdicts.push(verdict_entry(
                        index,
                        share,
                        &verdict,
                        analysis_started.elapsed(),
                    ));
                    let restored = self.roll_back(std::slice::from_ref(&canary), &[]).await?;
                    let ms = restored.duration_since(failed_at).as_millis() as u64;
                    let reason = format!(
                        "canary analysis failed at {share}% of traffic: {}",
                        verdict.reasons.join("; ")
                    );
                    return Ok(self.rolled_back(reason, verdicts, Some(ms)));
                }
                if Instant::now() < step_end {
                    continue;
                }
                if verdict.outcome == Outcome::Pass {
                    break verdict;
                }
                // Inconclusive at the step's end: wait for traffic, then apply the policy.
                if held {
                    match self.decision()? {
                        None => continue,
                        Some((Decision::Promote, why)) => {
                            self.event(format!(
                                "promoted by a person at {share}% ({why}) without a verdict: {}",
                                verdict.summary()
                            ));
                            promoted_by_person = true;
                            break verdict;
                        }
                        Some((Decision::Rollback, why)) => {
                            let failed_at = Instant::now();
                            self.event(format!("rolled back by a person at {share}% ({why})"));
                            verdicts.push(verdict_entry(
                                index,
                                share,
                                &verdict,
                                analysis_started.elapsed(),
                            ));
                            let restored =
                                self.roll_back(std::slice::from_ref(&canary), &[]).await?;
                            let reason = format!(
                                "canary held at {share}% of traffic without a verdict ({}) and rolled back by a person: {why}",
                                verdict.reasons.join("; ")
                            );
                            return Ok(self.rolled_back(
                                reason,
                                verdicts,
                                Some(restored.duration_since(failed_at).as_millis() as u64),
                            ));
                        }
                    }
                }
                if Instant::now() < wait_deadline {
                    if !told_waiting {
                        told_waiting = true;
                        self.event(format!(
                            "canary step {} at {share}%: waiting for traffic (at most {:.0} s more): {}",
                            index + 1,
                            wait_deadline
                                .saturating_duration_since(Instant::now())
                                .as_secs_f64(),
                            verdict.reasons.join("; ")
                        ));
                    }
                    continue;
                }
                if self.config.inconclusive == Inconclusive::Rollback {
                    break verdict;
                }
                self.hold(share, &verdict)?;
                held = true;
            };
            self.event(format!(
                "canary step {} at {share}%: {}",
                index + 1,
                verdict.summary()
            ));
            verdicts.push(verdict_entry(
                index,
                share,
                &verdict,
                analysis_started.elapsed(),
            ));
            if held && !promoted_by_person {
                // Traffic came while it waited: the verdict is the analysis's again.
                let key = self.key.to_string();
                state::update(self.store, &self.config.service, |s| {
                    if s.held.as_ref().is_some_and(|h| h.key == key) {
                        s.held = None;
                    }
                })?;
                held = false;
            }
            if promoted_by_person {
                break;
            }
            if verdict.outcome == Outcome::Inconclusive {
                let restored_from = onset.unwrap_or_else(Instant::now);
                let restored = self.roll_back(std::slice::from_ref(&canary), &[]).await?;
                let reason = format!(
                    "canary analysis inconclusive at {share}% of traffic: {}",
                    verdict.reasons.join("; ")
                );
                return Ok(self.rolled_back(
                    reason,
                    verdicts,
                    Some(restored.duration_since(restored_from).as_millis() as u64),
                ));
            }
        }
        // Promote: the rest of the new replicas, then the old release leaves rotation.
        let mut new = vec![canary.clone()];
        self.proxy.set_weight(&canary.name, EVEN).await?;
        for index in 1..self.config.replicas {
            match self.start_healthy(index).await? {
                Ok(replica) => {
                    self.proxy
                        .add_server(&replica.name, &replica.address, EVEN)
                        .await?;
                    new.push(replica);
                }
                Err(reason) => {
                    let failed_at = Instant::now();
                    let restored = self
                        .roll_back(&new, &[format!("{}-{index}", self.prefix)])
                        .await?;
                    docker::remove(self.docker, &format!("{}-{index}", self.prefix)).await?;
                    return Ok(self.rolled_back(
                        format!("promotion failed: {reason}"),
                        verdicts,
                        Some(restored.duration_since(failed_at).as_millis() as u64),
                    ));
                }
            }
        }
        for old in self.old.clone() {
            self.proxy.retire(&old.name, DRAIN_GRACE).await?;
        }
        self.event("canary promoted: the new release serves all traffic");
        let how = if promoted_by_person {
            "canary held without a verdict and promoted by a person (`cairn promote`)"
        } else {
            "canary passed the analysis at every step and was promoted"
        };
        let mut result = self.done(new, how.into());
        result.verdicts = verdicts;
        Ok(result)
    }
}

/// A step's verdict with the interval it covers and the request rates it implies.
fn verdict_entry(index: usize, share: f64, verdict: &Verdict, elapsed: Duration) -> Value {
    let seconds = elapsed.as_secs_f64().max(0.001);
    json!({
        "step": index + 1,
        "share": share,
        "seconds": (seconds * 10.0).round() / 10.0,
        "canary_rps": (verdict.canary.requests as f64 / seconds * 10.0).round() / 10.0,
        "baseline_rps": (verdict.baseline.requests as f64 / seconds * 10.0).round() / 10.0,
        "verdict": verdict,
    })
}
