//! HAProxy through its runtime API (the stats socket at `level admin`): servers are added and
//! deleted at run time (`add server`/`del server`, HAProxy 2.6+), traffic is shifted with
//! weights, and a server leaves rotation by `drain` (no new requests) then `maint`.
//!
//! The backend is expected to retry and redispatch (`retries`, `option redispatch`) and to close
//! server-side connections after each response (`option http-server-close`), so a server in
//! `maint` has no idle connection pinning it: [`haproxy_config`] writes such a configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::error::Error;

/// HAProxy weights range 0–256; shares are expressed over this total.
pub const WEIGHT_SCALE: u32 = 256;

/// A minimal configuration for one HTTP frontend on `127.0.0.1:port` and one empty backend,
/// with the runtime API on `socket`. Servers are added by the deploy agent.
pub fn haproxy_config(port: u16, socket: &Path, backend: &str) -> String {
    format!(
        "global\n    stats socket {socket} mode 600 level admin\n    stats timeout 10s\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch 1\n    option http-server-close\n\nfrontend web\n    bind 127.0.0.1:{port}\n    default_backend {backend}\n\nbackend {backend}\n    balance roundrobin\n",
        socket = socket.display()
    )
}

/// One server of the backend as the runtime API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    pub address: String,
    /// `srv_admin_state` bit 0x01/0x02/0x04 set: forced or inherited maintenance.
    pub in_maintenance: bool,
    pub draining: bool,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Proxy {
    socket: PathBuf,
    backend: String,
}

impl Proxy {
    pub fn new(socket: &Path, backend: &str) -> Proxy {
        Proxy {
            socket: socket.to_path_buf(),
            backend: backend.to_string(),
        }
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Proxy {
            socket: self.socket.display().to_string(),
            message: message.into(),
        }
    }

    /// Sends one command and returns HAProxy's answer.
    pub async fn command(&self, command: &str) -> Result<String, Error> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            stream.write_all(format!("{command}\n").as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(self.error(format!("`{command}`: {error}"))),
            Err(_) => Err(self.error(format!("`{command}`: no answer within 5 s"))),
        }
    }

    /// A command whose success is an empty answer or one starting with one of `ok`.
    async fn expect(&self, command: &str, ok: &[&str]) -> Result<(), Error> {
        let answer = self.command(command).await?;
        let text = answer.trim();
        if text.is_empty() || ok.iter().any(|o| text.starts_with(o)) {
            Ok(())
        } else {
            Err(self.error(format!("`{command}` answered: {text}")))
        }
    }

    /// Adds `name` at `address` with `weight`, enabled (dynamic servers start in maintenance).
    pub async fn add_server(&self, name: &str, address: &str, weight: u32) -> Result<(), Error> {
        let be = &self.backend;
        if !self.servers().await?.iter().any(|s| s.name == name) {
            self.expect(
                &format!("add server {be}/{name} {address} weight {weight}"),
                &["New server registered"],
            )
            .await?;
        }
        self.set_weight(name, weight).await?;
        self.expect(&format!("set server {be}/{name} state ready"), &[])
            .await
    }

    pub async fn set_weight(&self, name: &str, weight: u32) -> Result<(), Error> {
        self.expect(
            &format!(
                "set server {}/{name} weight {}",
                self.backend,
                weight.min(WEIGHT_SCALE)
            ),
            &[],
        )
        .await
    }

    /// `ready`, `drain` or `maint`.
    pub async fn set_state(&self, name: &str, state: &str) -> Result<(), Error> {
        self.expect(
            &format!("set server {}/{name} state {state}", self.backend),
            &[],
        )
        .await
    }

    /// Takes `name` out of rotation without cutting a request: drain, wait for its sessions
    /// to finish (at most `grace`), then maintenance.
    pub async fn retire(&self, name: &str, grace: Duration) -> Result<(), Error> {
        self.set_state(name, "drain").await?;
        let deadline = tokio::time::Instant::now() + grace;
        while self.current_sessions(name).await?.unwrap_or(0) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.set_state(name, "maint").await
    }

    /// Removes `name` (it must be in maintenance); a server that still holds sessions is
    /// retried briefly, then its sessions are shut.
    pub async fn delete_server(&self, name: &str) -> Result<(), Error> {
        let be = &self.backend;
        if !self.servers().await?.iter().any(|s| s.name == name) {
            return Ok(());
        }
        self.set_state(name, "maint").await?;
        for attempt in 0..50 {
            let answer = self.command(&format!("del server {be}/{name}")).await?;
            if answer.trim().starts_with("Server deleted") || answer.contains("No such server") {
                return Ok(());
            }
            if attempt == 25 {
                let _ = self
                    .command(&format!("shutdown sessions server {be}/{name}"))
                    .await?;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        Err(self.error(format!(
            "`del server {be}/{name}` kept failing (sessions still open)"
        )))
    }

    /// The backend's servers (`show servers state`).
    pub async fn servers(&self) -> Result<Vec<Server>, Error> {
        let answer = self
            .command(&format!("show servers state {}", self.backend))
            .await?;
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        let _version = lines.next();
        let header: Vec<&str> = match lines.next() {
            Some(h) if h.starts_with('#') => h.trim_start_matches('#').split_whitespace().collect(),
            _ => {
                return Err(self.error(format!(
                    "unexpected `show servers state` answer: {}",
                    answer.trim()
                )));
            }
        };
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(name_at), Some(addr_at), Some(admin_at), Some(weight_at), Some(port_at)) = (
            column("srv_name"),
            column("srv_addr"),
            column("srv_admin_state"),
            column("srv_uweight"),
            column("srv_port"),
        ) else {
            return Err(self.error("`show servers state` lacks the expected columns"));
        };
        Ok(lines
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let admin: u32 = fields.get(admin_at)?.parse().ok()?;
                Some(Server {
                    name: fields.get(name_at)?.to_string(),
                    address: format!("{}:{}", fields.get(addr_at)?, fields.get(port_at)?),
                    in_maintenance: admin & 0x07 != 0,
                    draining: admin & 0x18 != 0,
                    weight: fields.get(weight_at)?.parse().ok()?,
                })
            })
            .collect())
    }

    /// Sessions each server of the backend has served so far (`stot` of `show stat`).
    pub async fn session_totals(&self) -> Result<std::collections::HashMap<String, u64>, Error> {
        let answer = self.command("show stat").await?;
        let mut lines = answer.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let stot_at = header.iter().position(|h| *h == "stot").unwrap_or(7);
        Ok(lines
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let server = fields.get(1)?;
                (fields.first() == Some(&self.backend.as_str())
                    && !matches!(*server, "BACKEND" | "FRONTEND"))
                .then(|| {
                    (
                        server.to_string(),
                        fields
                            .get(stot_at)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    )
                })
            })
            .collect())
    }

    /// Sessions in flight on `name` (`scur` of `show stat`), `None` when it is not listed.
    pub async fn current_sessions(&self, name: &str) -> Result<Option<u64>, Error> {
        let answer = self.command("show stat").await?;
        let mut lines = answer.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let scur_at = header.iter().position(|h| *h == "scur").unwrap_or(4);
        Ok(lines.find_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.first() == Some(&self.backend.as_str()) && fields.get(1) == Some(&name)).then(
                || {
                    fields
                        .get(scur_at)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                },
            )
        }))
    }
}

/// Weights giving `share` percent of new requests to the canary set and the rest to the
/// baseline set: (weight of each canary server, weight of each baseline server).
pub fn split_weights(share: f64, canary_servers: usize, baseline_servers: usize) -> (u32, u32) {
    let scale = WEIGHT_SCALE as f64;
    if baseline_servers == 0 || share >= 100.0 {
        return (WEIGHT_SCALE / 2, 0);
    }
    let canary_total = (share / 100.0 * scale).max(1.0);
    let baseline_total = scale - canary_total;
    let canary = (canary_total / canary_servers.max(1) as f64)
        .round()
        .max(1.0) as u32;
    let baseline = (baseline_total / baseline_servers as f64).round().max(1.0) as u32;
    (canary, baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_share() {
        let (c, b) = split_weights(5.0, 1, 2);
        let share = c as f64 / (c + 2 * b) as f64;
        assert!((share - 0.05).abs() < 0.01, "{c} {b} {share}");
        assert_eq!(split_weights(100.0, 1, 2).1, 0);
    }
}
