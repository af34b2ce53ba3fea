//! The `retention:` section of `$CAIRN_HOME/cairn.yaml`:
//!
//! ```yaml
//! retention:
//!   runs: 90d            # finished runs older than this are deleted, with their events and logs
//!   logs: 30d            # step logs of finished runs older than this are deleted sooner
//!   keep_runs: 20        # the newest finished runs kept whatever their age
//!   workspaces: remove   # remove (default): a run's checkout goes when the run ends | keep
//!   cache_size: 1GiB     # most bytes all step caches hold together (least recently used go)
//! ```
//!
//! Durations use the project's one grammar (`pipeline::parse_duration`). The rest of the file
//! (`llm:`) is read by `llm::config`; each reader accepts the other's section unseen.

use std::path::Path;
use std::time::Duration;

use marked_yaml::Spanned;
use serde::Deserialize;

use crate::pipeline::{limits, parse_duration};
use crate::store::RetentionPolicy;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Whether a finished run's checkout is removed when the run ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspacePolicy {
    #[default]
    Remove,
    Keep,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    /// Read by `llm::config`.
    #[allow(dead_code)]
    llm: Option<serde::de::IgnoredAny>,
    /// Read by `pipeline::load_sandbox_settings`.
    #[allow(dead_code)]
    sandbox: Option<serde::de::IgnoredAny>,
    /// Read by `store::Location`.
    #[allow(dead_code)]
    store: Option<serde::de::IgnoredAny>,
    retention: Section,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Section {
    runs: Option<Spanned<String>>,
    logs: Option<Spanned<String>>,
    keep_runs: Option<usize>,
    workspaces: WorkspacePolicy,
    cache_size: Option<Spanned<String>>,
}

/// Retention settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub policy: RetentionPolicy,
    pub workspaces: WorkspacePolicy,
    /// Most bytes all cache entries hold together; saving past it evicts the least recently
    /// used, and an entry larger than it is not saved.
    pub cache_size: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            policy: RetentionPolicy {
                runs: Duration::from_secs(90 * 24 * 3600),
                logs: Duration::from_secs(30 * 24 * 3600),
                keep_runs: 20,
            },
            workspaces: WorkspacePolicy::Remove,
            cache_size: crate::exec::files::DEFAULT_CACHE_LIMIT,
        }
    }
}

impl Retention {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Retention, ConfigError> {
        let file = path.display().to_string();
        if !path.exists() {
            return Ok(Retention::default());
        }
        let text = limits::read_limited(path).map_err(|message| ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("failed to read: {message}"),
        })?;
        Self::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Retention, ConfigError> {
        let error = |line: usize, column: usize, message: String| ConfigError {
            file: file.to_owned(),
            line,
            column,
            message,
        };
        if text.trim().is_empty() {
            return Ok(Retention::default());
        }
        let parsed: File = limits::deserialize(text, |message| message)
            .map_err(|e| error(e.location.line, e.location.column, e.message))?;
        let mut retention = Retention::default();
        let section = parsed.retention;
        let duration = |value: &Spanned<String>, what: &str| {
            let (line, column) = value
                .span()
                .start()
                .map_or((1, 1), |mark| (mark.line(), mark.column()));
            match parse_duration(value.as_str()) {
                Ok(duration) if duration.is_zero() => Err(error(
                    line,
                    column,
                    format!("`retention.{what}` must be longer than 0s"),
                )),
                Ok(duration) => Ok(duration),
                Err(reason) => Err(error(
                    line,
                    column,
                    format!("invalid `retention.{what}`: {reason}"),
                )),
            }
        };
        if let Some(runs) = &section.runs {
            retention.policy.runs = duration(runs, "runs")?;
        }
        if let Some(logs) = &section.logs {
            retention.policy.logs = duration(logs, "logs")?;
        }
        // Logs go with their run at the latest.
        retention.policy.logs = retention.policy.logs.min(retention.policy.runs);
        if let Some(keep) = section.keep_runs {
            retention.policy.keep_runs = keep;
        }
        retention.workspaces = section.workspaces;
        if let Some(size) = &section.cache_size {
            let (line, column) = size
                .span()
                .start()
                .map_or((1, 1), |mark| (mark.line(), mark.column()));
            let text = size.as_str().trim();
            let bytes = text.parse::<u64>().ok().or_else(|| {
                text.parse::<bytesize::ByteSize>()
                    .ok()
                    .map(|size| size.as_u64())
            });
            retention.cache_size = match bytes {
                Some(bytes) if bytes > 0 => bytes,
                _ => {
                    return Err(error(
                        line,
                        column,
                        format!(
                            "invalid `retention.cache_size` `{}`: expected a size such as 512MiB or 2GiB",
                            size.as_str()
                        ),
                    ));
                }
            };
        }
        Ok(retention)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_full_section() {
        assert_eq!(
            Retention::parse("c.yaml", "").unwrap(),
            Retention::default()
        );
        let text = "llm:\n  cache_ttl: 7d\nsandbox: { policy: auto }\nretention:\n  runs: 14d\n  logs: 2d\n  keep_runs: 5\n  workspaces: keep\n  cache_size: 512MiB\n";
        let retention = Retention::parse("c.yaml", text).unwrap();
        assert_eq!(retention.policy.runs, Duration::from_secs(14 * 86_400));
        assert_eq!(retention.policy.logs, Duration::from_secs(2 * 86_400));
        assert_eq!(retention.policy.keep_runs, 5);
        assert_eq!(retention.workspaces, WorkspacePolicy::Keep);
        assert_eq!(retention.cache_size, 512 << 20);
    }

    #[test]
    fn mistakes_name_their_position() {
        let error = Retention::parse("c.yaml", "retention:\n  runs: -3d\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 9), "{error}");
        assert!(error.message.contains("negative"), "{error}");
        let error = Retention::parse("c.yaml", "retention:\n  run: 3d\n").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        let error =
            Retention::parse("c.yaml", "retention:\n  workspaces: sometimes\n").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        let error = Retention::parse("c.yaml", "retention:\n  cache_size: lots\n").unwrap_err();
        assert_eq!((error.line, error.column), (2, 15), "{error}");
    }
}
