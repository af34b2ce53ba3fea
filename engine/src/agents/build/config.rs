//! The step's `with:` block, checked once into a typed [`BuildConfig`]. Unknown keys are an
//! error: a misspelt `max_image_size` must not silently disable the limit.
//!
//! ```yaml
//! with:
//!   docker_host: unix:///var/run/docker.sock   # or tcp://host:2376; default $DOCKER_HOST
//!   tls_cert_path: /etc/cairn/docker-certs      # ca.pem, cert.pem, key.pem for tcp:// + TLS
//!   image: registry.local/team/api              # repository; default: the repo's dir name
//!   dockerfile: Dockerfile                      # inside the context
//!   context: .                                  # subdirectory of the checkout
//!   target: runtime                             # stage to build
//!   build_args: { VERSION: "1.2" }
//!   pull: false                                 # ask the engine to pull base images
//!   nocache: true                               # force a full (true) or cached (false) build
//!   full_rebuild_paths: ["vendor/**"]           # extra paths whose change means a full build
//!   max_image_size: 500MB                       # larger images fail the step
//!   optimize:                                   # propose a rewritten Dockerfile, proven
//!     port: 8080                                #   the port the service listens on
//!     health_path: /healthz                     #   must answer 2xx from the proposal
//!     health_timeout: 30s
//! ```
//!
//! `optimize: true` takes those defaults (the deploy agent's); see `prove.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::error::Error;
use super::size::parse_size;
use crate::agents::with::scalar;

/// Where the engine listens when neither `with: docker_host` nor `DOCKER_HOST` say.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

const KEYS: &[&str] = &[
    "docker_host",
    "tls_cert_path",
    "image",
    "dockerfile",
    "context",
    "target",
    "build_args",
    "pull",
    "nocache",
    "full_rebuild_paths",
    "max_image_size",
    "optimize",
];

const OPTIMIZE_KEYS: &[&str] = &["port", "health_path", "health_timeout"];

/// How a proposed Dockerfile is proven: the service it must still be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeConfig {
    pub port: u16,
    pub health_path: String,
    pub health_timeout: std::time::Duration,
}

impl Default for OptimizeConfig {
    fn default() -> Self {
        OptimizeConfig {
            port: 8080,
            health_path: "/healthz".into(),
            health_timeout: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub docker_host: String,
    /// Directory with `ca.pem`, `cert.pem`, `key.pem`: TLS to a `tcp://` engine.
    pub tls_cert_path: Option<PathBuf>,
    pub image: Option<String>,
    pub dockerfile: String,
    pub context: String,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub pull: bool,
    /// `Some` forces the cache decision.
    pub nocache: Option<bool>,
    pub full_rebuild_paths: Vec<String>,
    pub max_image_size: Option<(u64, String)>,
    pub optimize: Option<OptimizeConfig>,
}

impl BuildConfig {
    /// Reads `with:`; `env` looks up environment variables (`DOCKER_HOST`, `DOCKER_CERT_PATH`,
    /// `DOCKER_TLS_VERIFY`), injected so tests need not touch the process environment.
    pub fn from_with(
        with: &Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BuildConfig, Error> {
        let map = crate::agents::with::mapping(with, KEYS).map_err(Error::Config)?;
        let docker_host = string(map, "docker_host")?
            .or_else(|| env("DOCKER_HOST").filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        let tls_verify = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0");
        let tls_cert_path = string(map, "tls_cert_path")?
            .or_else(|| tls_verify.then(|| env("DOCKER_CERT_PATH")).flatten())
            .map(PathBuf::from);
        let build_args = match map.get("build_args") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(args)) => args
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        scalar(v).ok_or_else(|| {
                            Error::Config(format!(
                                "build_args.{k} must be a string, number or boolean"
                            ))
                        })?,
                    ))
                })
                .collect::<Result<_, Error>>()?,
            Some(_) => {
                return Err(Error::Config(
                    "build_args must be a mapping of names to values".into(),
                ));
            }
        };
        let full_rebuild_paths = match map.get("full_rebuild_paths") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        Error::Config("full_rebuild_paths must be a list of path patterns".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(Error::Config(
                    "full_rebuild_paths must be a list of path patterns".into(),
                ));
            }
        };
        let max_image_size = match map.get("max_image_size") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_u64().map(|b| (b, format!("{b} B"))),
            Some(Value::String(text)) => Some((
                parse_size(text).map_err(|e| Error::Config(format!("max_image_size: {e}")))?,
                text.clone(),
            )),
            Some(_) => {
                return Err(Error::Config(
                    "max_image_size must be a size such as 500MB".into(),
                ));
            }
        };
        let dockerfile = string(map, "dockerfile")?.unwrap_or_else(|| "Dockerfile".to_string());
        let context = string(map, "context")?.unwrap_or_else(|| ".".to_string());
        for (key, path) in [("dockerfile", &dockerfile), ("context", &context)] {
            if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return Err(Error::Config(format!(
                    "{key} `{path}` must be a relative path inside the checkout"
                )));
            }
        }
        Ok(BuildConfig {
            docker_host,
            tls_cert_path,
            image: string(map, "image")?,
            dockerfile,
            context,
            target: string(map, "target")?.filter(|t| !t.is_empty()),
            build_args,
            pull: boolean(map, "pull")?.unwrap_or(false),
            nocache: boolean(map, "nocache")?,
            full_rebuild_paths,
            max_image_size,
            optimize: optimize(map.get("optimize"))?,
        })
    }
}

fn optimize(value: Option<&Value>) -> Result<Option<OptimizeConfig>, Error> {
    let defaults = OptimizeConfig::default();
    let map = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => return Ok(Some(defaults)),
        Some(value @ Value::Object(_)) => crate::agents::with::mapping(value, OPTIMIZE_KEYS)
            .map_err(|e| Error::Config(format!("optimize: {e}")))?,
        Some(other) => {
            return Err(Error::Config(format!(
                "optimize must be true, false or a mapping (port, health_path, health_timeout), found {other}"
            )));
        }
    };
    let port = match map.get("port") {
        None | Some(Value::Null) => defaults.port,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Config(format!("optimize.port must be 1-65535, found {n}")))?,
        Some(other) => {
            return Err(Error::Config(format!(
                "optimize.port must be a port number, found {other}"
            )));
        }
    };
    let health_path = string(map, "health_path")?.unwrap_or(defaults.health_path);
    if !health_path.starts_with('/') {
        return Err(Error::Config(format!(
            "optimize.health_path must start with `/`, found `{health_path}`"
        )));
    }
    let health_timeout =
        crate::agents::with::duration(map.get("health_timeout"), "optimize.health_timeout")
            .map_err(Error::Config)?
            .unwrap_or(defaults.health_timeout);
    Ok(Some(OptimizeConfig {
        port,
        health_path,
        health_timeout,
    }))
}

fn string(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    crate::agents::with::string(map, key).map_err(Error::Config)
}

fn boolean(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>, Error> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::Config(format!(
            "{key} must be true or false, found {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_environment() {
        let config = BuildConfig::from_with(&json!({}), |_| None).expect("valid");
        assert_eq!(config.docker_host, DEFAULT_DOCKER_HOST);
        assert_eq!(config.dockerfile, "Dockerfile");
        assert!(!config.pull);
        let config = BuildConfig::from_with(&json!(null), |k| {
            (k == "DOCKER_HOST").then(|| "tcp://builder:2375".into())
        })
        .expect("valid");
        assert_eq!(config.docker_host, "tcp://builder:2375");
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        let error =
            BuildConfig::from_with(&json!({"max_image_sise": "1MB"}), |_| None).expect_err("typo");
        assert!(
            error.to_string().contains("unknown key `max_image_sise`"),
            "{error}"
        );
        assert!(BuildConfig::from_with(&json!({"max_image_size": "big"}), |_| None).is_err());
        assert!(BuildConfig::from_with(&json!({"dockerfile": "../Dockerfile"}), |_| None).is_err());
        let config = BuildConfig::from_with(
            &json!({"build_args": {"N": 3, "ON": true}, "max_image_size": "1KB"}),
            |_| None,
        )
        .expect("valid");
        assert_eq!(config.build_args["N"], "3");
        assert_eq!(config.max_image_size, Some((1000, "1KB".to_string())));
    }

    #[test]
    fn optimize_takes_true_or_the_service_it_must_stay() {
        let read = |v: Value| BuildConfig::from_with(&json!({ "optimize": v }), |_| None);
        assert_eq!(read(json!(false)).expect("valid").optimize, None);
        assert_eq!(
            read(json!(true)).expect("valid").optimize,
            Some(OptimizeConfig::default())
        );
        let config = read(json!({"port": 9000, "health_path": "/up", "health_timeout": "5s"}))
            .expect("valid")
            .optimize
            .expect("on");
        assert_eq!((config.port, config.health_path.as_str()), (9000, "/up"));
        assert_eq!(config.health_timeout, std::time::Duration::from_secs(5));
        for bad in [
            json!({"prot": 1}),
            json!({"port": 0}),
            json!({"health_path": "up"}),
            json!("yes"),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }
}
