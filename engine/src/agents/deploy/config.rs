//! The step's `with:` block and the run context, checked once into a typed [`DeployConfig`].
//! Unknown keys are an error: a misspelt `min_samples` must not silently weaken the analysis.
//!
//! ```yaml
//! with:
//!   service: shop                 # names containers, labels and proxy servers
//!   image: shop:3f2a…             # default: the build step's `image` output
//!   version: v2                   # label shown in reports; default: the image tag
//!   replicas: 3
//!   env: { DEMO_VERSION: v2 }     # container environment
//!   container_port: 8080
//!   strategy: canary              # rolling | blue_green | canary | hotfix; fixed, no model asked
//!   strategies: { low: rolling, medium: rolling, high: canary }   # the rules floor by risk
//!   listen: 127.0.0.1:8080        # Cairn runs the service's HAProxy itself, serving here, or:
//!   proxy_socket: /run/haproxy/admin.sock   # an existing HAProxy's runtime API (level admin)
//!   backend: shop                 # its backend the replicas are servers of (default: service)
//!   health_path: /healthz
//!   metrics_path: /metrics        # each replica's own endpoint, or a Prometheus server:
//!   prometheus: { url: http://127.0.0.1:9090, selector: 'instance="{address}"', targets_file: … }
//!   health_timeout: 30s           # a replica not healthy by then fails the deploy
//!   canary_steps: [5, 25, 50, 100]          # percent of traffic, analysed at each step
//!   monitor_window: 10m           # whole canary analysis; default 10m, 30m at high risk
//!   analysis_interval: 5s         # how often metrics are scraped and tested
//!   min_samples: 100              # per side, below it the verdict is inconclusive
//!   max_wait: 10m                 # a step lacking min_samples waits for traffic, the canary
//!                                 # as a whole at most this long past monitor_window (default:
//!                                 # monitor_window); only then is it inconclusive
//!   inconclusive: rollback        # or `hold`: the canary keeps its split until a person runs
//!                                 # `cairn promote RUN` or `cairn rollback RUN`
//!   alpha: 0.01                   # significance level of both tests
//!   max_error_rate_delta: 0.01    # canary error rate may exceed baseline by this much
//!   max_latency_ratio: 1.5        # canary mean latency may be this many times baseline
//!   keep_previous: 15m            # retired replicas are kept this long for instant rollback
//!   notify: { slack: http://…, webhook: http://…, window: 60s, success: false, max_per_run: 20 }
//!   windows: [{ days: [mon, tue], hours: "09:00-16:00" }]   # and freeze:, timezone:,
//!                                 # window_risks:, hotfix_bypasses_freeze: (see `window.rs`)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::analysis::Thresholds;
use super::error::Error;
use super::notify::NotifyConfig;
use super::source::MetricsSource;
use super::window::Calendar;
use crate::agents::with::scalar;

const KEYS: &[&str] = &[
    "service",
    "image",
    "version",
    "replicas",
    "env",
    "container_port",
    "strategy",
    "strategies",
    "listen",
    "proxy_socket",
    "backend",
    "health_path",
    "metrics_path",
    "health_timeout",
    "canary_steps",
    "monitor_window",
    "analysis_interval",
    "min_samples",
    "max_wait",
    "inconclusive",
    "alpha",
    "max_error_rate_delta",
    "max_latency_ratio",
    "keep_previous",
    "notify",
    "docker_host",
    "tls_cert_path",
    "prometheus",
    // Deploy windows and freezes (`window.rs`).
    "timezone",
    "windows",
    "window_risks",
    "freeze",
    "hotfix_bypasses_freeze",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Rolling,
    BlueGreen,
    Canary,
    Hotfix,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue_green",
            Strategy::Canary => "canary",
            Strategy::Hotfix => "hotfix",
        }
    }

    /// How much the strategy limits the damage of a bad release: a model may move a deploy
    /// up this order, never down it. Hotfix is never chosen by a model.
    pub fn caution(self) -> u8 {
        match self {
            Strategy::Hotfix => 0,
            Strategy::Rolling => 1,
            Strategy::BlueGreen => 2,
            Strategy::Canary => 3,
        }
    }

    pub fn parse(text: &str) -> Option<Strategy> {
        match text.replace('-', "_").as_str() {
            "rolling" => Some(Strategy::Rolling),
            "blue_green" => Some(Strategy::BlueGreen),
            "canary" => Some(Strategy::Canary),
            "hotfix" => Some(Strategy::Hotfix),
            _ => None,
        }
    }
}

/// What a canary that is still inconclusive after `max_wait` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconclusive {
    /// The previous release takes all traffic again (the default: no verdict, no release).
    Rollback,
    /// The split stays and the step waits for `cairn promote` or `cairn rollback`; the
    /// analysis goes on meanwhile, so errors or a crash still roll back on their own.
    Hold,
}

#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub docker_host: String,
    pub tls_cert_path: Option<PathBuf>,
    pub service: String,
    pub image: String,
    pub version: String,
    pub replicas: usize,
    pub env: BTreeMap<String, String>,
    pub container_port: u16,
    pub strategy: Strategy,
    /// Why this strategy: the override, or the risk rule.
    pub strategy_reason: String,
    /// `with: strategy:` was given: neither the hotfix marker nor a model may change it.
    pub strategy_fixed: bool,
    pub risk: String,
    /// Where the proxy's runtime API is: given, or the managed proxy's under `proxies/`.
    pub proxy_socket: PathBuf,
    /// Set when Cairn runs the proxy itself (`with: listen:`).
    pub listen: Option<String>,
    pub backend: String,
    pub health_path: String,
    pub metrics_path: String,
    pub metrics: MetricsSource,
    pub health_timeout: Duration,
    pub canary_steps: Vec<f64>,
    pub monitor_window: Duration,
    pub analysis_interval: Duration,
    /// How long past `monitor_window` the canary may wait for `min_samples`.
    pub max_wait: Duration,
    pub inconclusive: Inconclusive,
    pub thresholds: Thresholds,
    pub keep_previous: Duration,
    pub notify: NotifyConfig,
    pub calendar: Calendar,
}

impl DeployConfig {
    /// Reads `with:` and the run context (`risk`, the build's `image`); `env` looks up
    /// `DOCKER_HOST` and friends, injected so tests need not touch the process environment.
    pub fn from_with(
        with: &Value,
        context: &Value,
        workspace: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DeployConfig, Error> {
        let map = crate::agents::with::mapping(with, KEYS).map_err(Error::Config)?;
        let image = string(map, "image")?
            .or_else(|| {
                context
                    .get("image")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                Error::Config("no image: set `with: image:` or run after a build_agent step".into())
            })?;
        let service =
            string(map, "service")?.ok_or_else(|| Error::Config("`service` is required".into()))?;
        if service.is_empty()
            || !service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Config(format!(
                "service `{service}` must be letters, digits, `-` or `_`"
            )));
        }
        let version = string(map, "version")?.unwrap_or_else(|| {
            image
                .rsplit_once(':')
                .map_or(image.clone(), |(_, tag)| tag.to_string())
        });
        let risk = context
            .get("risk")
            .and_then(Value::as_str)
            .unwrap_or("medium")
            .to_string();
        let by_risk = strategies(map.get("strategies"))?;
        let fixed = string(map, "strategy")?;
        let strategy_fixed = fixed.is_some();
        let (strategy, strategy_reason) = match fixed {
            Some(text) => (
                parse_strategy("strategy", &text)?,
                format!("`with: strategy: {text}`"),
            ),
            None => {
                let strategy = by_risk
                    .get(risk.as_str())
                    .copied()
                    .unwrap_or(Strategy::Canary);
                (strategy, format!("risk is {risk}: {}", strategy.as_str()))
            }
        };
        let env_map = match map.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(vars)) => vars
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        scalar(v).ok_or_else(|| {
                            Error::Config(format!("env.{k} must be a string, number or boolean"))
                        })?,
                    ))
                })
                .collect::<Result<_, Error>>()?,
            Some(_) => {
                return Err(Error::Config(
                    "env must be a mapping of names to values".into(),
                ));
            }
        };
        let canary_steps = match map.get("canary_steps") {
            None | Some(Value::Null) => vec![5.0, 25.0, 50.0, 100.0],
            Some(Value::Array(items)) => {
                let steps: Vec<f64> = items.iter().filter_map(Value::as_f64).collect();
                let increasing = steps.windows(2).all(|w| w[0] < w[1]);
                if steps.len() != items.len()
                    || steps.is_empty()
                    || !increasing
                    || steps.iter().any(|s| *s <= 0.0 || *s > 100.0)
                {
                    return Err(Error::Config(
                        "canary_steps must be increasing percentages in (0, 100]".into(),
                    ));
                }
                steps
            }
            Some(_) => {
                return Err(Error::Config(
                    "canary_steps must be a list of percentages".into(),
                ));
            }
        };
        let default_window = if risk == "high" {
            Duration::from_secs(30 * 60)
        } else {
            Duration::from_secs(10 * 60)
        };
        let thresholds = thresholds(map)?;
        let monitor_window = duration(map, "monitor_window")?.unwrap_or(default_window);
        let inconclusive = match string(map, "inconclusive")?.as_deref() {
            None | Some("rollback") => Inconclusive::Rollback,
            Some("hold") => Inconclusive::Hold,
            Some(other) => {
                return Err(Error::Config(format!(
                    "inconclusive `{other}` is not one of rollback, hold"
                )));
            }
        };
        let listen = string(map, "listen")?;
        let proxy_socket = match (string(map, "proxy_socket")?, &listen) {
            (Some(_), Some(_)) => return Err(Error::Config("set `listen` (Cairn runs the proxy) or `proxy_socket` (your HAProxy), not both".into())),
            (Some(socket), None) => PathBuf::from(socket),
            (None, Some(_)) => managed_dir(workspace, &service).join("admin.sock"),
            (None, None) => return Err(Error::Config("no proxy: set `listen: 127.0.0.1:PORT` (Cairn runs HAProxy) or `proxy_socket` (an HAProxy runtime API socket)".into())),
        };
        let backend = match (string(map, "backend")?, &listen) {
            (Some(backend), _) => backend,
            (None, Some(_)) => service.clone(),
            (None, None) => {
                return Err(Error::Config(
                    "`backend` (the HAProxy backend) is required with `proxy_socket`".into(),
                ));
            }
        };
        Ok(DeployConfig {
            docker_host: string(map, "docker_host")?
                .or_else(|| env("DOCKER_HOST").filter(|h| !h.is_empty()))
                .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string()),
            tls_cert_path: string(map, "tls_cert_path")?.map(PathBuf::from),
            service,
            image,
            version,
            replicas: number(map, "replicas")?
                .map(|n| n as usize)
                .unwrap_or(2)
                .max(1),
            env: env_map,
            container_port: number(map, "container_port")?
                .map(|n| n as u16)
                .unwrap_or(8080),
            strategy,
            strategy_reason,
            strategy_fixed,
            risk,
            proxy_socket,
            listen,
            backend,
            health_path: string(map, "health_path")?.unwrap_or_else(|| "/healthz".into()),
            metrics_path: string(map, "metrics_path")?.unwrap_or_else(|| "/metrics".into()),
            metrics: MetricsSource::from_map(map).map_err(Error::Config)?,
            health_timeout: duration(map, "health_timeout")?.unwrap_or(Duration::from_secs(30)),
            canary_steps,
            monitor_window,
            analysis_interval: duration(map, "analysis_interval")?
                .unwrap_or(Duration::from_secs(5)),
            max_wait: duration(map, "max_wait")?.unwrap_or(monitor_window),
            inconclusive,
            thresholds,
            keep_previous: duration(map, "keep_previous")?.unwrap_or(Duration::from_secs(15 * 60)),
            notify: NotifyConfig::from_value(map.get("notify")).map_err(Error::Config)?,
            calendar: Calendar::from_map(map).map_err(Error::Config)?,
        })
    }
}

/// The analysis thresholds (`min_samples`, `alpha`, `max_error_rate_delta`, `max_latency_ratio`).
pub(super) fn thresholds(map: &Map<String, Value>) -> Result<Thresholds, Error> {
    Ok(Thresholds {
        min_samples: number(map, "min_samples")?.map(|n| n as u64).unwrap_or(100),
        alpha: number(map, "alpha")?.unwrap_or(0.01),
        max_error_rate_delta: number(map, "max_error_rate_delta")?.unwrap_or(0.01),
        max_latency_ratio: number(map, "max_latency_ratio")?.unwrap_or(1.5),
    })
}

/// Where the managed proxy of `service` keeps its configuration, pid file and socket: beside
/// the run directories (`<work>/proxies/<service>`, shared by every run of the home), or in the
/// checkout when it is not a run's.
pub fn managed_dir(workspace: &Path, service: &str) -> PathBuf {
    let work_dir = workspace
        .parent()
        .filter(|run_dir| {
            run_dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("run-"))
        })
        .and_then(Path::parent);
    match work_dir {
        Some(work_dir) => work_dir.join("proxies"),
        None => workspace.join(".cairn-proxies"),
    }
    .join(service)
}

fn parse_strategy(key: &str, text: &str) -> Result<Strategy, Error> {
    Strategy::parse(text).ok_or_else(|| {
        Error::Config(format!(
            "{key} `{text}` is not one of rolling, blue_green, canary, hotfix"
        ))
    })
}

/// The rules floor by risk: rolling for low and medium, canary for high, unless configured.
fn strategies(value: Option<&Value>) -> Result<BTreeMap<&'static str, Strategy>, Error> {
    let mut by_risk = BTreeMap::from([
        ("low", Strategy::Rolling),
        ("medium", Strategy::Rolling),
        ("high", Strategy::Canary),
    ]);
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (risk, strategy) in entries {
                let Some(level) = ["low", "medium", "high"].into_iter().find(|l| l == risk) else {
                    return Err(Error::Config(format!(
                        "strategies.{risk}: the risk levels are low, medium and high"
                    )));
                };
                let text = strategy.as_str().ok_or_else(|| {
                    Error::Config(format!("strategies.{risk} must be a strategy name"))
                })?;
                by_risk.insert(level, parse_strategy(&format!("strategies.{risk}"), text)?);
            }
        }
        Some(_) => {
            return Err(Error::Config(
                "strategies must map risk levels (low, medium, high) to strategies".into(),
            ));
        }
    }
    Ok(by_risk)
}

pub(super) fn duration(map: &Map<String, Value>, key: &str) -> Result<Option<Duration>, Error> {
    crate::agents::with::duration(map.get(key), key).map_err(Error::Config)
}

pub(super) fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    crate::agents::with::string(map, key).map_err(Error::Config)
}

pub(super) fn number(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, Error> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| *v >= 0.0)
            .map(Some)
            .ok_or_else(|| Error::Config(format!("{key} must not be negative"))),
        Some(other) => Err(Error::Config(format!(
            "{key} must be a number, found {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"service": "shop", "image": "shop:abc", "proxy_socket": "/tmp/s", "backend": "be"})
    }

    #[test]
    fn strategy_follows_risk_unless_overridden() {
        let ws = Path::new("/tmp");
        let low =
            DeployConfig::from_with(&base(), &json!({"risk": "low"}), ws, |_| None).expect("valid");
        assert_eq!(low.strategy, Strategy::Rolling);
        let high = DeployConfig::from_with(&base(), &json!({"risk": "high"}), ws, |_| None)
            .expect("valid");
        assert_eq!(
            (high.strategy, high.monitor_window),
            (Strategy::Canary, Duration::from_secs(1800))
        );
        // Waiting for traffic defaults to the window; an inconclusive canary rolls back.
        assert_eq!(
            (high.max_wait, high.inconclusive),
            (Duration::from_secs(1800), Inconclusive::Rollback)
        );
        let mut with = base();
        with["strategy"] = json!("blue-green");
        let chosen =
            DeployConfig::from_with(&with, &json!({"risk": "high"}), ws, |_| None).expect("valid");
        assert_eq!(chosen.strategy, Strategy::BlueGreen);
        assert_eq!(chosen.version, "abc");
    }

    #[test]
    fn a_managed_proxy_lives_beside_the_deploy_state() {
        let ws = Path::new("/srv/cairn/work/run-7/src");
        let with = json!({"service": "shop", "image": "shop:abc", "listen": "127.0.0.1:8080"});
        let config = DeployConfig::from_with(&with, &json!({}), ws, |_| None).expect("valid");
        assert_eq!(
            config.proxy_socket,
            Path::new("/srv/cairn/work/proxies/shop/admin.sock")
        );
        assert_eq!(config.backend, "shop");
        let mut both = with.clone();
        both["proxy_socket"] = json!("/tmp/s");
        assert!(DeployConfig::from_with(&both, &json!({}), ws, |_| None).is_err());
        let neither = json!({"service": "shop", "image": "shop:abc"});
        assert!(
            DeployConfig::from_with(&neither, &json!({}), ws, |_| None)
                .expect_err("no proxy")
                .to_string()
                .contains("listen")
        );
    }

    #[test]
    fn strategies_by_risk_are_configurable() {
        let ws = Path::new("/tmp");
        let mut with = base();
        with["strategies"] = json!({"medium": "blue-green"});
        let medium = DeployConfig::from_with(&with, &json!({"risk": "medium"}), ws, |_| None)
            .expect("valid");
        assert_eq!(
            (medium.strategy, medium.strategy_fixed),
            (Strategy::BlueGreen, false)
        );
        let low =
            DeployConfig::from_with(&with, &json!({"risk": "low"}), ws, |_| None).expect("valid");
        assert_eq!(low.strategy, Strategy::Rolling);
        with["strategies"] = json!({"urgent": "hotfix"});
        let error =
            DeployConfig::from_with(&with, &json!({}), ws, |_| None).expect_err("unknown level");
        assert!(error.to_string().contains("strategies.urgent"), "{error}");
    }

    #[test]
    fn rejects_typos_and_bad_values() {
        let ws = Path::new("/tmp");
        let mut with = base();
        with["min_sample"] = json!(3);
        let error = DeployConfig::from_with(&with, &json!({}), ws, |_| None).expect_err("typo");
        assert!(
            error.to_string().contains("unknown key `min_sample`"),
            "{error}"
        );
        let mut with = base();
        with["inconclusive"] = json!("wait");
        let error = DeployConfig::from_with(&with, &json!({}), ws, |_| None).expect_err("policy");
        assert!(error.to_string().contains("rollback, hold"), "{error}");
        let mut with = base();
        with["canary_steps"] = json!([50, 25]);
        assert!(DeployConfig::from_with(&with, &json!({}), ws, |_| None).is_err());
        // Values that used to reach `Duration::from_secs_f64` and panic are plain errors.
        for value in [
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!(30),
        ] {
            let mut map = serde_json::Map::new();
            map.insert("health_timeout".into(), value);
            match duration(&map, "health_timeout") {
                Err(error) => assert!(error.to_string().contains("with a unit"), "{error}"),
                Ok(parsed) => panic!("accepted {parsed:?}"),
            }
        }
    }
}
