//! Replicas as Docker containers through bollard (the connection is the build agent's). Each
//! container's name and labels carry the service and the step's idempotency key, so a
//! re-attempt finds what an earlier attempt started. Ports are published on 127.0.0.1 only.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::config::DeployConfig;
use super::error::Error;

pub const SERVICE_LABEL: &str = "cairn.deploy.service";
pub const KEY_LABEL: &str = "cairn.deploy.key";
pub const VERSION_LABEL: &str = "cairn.deploy.version";

/// One running replica: its container (and proxy server) name and loopback address.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    pub name: String,
    pub address: String,
}

pub async fn connect(config: &DeployConfig) -> Result<Docker, Error> {
    Ok(
        crate::agents::build::docker::connect(&config.docker_host, config.tls_cert_path.as_deref())
            .await?,
    )
}

/// Starts (or finds, when an earlier attempt started it) container `name` of the release.
pub async fn start(
    docker: &Docker,
    config: &DeployConfig,
    name: &str,
    key: &str,
) -> Result<Replica, Error> {
    if let Some(replica) = running(docker, name, config.container_port).await? {
        return Ok(replica);
    }
    remove(docker, name).await?;
    let env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels = HashMap::from([
        (SERVICE_LABEL.to_string(), config.service.clone()),
        (KEY_LABEL.to_string(), key.to_string()),
        (VERSION_LABEL.to_string(), config.version.clone()),
    ]);
    create_published(
        docker,
        name,
        &config.image,
        env,
        labels,
        config.container_port,
    )
    .await?;
    // The published port is known once the container runs.
    for _ in 0..50 {
        if let Some(replica) = running(docker, name, config.container_port).await? {
            return Ok(replica);
        }
        if let Some(code) = exited(docker, name).await? {
            return Err(Error::Unhealthy(format!(
                "container {name} exited with code {code} at start (crash)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Unhealthy(format!(
        "container {name} started but publishes no port {}",
        config.container_port
    )))
}

/// Creates and starts container `name` of `image` with `container_port` published on a free
/// 127.0.0.1 port and `PORT` added to `env`: how Cairn runs a service's container, for a
/// replica and for the build agent's health check of a proposed Dockerfile.
pub(crate) async fn create_published(
    docker: &Docker,
    name: &str,
    image: &str,
    mut env: Vec<String>,
    labels: HashMap<String, String>,
    container_port: u16,
) -> Result<(), Error> {
    let port = format!("{container_port}/tcp");
    env.push(format!("PORT={container_port}"));
    let bindings = HashMap::from([(
        port.clone(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(String::new()),
        }]),
    )]);
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: Some(vec![port]),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| Error::container(format!("create container {name} from {image}"), e))?;
    docker
        .start_container(name, None)
        .await
        .map_err(|e| Error::container(format!("start container {name}"), e))
}

/// The replica if container `name` runs with its port published.
pub async fn running(
    docker: &Docker,
    name: &str,
    container_port: u16,
) -> Result<Option<Replica>, Error> {
    let inspect = match docker.inspect_container(name, None).await {
        Ok(inspect) => inspect,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(Error::container(format!("inspect container {name}"), e)),
    };
    if !inspect
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
    {
        return Ok(None);
    }
    let port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{container_port}/tcp")).cloned().flatten())
        .and_then(|bindings| {
            bindings
                .into_iter()
                .find_map(|b| b.host_port.filter(|p| !p.is_empty()))
        });
    Ok(port.map(|port| Replica {
        name: name.to_string(),
        address: format!("127.0.0.1:{port}"),
    }))
}

/// The exit code of a container that has stopped, `None` while it runs or when it is gone.
pub async fn exited(docker: &Docker, name: &str) -> Result<Option<i64>, Error> {
    match docker.inspect_container(name, None).await {
        Ok(inspect) => Ok(inspect
            .state
            .filter(|s| s.running != Some(true))
            .map(|s| s.exit_code.unwrap_or(-1))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(Error::container(format!("inspect container {name}"), e)),
    }
}

pub async fn remove(docker: &Docker, name: &str) -> Result<(), Error> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(name, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(Error::container(format!("remove container {name}"), e)),
    }
}

/// Names of every container of `service` started with idempotency key `key`.
pub async fn of_key(docker: &Docker, service: &str, key: &str) -> Result<Vec<String>, Error> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{SERVICE_LABEL}={service}"),
            format!("{KEY_LABEL}={key}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| Error::container(format!("list containers of {service}"), e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
        })
        .collect())
}
