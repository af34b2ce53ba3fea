//! A proxy Cairn runs itself, for a deploy step that names only the address to serve on
//! (`with: listen: 127.0.0.1:8080`) instead of an existing HAProxy's runtime socket.
//!
//! The HAProxy process is a daemon of its own (`haproxy -D`), with its configuration, pid file
//! and admin socket in `proxies/<service>/` beside the deployment state: it keeps serving when
//! the engine stops or crashes, and the next deploy finds it through the socket. Servers are
//! added at run time, so when the proxy had to be (re)started the active release's replicas
//! are put back in rotation before anything else moves.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::docker::Replica;
use super::error::Error;
use super::proxy::{Proxy, WEIGHT_SCALE, haproxy_config};

fn proxy_error(dir: &Path, message: impl Into<String>) -> Error {
    Error::Proxy {
        socket: dir.join("admin.sock").display().to_string(),
        message: message.into(),
    }
}

/// Makes sure HAProxy serves `listen` for `service` (backend named after the service), starting
/// it when it is not running or when its configuration changed. True when it was (re)started:
/// its servers are gone.
pub async fn ensure(dir: &Path, service: &str, listen: &str) -> Result<bool, Error> {
    let port: u16 = listen
        .rsplit_once(':')
        .and_then(|(host, port)| (host == "127.0.0.1" || host == "localhost").then_some(port))
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| Error::Config(format!("listen `{listen}` must be 127.0.0.1:PORT (a managed proxy serves loopback only; put your own HAProxy in front with `proxy_socket` otherwise)")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| proxy_error(dir, format!("cannot create {}: {e}", dir.display())))?;
    let socket = dir.join("admin.sock");
    let config_path = dir.join("haproxy.cfg");
    let config = haproxy_config(port, &socket, service);
    let unchanged = std::fs::read_to_string(&config_path).is_ok_and(|old| old == config);
    let proxy = Proxy::new(&socket, service);
    if unchanged && proxy.command("show info").await.is_ok() {
        return Ok(false);
    }
    stop(dir).await;
    std::fs::write(&config_path, &config)
        .map_err(|e| proxy_error(dir, format!("cannot write {}: {e}", config_path.display())))?;
    let status = tokio::process::Command::new("haproxy")
        .arg("-D")
        .arg("-p")
        .arg(dir.join("haproxy.pid"))
        .arg("-f")
        .arg(&config_path)
        // The daemon must not hold the engine's pipes open.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| {
            proxy_error(
                dir,
                format!("cannot start haproxy (Debian package `haproxy`): {e}"),
            )
        })?;
    if !status.status.success() {
        let stderr = String::from_utf8_lossy(&status.stderr);
        return Err(proxy_error(
            dir,
            format!(
                "haproxy -f {} failed: {}",
                config_path.display(),
                stderr.trim()
            ),
        ));
    }
    for _ in 0..100 {
        if proxy.command("show info").await.is_ok() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(proxy_error(
        dir,
        "haproxy started but its admin socket does not answer",
    ))
}

/// Stops the managed proxy of `dir` if one runs (its pid file names it).
pub async fn stop(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("haproxy.pid")) else {
        return;
    };
    for pid in text
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    // Wait for the port to be released before a new instance binds it.
    for _ in 0..40 {
        if !text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(dir.join("haproxy.pid"));
}

/// Puts the replicas of the active release back in rotation on a freshly started proxy.
pub async fn restore(proxy: &Proxy, replicas: &[Replica]) -> Result<(), Error> {
    for replica in replicas {
        proxy
            .add_server(&replica.name, &replica.address, WEIGHT_SCALE / 2)
            .await?;
    }
    Ok(())
}
