//! Proving a proposed Dockerfile (`rewrite.rs`) before anyone sees it. From the same checkout
//! the proposal is built, and then both Dockerfiles are rebuilt after an application-only
//! change (a probe file added to the context, which `COPY .` picks up and no manifest copy
//! does), twice each, interleaved, with the cache warm from the step's own build. The
//! proposal is accepted only when it builds, its image runs the same entrypoint (entrypoint,
//! command, user, working directory, exposed ports), a container of it passes the service's
//! health check, and it is smaller (by 1 % or more) or rebuilds faster (by 10 % and 200 ms or
//! more). It is delivered as a patch; the checkout is never written.
//!
//! Every image and container made here is removed afterwards, whatever the outcome.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ImageInspect;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use serde::Serialize;
use similar::TextDiff;

use super::config::OptimizeConfig;
use super::context;
use super::docker::{self, BuildRequest};
use super::error::Error;
use super::rewrite::{Change, Proposal};
use crate::agents::deploy::containers;

/// The file whose appearance in the context stands for an application change.
const PROBE_FILE: &str = ".cairn-app-change";
const ROUNDS: usize = 2;

/// What the step built, and how, so the proposal is built the same way.
pub struct Built<'a> {
    pub docker: &'a Docker,
    pub context_dir: &'a Path,
    pub dockerfile: &'a str,
    pub original_text: &'a str,
    /// The step's image (the original Dockerfile, just built: its cache is warm).
    pub image: &'a str,
    pub build_args: &'a HashMap<String, String>,
    pub target: Option<&'a str>,
    /// A name no other step uses, for the images made here.
    pub scratch_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `accepted` or `rejected`.
    pub status: &'static str,
    pub reason: String,
    pub changes: Vec<Change>,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
    /// Rebuild times after an application-only change, one per round.
    pub rebuild_ms_before: Vec<u64>,
    pub rebuild_ms_after: Vec<u64>,
    pub health: Option<String>,
    /// A unified diff of the Dockerfile (a patch for `git apply`).
    pub patch: String,
}

impl Verdict {
    fn new(proposal: &Proposal, dockerfile: &str, original: &str) -> Verdict {
        Verdict {
            status: "rejected",
            reason: String::new(),
            changes: proposal.changes.clone(),
            size_before: None,
            size_after: None,
            rebuild_ms_before: Vec::new(),
            rebuild_ms_after: Vec::new(),
            health: None,
            patch: patch(dockerfile, original, &proposal.text),
        }
    }

    fn rejected(mut self, reason: impl Into<String>) -> Verdict {
        self.status = "rejected";
        self.reason = reason.into();
        self
    }
}

/// `git apply`-able diff of `path` from `before` to `after`.
fn patch(path: &str, before: &str, after: &str) -> String {
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Builds and measures `proposal`; never fails the step (a failure is a rejected verdict).
pub async fn prove(
    built: &Built<'_>,
    proposal: &Proposal,
    optimize: &OptimizeConfig,
    log: &(dyn Fn(String) + Sync),
) -> Verdict {
    let verdict = Verdict::new(proposal, built.dockerfile, built.original_text);
    let after_tag = format!("{}:proposed", built.scratch_name);
    let probe_tag = format!("{}:probe", built.scratch_name);
    let result = measure(
        built, proposal, optimize, verdict, &after_tag, &probe_tag, log,
    )
    .await;
    for tag in [&after_tag, &probe_tag] {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        let _ = built.docker.remove_image(tag, Some(options), None).await;
    }
    result
}

async fn measure(
    built: &Built<'_>,
    proposal: &Proposal,
    optimize: &OptimizeConfig,
    mut verdict: Verdict,
    after_tag: &str,
    probe_tag: &str,
    log: &(dyn Fn(String) + Sync),
) -> Verdict {
    let proposed = (
        built.dockerfile.to_string(),
        proposal.text.as_bytes().to_vec(),
    );
    // 1. The proposal builds from the same checkout.
    if let Err(error) = timed_build(built, after_tag, vec![proposed.clone()]).await {
        return verdict.rejected(format!(
            "the proposed Dockerfile does not build: {}",
            error.chain()
        ));
    }
    let (before, after) = match (
        docker::inspect(built.docker, built.image).await,
        docker::inspect(built.docker, after_tag).await,
    ) {
        (Ok(Some(before)), Ok(Some(after))) => (before, after),
        _ => return verdict.rejected("the images could not be inspected"),
    };
    verdict.size_before = before.size.map(|s| s.max(0) as u64);
    verdict.size_after = after.size.map(|s| s.max(0) as u64);
    // 2. The same program, run the same way.
    if let Some(difference) = entrypoint_difference(&before, &after) {
        return verdict.rejected(format!(
            "the proposal's image does not run the same way: {difference}"
        ));
    }
    // 3. Rebuilds after an application-only change, interleaved so load hits both alike.
    let original = (
        built.dockerfile.to_string(),
        built.original_text.as_bytes().to_vec(),
    );
    for round in 0..ROUNDS {
        let probe = (
            PROBE_FILE.to_string(),
            format!("change {round}\n").into_bytes(),
        );
        let before = timed_build(built, probe_tag, vec![original.clone(), probe.clone()]).await;
        let after = timed_build(built, probe_tag, vec![proposed.clone(), probe]).await;
        match (before, after) {
            (Ok(before), Ok(after)) => {
                verdict.rebuild_ms_before.push(before);
                verdict.rebuild_ms_after.push(after);
            }
            (Err(error), _) | (_, Err(error)) => {
                return verdict.rejected(format!(
                    "rebuilding after the change failed: {}",
                    error.chain()
                ));
            }
        }
    }
    // 4. The service still answers its health check.
    match health(built.docker, after_tag, &built.scratch_name, optimize).await {
        Ok(took) => {
            verdict.health = Some(format!(
                "{} answered 2xx after {:.1} s",
                optimize.health_path,
                took.as_secs_f64()
            ))
        }
        Err(why) => {
            return verdict.rejected(format!(
                "the proposal's container failed its health check: {why}"
            ));
        }
    }
    // 5. Worth it?
    let (size_before, size_after) = (
        verdict.size_before.unwrap_or(0),
        verdict.size_after.unwrap_or(0),
    );
    let smaller = size_after * 100 <= size_before * 99;
    let rebuild_before = verdict.rebuild_ms_before.iter().copied().min().unwrap_or(0);
    let rebuild_after = verdict.rebuild_ms_after.iter().copied().min().unwrap_or(0);
    let faster = rebuild_after * 10 <= rebuild_before * 9 && rebuild_after + 200 <= rebuild_before;
    let sizes = format!(
        "image {} → {}",
        super::size::format_size(size_before),
        super::size::format_size(size_after)
    );
    let rebuilds =
        format!("rebuild after an app-only change {rebuild_before} ms → {rebuild_after} ms");
    log(format!("optimize: {sizes}; {rebuilds}"));
    if smaller || faster {
        verdict.status = "accepted";
        verdict.reason = format!(
            "it builds, runs the same entrypoint, passes {}, and saves: {sizes}; {rebuilds}",
            optimize.health_path
        );
    } else {
        verdict = verdict.rejected(format!("no measurable saving: {sizes}; {rebuilds}"));
    }
    verdict
}

/// Builds `tag` from the checkout with `given` files in place; how long it took, in ms.
async fn timed_build(
    built: &Built<'_>,
    tag: &str,
    given: Vec<(String, Vec<u8>)>,
) -> Result<u64, Error> {
    let started = Instant::now();
    let archive = context::archive_blocking(built.context_dir, built.dockerfile, given).await?;
    let labels = HashMap::new();
    let request = BuildRequest {
        tag,
        dockerfile: built.dockerfile,
        target: built.target,
        build_args: built.build_args,
        labels: &labels,
        nocache: false,
        pull: false,
    };
    docker::build(built.docker, &request, archive.archive, |_| {}).await?;
    Ok(started.elapsed().as_millis() as u64)
}

/// How the two images would run differently, if they would.
fn entrypoint_difference(before: &ImageInspect, after: &ImageInspect) -> Option<String> {
    let (a, b) = (
        before.config.clone().unwrap_or_default(),
        after.config.clone().unwrap_or_default(),
    );
    let ports = |c: &bollard::models::ImageConfig| {
        let mut ports: Vec<String> = c.exposed_ports.clone().unwrap_or_default();
        ports.sort();
        ports
    };
    let pairs = [
        (
            "entrypoint",
            format!("{:?}", a.entrypoint),
            format!("{:?}", b.entrypoint),
        ),
        ("command", format!("{:?}", a.cmd), format!("{:?}", b.cmd)),
        ("user", format!("{:?}", a.user), format!("{:?}", b.user)),
        (
            "working directory",
            format!("{:?}", a.working_dir),
            format!("{:?}", b.working_dir),
        ),
        (
            "exposed ports",
            format!("{:?}", ports(&a)),
            format!("{:?}", ports(&b)),
        ),
    ];
    pairs
        .into_iter()
        .find(|(_, x, y)| x != y)
        .map(|(what, x, y)| format!("{what} {x} became {y}"))
}

/// Runs a container of `image` (port published on 127.0.0.1, `PORT` set, as the deploy agent
/// runs a replica) until the health path answers 2xx twice; removes it either way.
async fn health(
    docker: &Docker,
    image: &str,
    name: &str,
    optimize: &OptimizeConfig,
) -> Result<Duration, String> {
    let container = format!("{}-health", name.replace([':', '/'], "-"));
    let result = run_health(docker, image, &container, optimize).await;
    let _ = containers::remove(docker, &container).await;
    result
}

async fn run_health(
    docker: &Docker,
    image: &str,
    container: &str,
    optimize: &OptimizeConfig,
) -> Result<Duration, String> {
    let text = |e: crate::agents::deploy::Error| e.chain();
    containers::create_published(
        docker,
        container,
        image,
        Vec::new(),
        HashMap::new(),
        optimize.port,
    )
    .await
    .map_err(text)?;
    let started = Instant::now();
    let replica = loop {
        if let Some(replica) = containers::running(docker, container, optimize.port)
            .await
            .map_err(text)?
        {
            break replica;
        }
        if let Some(code) = containers::exited(docker, container).await.map_err(text)? {
            return Err(format!("the container exited with code {code}"));
        }
        if started.elapsed() >= optimize.health_timeout {
            return Err(format!("no port {} was published", optimize.port));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let left = optimize.health_timeout.saturating_sub(started.elapsed());
    let client = crate::agents::deploy::probe_client();
    crate::agents::deploy::wait_healthy(&client, &replica.address, &optimize.health_path, left)
        .await?;
    Ok(started.elapsed())
}
