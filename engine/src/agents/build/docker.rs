//! The Docker engine through bollard: connecting (`unix://` sockets, `tcp://` with or without
//! TLS), the streamed classic-builder build, and the image facts the report needs.
//!
//! The classic builder (API `version=1`) is used because BuildKit over the API needs a gRPC
//! session; its per-step "Using cache" lines are also what the report counts as cache hits.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ImageHistoryResponseItem, ImageInspect};
use bollard::query_parameters::{BuildImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::error::Error;

/// How long a request may take; a build streams for as long as it runs, so this is generous
/// and the step's own `timeout:` is what bounds it.
const REQUEST_TIMEOUT_SECS: u64 = 3600;
/// How long the engine has to answer the first request before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and negotiates the API version (the engine here may be older than bollard's
/// default version), which doubles as the reachability check.
pub async fn connect(host: &str, tls_cert_path: Option<&Path>) -> Result<Docker, Error> {
    let unreachable = |source| Error::Unreachable {
        host: host.to_string(),
        source,
    };
    let version = bollard::API_DEFAULT_VERSION;
    let docker = if let Some(path) = host
        .strip_prefix("unix://")
        .or_else(|| host.starts_with('/').then_some(host))
    {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, version).map_err(unreachable)?
    } else if host.starts_with("tcp://")
        || host.starts_with("http://")
        || host.starts_with("https://")
    {
        match tls_cert_path {
            Some(dir) => Docker::connect_with_ssl(
                &host.replacen("https://", "tcp://", 1),
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                REQUEST_TIMEOUT_SECS,
                version,
            )
            .map_err(unreachable)?,
            None if host.starts_with("https://") => {
                return Err(Error::Config(format!(
                    "{host} needs `tls_cert_path` (a directory with ca.pem, cert.pem and key.pem)"
                )));
            }
            None => Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, version)
                .map_err(unreachable)?,
        }
    } else {
        return Err(Error::Config(format!(
            "docker_host `{host}` is not supported: use unix:///path/to/docker.sock or tcp://host:port"
        )));
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(source)) => Err(unreachable(source)),
        Err(_) => Err(Error::UnreachableTimeout {
            host: host.to_string(),
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

pub struct BuildRequest<'a> {
    pub tag: &'a str,
    pub dockerfile: &'a str,
    pub target: Option<&'a str>,
    pub build_args: &'a HashMap<String, String>,
    pub labels: &'a HashMap<String, String>,
    pub nocache: bool,
    pub pull: bool,
}

/// What the build stream said.
#[derive(Debug, Default)]
pub struct BuildOutcome {
    pub image_id: Option<String>,
    pub steps: usize,
    /// Steps answered from the layer cache ("Using cache").
    pub cache_hits: usize,
}

/// Runs the build, handing every log line to `line` as it arrives.
pub async fn build(
    docker: &Docker,
    request: &BuildRequest<'_>,
    archive: Vec<u8>,
    mut line: impl FnMut(&str),
) -> Result<BuildOutcome, Error> {
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(request.dockerfile)
        .t(request.tag)
        .nocache(request.nocache)
        .rm(true)
        .forcerm(true)
        .buildargs(request.build_args)
        .labels(request.labels);
    if let Some(target) = request.target {
        options = options.target(target);
    }
    if request.pull {
        options = options.pull("true");
    }
    let failed = |message: String| Error::BuildFailed {
        tag: request.tag.to_string(),
        message,
    };
    let mut stream = docker.build_image(
        options.build(),
        None,
        Some(bollard::body_full(archive.into())),
    );
    let mut outcome = BuildOutcome::default();
    let mut last_error = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => return Err(failed(error)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(failed(message));
            }
            Err(source) => return Err(Error::docker(format!("build {}", request.tag), source)),
        };
        if let Some(detail) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
            last_error = Some(detail);
        }
        if let Some(text) = &info.stream {
            for part in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if part.starts_with("Step ") {
                    outcome.steps += 1;
                }
                if part.contains("Using cache") {
                    outcome.cache_hits += 1;
                }
                line(part);
            }
        }
        if let Some(status) = &info.status {
            line(status.trim_end());
        }
        if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
            outcome.image_id = Some(id);
        }
    }
    if let Some(message) = last_error {
        return Err(failed(message));
    }
    Ok(outcome)
}

/// The image's facts, or `None` when no image has that name.
pub async fn inspect(docker: &Docker, name: &str) -> Result<Option<ImageInspect>, Error> {
    match docker.inspect_image(name).await {
        Ok(image) => Ok(Some(image)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(Error::docker(format!("inspect image {name}"), source)),
    }
}

pub async fn history(docker: &Docker, name: &str) -> Result<Vec<ImageHistoryResponseItem>, Error> {
    docker
        .image_history(name)
        .await
        .map_err(|source| Error::docker(format!("read the history of {name}"), source))
}

/// Points `repository:tag` at `image`.
pub async fn tag(docker: &Docker, image: &str, repository: &str, tag: &str) -> Result<(), Error> {
    let options = TagImageOptionsBuilder::new()
        .repo(repository)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .map_err(|source| Error::docker(format!("tag {image} as {repository}:{tag}"), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_tcp_engine_and_unsupported_hosts_are_clear() {
        // Port 1 on loopback: nothing listens there.
        let error = connect("tcp://127.0.0.1:1", None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("cannot reach the Docker engine at tcp://127.0.0.1:1"),
            "{error}"
        );
        let error = connect("https://127.0.0.1:1", None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("needs `tls_cert_path`"), "{error}");
        let error = connect("ssh://builder", None)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("is not supported"), "{error}");
        let missing = tempfile::tempdir().expect("tempdir");
        let error = connect("tcp://127.0.0.1:1", Some(missing.path()))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("cannot reach the Docker engine at tcp://127.0.0.1:1"),
            "missing certificates: {error}"
        );
    }
}
