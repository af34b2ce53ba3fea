//! Language-model configuration: the `llm:` section of `$CAIRN_HOME/cairn.yaml`.
//!
//! ```yaml
//! llm:
//!   remote:                         # absent: no remote tier, no socket is ever opened
//!     base_url: http://127.0.0.1:8080/v1   # any OpenAI-compatible /v1 endpoint
//!     model: gpt-4o-mini
//!     api_key_env: OPENAI_API_KEY   # the key is read from this variable, never from the file
//!     timeout: 20s                  # per HTTP attempt
//!     retries: 2                    # on 429 / 5xx / connection errors, honouring Retry-After
//!     call_timeout: 45s             # the whole call, retries and waits included; a step's
//!                                   # deadline shortens it (minus `local.reserve`)
//!     breaker: { failures: 5, cool_down: 60s }
//!   remote_sees: diff               # diff (redacted) | summary (the local model's summary only)
//!   redact:                         # extra patterns (regular expressions) to redact; one that
//!     patterns: ['ACME-[0-9]{8}']   # does not compile stops every remote call
//!   tasks:                          # task -> local | remote | remote-then-local
//!     assess_risk: remote-then-local
//!   cache_ttl: 7d
//!   budgets:                        # per tier; any limit may be left out
//!     remote: { run_tokens: 20000, day_tokens: 200000, month_tokens: 2000000,
//!               day_cost: 5.0, month_cost: 50.0 }
//!   prices:                         # per million tokens, in the budget's currency
//!     remote: { input: 0.15, output: 0.60 }
//!   local:
//!     model: /models/qwen2.5-coder-1.5b-q4.gguf   # default: CAIRN_MODEL or the cache
//!     threads: 2
//!     reserve: 40s                  # kept before a step's deadline for the local fallback
//! ```
//!
//! The defaults fit the shipped pipeline: a hung remote costs at most `call_timeout` (45 s),
//! and the orchestrator step's `timeout: 2m` leaves the local model its reserve after that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::task::{Task, TierChoice};
use crate::pipeline::parse_duration;
use crate::store::BudgetLimits;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub llm: LlmConfig,
    /// Read by `retention::Retention`; accepted unseen here.
    pub retention: Option<serde::de::IgnoredAny>,
    /// Read by `pipeline::load_sandbox_settings`; only tolerated here.
    pub sandbox: serde::de::IgnoredAny,
    /// Read by `store::Location`; only tolerated here.
    pub store: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub remote: Option<RemoteConfig>,
    pub remote_sees: RemoteSees,
    pub redact: RedactConfig,
    pub tasks: std::collections::HashMap<Spanned<String>, TierChoice>,
    pub cache_ttl: Option<Spanned<String>>,
    pub budgets: BTreeMap<String, BudgetConfig>,
    pub prices: BTreeMap<String, Price>,
    pub local: LocalConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub base_url: Spanned<String>,
    pub model: String,
    pub api_key_env: Option<String>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<u32>,
    pub call_timeout: Option<Spanned<String>>,
    pub breaker: Option<BreakerConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cool_down: Spanned<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteSees {
    /// The redacted diff itself.
    #[default]
    Diff,
    /// Only the local model's summary of the diff.
    Summary,
}

/// Limits are read signed, so a negative number gets its own message ("must not be
/// negative") instead of serde's "expected u64"; [`BudgetConfig::check`] refuses it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub run_tokens: Option<Spanned<i64>>,
    pub day_tokens: Option<Spanned<i64>>,
    pub month_tokens: Option<Spanned<i64>>,
    pub day_cost: Option<Spanned<f64>>,
    pub month_cost: Option<Spanned<f64>>,
}

impl BudgetConfig {
    /// The first negative or non-finite limit, with its position and name.
    fn check(&self) -> Option<(Option<marked_yaml::Marker>, String)> {
        let tokens = [
            ("run_tokens", &self.run_tokens),
            ("day_tokens", &self.day_tokens),
            ("month_tokens", &self.month_tokens),
        ];
        for (name, value) in tokens {
            if let Some(value) = value.as_ref().filter(|value| ***value < 0) {
                return Some((
                    value.span().start().copied(),
                    format!("`{name}` must not be negative, found {}", **value),
                ));
            }
        }
        for (name, value) in [
            ("day_cost", &self.day_cost),
            ("month_cost", &self.month_cost),
        ] {
            if let Some(value) = value
                .as_ref()
                .filter(|value| !(***value >= 0.0 && value.is_finite()))
            {
                return Some((
                    value.span().start().copied(),
                    format!("`{name}` must be a non-negative amount, found {}", **value),
                ));
            }
        }
        None
    }

    pub fn limits(&self) -> BudgetLimits {
        let tokens =
            |value: &Option<Spanned<i64>>| value.as_ref().and_then(|v| u64::try_from(**v).ok());
        BudgetLimits {
            run_tokens: tokens(&self.run_tokens),
            day_tokens: tokens(&self.day_tokens),
            month_tokens: tokens(&self.month_tokens),
            day_cost_micros: self.day_cost.as_ref().map(|cost| to_micros(**cost)),
            month_cost_micros: self.month_cost.as_ref().map(|cost| to_micros(**cost)),
        }
    }
}

/// Price per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> i64 {
        // Price per million tokens × tokens = millionths of the currency unit.
        (self.input * prompt_tokens as f64 + self.output * completion_tokens as f64).round() as i64
    }
}

pub fn to_micros(amount: f64) -> i64 {
    (amount * 1_000_000.0).round() as i64
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    pub model: Option<PathBuf>,
    /// Checked at load against [`MAX_LOCAL_THREADS`].
    pub threads: Option<usize>,
    pub reserve: Option<Spanned<String>>,
}

/// Most decode threads `llm.local.threads` may ask for: every thread is spawned at model load,
/// and more threads than cores only slows candle down (its pool spin-waits).
pub const MAX_LOCAL_THREADS: usize = 256;

/// Settings derived from the file, with durations parsed and tasks checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub remote: Option<RemoteSettings>,
    pub remote_sees: RemoteSees,
    pub tiers: BTreeMap<Task, TierChoice>,
    pub cache_ttl: Duration,
    pub budgets: BTreeMap<String, BudgetLimits>,
    pub prices: BTreeMap<String, Price>,
    pub local: LocalConfig,
    /// Time kept before a step's deadline for the local fallback.
    pub local_reserve: Duration,
}

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub base_url: String,
    pub model: String,
    pub api_key_env: Option<String>,
    /// One HTTP attempt.
    pub timeout: Duration,
    pub retries: u32,
    /// The whole call: every attempt and every wait between them.
    pub call_timeout: Duration,
    /// The user's extra redaction patterns (`llm.redact.patterns`).
    pub redact_patterns: Vec<String>,
    pub breaker_failures: u32,
    pub breaker_cool_down: Duration,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(45);
const DEFAULT_LOCAL_RESERVE: Duration = Duration::from_secs(40);

impl Default for Settings {
    fn default() -> Self {
        Self {
            remote: None,
            remote_sees: RemoteSees::Diff,
            tiers: BTreeMap::new(),
            cache_ttl: Duration::from_secs(7 * 24 * 3600),
            budgets: BTreeMap::new(),
            prices: BTreeMap::new(),
            local: LocalConfig::default(),
            local_reserve: DEFAULT_LOCAL_RESERVE,
        }
    }
}

impl Settings {
    /// The tier a task goes to: the configured one, else the default (remote-then-local for
    /// decisions when a remote exists, local otherwise).
    pub fn tier(&self, task: Task) -> TierChoice {
        let chosen = self
            .tiers
            .get(&task)
            .copied()
            .unwrap_or_else(|| task.default_tier());
        match (chosen, &self.remote) {
            (TierChoice::Remote | TierChoice::RemoteThenLocal, None) => TierChoice::Local,
            (choice, _) => choice,
        }
    }

    pub fn price(&self, tier: &str) -> Price {
        self.prices.get(tier).copied().unwrap_or_default()
    }

    pub fn budget(&self, tier: &str) -> BudgetLimits {
        self.budgets.get(tier).copied().unwrap_or_default()
    }

    /// Reads `path`; a missing file means the defaults (local model only).
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Settings::default());
            }
            Err(error) => {
                return Err(ConfigError {
                    file,
                    line: 1,
                    column: 1,
                    message: format!("failed to read: {error}"),
                });
            }
        };
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Settings, ConfigError> {
        let at = |span: Option<&marked_yaml::Marker>, message: String| ConfigError {
            file: file.to_string(),
            line: span.map_or(1, |m| m.line()),
            column: span.map_or(1, |m| m.column()),
            message,
        };
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        // Size, nesting depth and a single document, before any tree is built.
        crate::pipeline::limits::check(text).map_err(|error| ConfigError {
            file: file.to_string(),
            line: error.location.line,
            column: error.location.column,
            message: error.message,
        })?;
        let config: Config = marked_yaml::from_yaml(0, text).map_err(|error| match error {
            marked_yaml::FromYamlError::ParseYaml(load) => {
                // The loader's own text starts with its position; say it once, in front.
                let (location, message) = crate::pipeline::describe_load_error(&load);
                ConfigError {
                    file: file.to_string(),
                    line: location.line,
                    column: location.column,
                    message,
                }
            }
            marked_yaml::FromYamlError::FromNode(node) => {
                let inner = node.into_inner();
                let message = inner.to_string();
                match inner.start_mark() {
                    Some(mark) => at(Some(&mark), message),
                    None => {
                        let (line, column) = locate_key(text, &message);
                        ConfigError {
                            file: file.to_string(),
                            line,
                            column,
                            message,
                        }
                    }
                }
            }
        })?;
        let llm = config.llm;
        let duration = |value: &Spanned<String>| {
            parse_duration(value.as_str()).map_err(|e| {
                at(
                    value.span().start(),
                    format!("bad duration `{}`: {e}", value.as_str()),
                )
            })
        };
        let mut tiers = BTreeMap::new();
        for (name, tier) in &llm.tasks {
            let task = Task::from_name(name.as_str()).ok_or_else(|| {
                at(
                    name.span().start(),
                    format!(
                        "unknown task `{}` (known: {})",
                        name.as_str(),
                        Task::names().join(", ")
                    ),
                )
            })?;
            tiers.insert(task, *tier);
        }
        for budget in llm.budgets.values() {
            if let Some((mark, message)) = budget.check() {
                return Err(at(mark.as_ref(), format!("in `llm.budgets`: {message}")));
            }
        }
        if let Some(threads) = llm.local.threads
            && !(1..=MAX_LOCAL_THREADS).contains(&threads)
        {
            let (line, column) = locate_key(text, "`threads`");
            return Err(ConfigError {
                file: file.to_string(),
                line,
                column,
                message: format!(
                    "`llm.local.threads` must be between 1 and {MAX_LOCAL_THREADS}, found {threads}"
                ),
            });
        }
        let remote = match &llm.remote {
            None => None,
            Some(remote) => Some(RemoteSettings {
                base_url: check_base_url(remote.base_url.as_str())
                    .map_err(|message| at(remote.base_url.span().start(), message))?,
                model: remote.model.clone(),
                api_key_env: remote.api_key_env.clone(),
                timeout: remote
                    .timeout
                    .as_ref()
                    .map(duration)
                    .transpose()?
                    .unwrap_or(DEFAULT_TIMEOUT),
                retries: remote.retries.unwrap_or(DEFAULT_RETRIES),
                call_timeout: remote
                    .call_timeout
                    .as_ref()
                    .map(duration)
                    .transpose()?
                    .unwrap_or(DEFAULT_CALL_TIMEOUT),
                redact_patterns: llm.redact.patterns.clone(),
                breaker_failures: remote.breaker.as_ref().map_or(5, |b| b.failures.max(1)),
                breaker_cool_down: remote
                    .breaker
                    .as_ref()
                    .map(|b| duration(&b.cool_down))
                    .transpose()?
                    .unwrap_or(Duration::from_secs(60)),
            }),
        };
        Ok(Settings {
            remote,
            remote_sees: llm.remote_sees,
            tiers,
            cache_ttl: llm
                .cache_ttl
                .as_ref()
                .map(duration)
                .transpose()?
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            budgets: llm
                .budgets
                .iter()
                .map(|(tier, b)| (tier.clone(), b.limits()))
                .collect(),
            prices: llm.prices.clone(),
            local: llm.local.clone(),
            local_reserve: llm
                .local
                .reserve
                .as_ref()
                .map(duration)
                .transpose()?
                .unwrap_or(DEFAULT_LOCAL_RESERVE),
        })
    }
}

/// `base_url` without its trailing `/`, or why it cannot be used: it must be an absolute
/// http(s) URL with a host, known at load rather than at the first call mid-pipeline.
fn check_base_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|error| {
        format!("`base_url` `{text}` is not a URL ({error}); write e.g. http://127.0.0.1:8080/v1")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`base_url` `{text}` must start with http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`base_url` `{text}` has no host"));
    }
    Ok(trimmed.to_string())
}

/// marked-yaml reports unknown fields without a position; find the key in the text.
fn locate_key(text: &str, message: &str) -> (usize, usize) {
    let key = message.split('`').nth(1).unwrap_or_default();
    text.lines()
        .enumerate()
        .find_map(|(number, line)| {
            let indent = line.len() - line.trim_start().len();
            line.trim_start()
                .starts_with(&format!("{key}:"))
                .then_some((number + 1, indent + 1))
        })
        .unwrap_or((1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let text = "llm:\n  remote:\n    base_url: http://127.0.0.1:9/v1/\n    model: m\n    api_key_env: KEY\n    timeout: 5s\n  tasks:\n    summarize_diff: local\n    assess_risk: remote\n  budgets:\n    remote: { day_tokens: 100, day_cost: 1.5 }\n  prices:\n    remote: { input: 1.0, output: 2.0 }\n";
        let settings = Settings::parse("cairn.yaml", text).expect("parses");
        let remote = settings.remote.as_ref().expect("remote");
        assert_eq!(remote.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(remote.timeout, Duration::from_secs(5));
        assert_eq!(settings.tier(Task::AssessRisk), TierChoice::Remote);
        assert_eq!(settings.budget("remote").day_cost_micros, Some(1_500_000));
        assert_eq!(settings.price("remote").cost_micros(1_000, 500), 2_000);
    }

    #[test]
    fn the_defaults_fit_the_shipped_pipelines_analyze_step() {
        let pipeline = include_str!("../../../workflows/ai-pipeline.yaml");
        let step = &pipeline[pipeline.find("- id: analyze").expect("an analyze step")..];
        let timeout = step
            .lines()
            .take_while(|l| !l.trim_start().starts_with("- id:") || l.contains("analyze"))
            .find_map(|l| l.trim().strip_prefix("timeout:"))
            .map(|t| parse_duration(t.split('#').next().unwrap_or_default().trim()))
            .expect("the analyze step has a timeout")
            .expect("a valid duration");
        let settings = Settings::parse(
            "cairn.yaml",
            "llm:\n  remote:\n    base_url: http://127.0.0.1:9/v1\n    model: m\n",
        )
        .expect("parses");
        let remote = settings.remote.as_ref().expect("remote");
        // A hung remote costs at most `call_timeout`; the local fallback then has its reserve.
        assert!(
            remote.call_timeout + settings.local_reserve < timeout,
            "{:?} + {:?} does not fit {timeout:?}",
            remote.call_timeout,
            settings.local_reserve
        );
    }

    #[test]
    fn without_a_remote_every_task_is_local() {
        let settings = Settings::parse("cairn.yaml", "llm:\n  tasks:\n    assess_risk: remote\n")
            .expect("parses");
        assert_eq!(settings.tier(Task::AssessRisk), TierChoice::Local);
    }

    #[test]
    fn mistakes_are_located() {
        let error = Settings::parse("cairn.yaml", "llm:\n  tasks:\n    guess_mood: local\n")
            .expect_err("fails");
        assert_eq!((error.line, error.column), (3, 5), "{error}");
        assert!(
            error.message.contains("unknown task `guess_mood`"),
            "{error}"
        );
        let error = Settings::parse("cairn.yaml", "llm:\n  remotes: {}\n").expect_err("fails");
        assert!(error.to_string().starts_with("cairn.yaml:2:"), "{error}");
        let error = Settings::parse("cairn.yaml", "llm:\n  cache_ttl: soon\n").expect_err("fails");
        assert!(error.to_string().contains("bad duration"), "{error}");
    }

    #[test]
    fn config_errors_point_at_the_real_line() {
        let error = |text: &str| match Settings::parse("cairn.yaml", text) {
            Err(error) => error,
            Ok(settings) => panic!("accepted {settings:?}"),
        };
        // A syntax error: its position once, at the front, not `1:1: 3:1: …`.
        let syntax = error("llm:\n  tasks:\n    assess_risk: [local\n  cache_ttl: 7d\n");
        assert_ne!((syntax.line, syntax.column), (1, 1), "{syntax}");
        assert!(!syntax.message.starts_with(char::is_numeric), "{syntax}");
        // A missing field points at the mapping that lacks it.
        let missing = error("llm:\n  cache_ttl: 7d\n  remote:\n    model: m\n");
        assert!(missing.line >= 3, "{missing}");
        assert!(missing.message.contains("base_url"), "{missing}");
    }

    #[test]
    fn bad_values_are_refused_at_load_with_their_position() {
        let error = |text: &str| match Settings::parse("cairn.yaml", text) {
            Err(error) => error,
            Ok(settings) => panic!("accepted {settings:?}"),
        };
        let negative = error("llm:\n  budgets:\n    remote:\n      day_tokens: -5\n");
        assert_eq!(negative.line, 4, "{negative}");
        assert!(
            negative.message.contains("must not be negative"),
            "{negative}"
        );
        let cost = error("llm:\n  budgets:\n    remote: { day_cost: -1.5 }\n");
        assert!(cost.message.contains("day_cost"), "{cost}");
        for url in ["not a url", "ftp://host/v1", "http://"] {
            let bad = error(&format!(
                "llm:\n  remote:\n    base_url: {url}\n    model: m\n"
            ));
            assert_eq!(bad.line, 3, "{bad}");
            assert!(bad.message.contains("base_url"), "{bad}");
        }
        let threads = error("llm:\n  local:\n    threads: 100000000\n");
        assert_eq!((threads.line, threads.column), (3, 5), "{threads}");
        assert!(threads.message.contains("between 1 and"), "{threads}");
        let second = error("llm:\n  cache_ttl: 7d\n---\nllm: {}\n");
        assert_eq!(second.line, 3, "{second}");
        let fine = Settings::parse("cairn.yaml", "llm:\n  local:\n    threads: 2\n").expect("ok");
        assert_eq!(fine.local.threads, Some(2));
    }
}
