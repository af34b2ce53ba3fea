//! The `uses:` actions built in, since an air gap has no marketplace: each is mapped onto
//! what Cairn does itself.
//!
//! - `actions/checkout`: nothing to do, the run's workspace is a checkout of the commit;
//! - `actions/upload-artifact` (`with.path`, one path or glob per line): the job's
//!   `artifacts:`, handed to every job that needs it, directly or not, when the job succeeds;
//! - `actions/download-artifact`: nothing to do, a job receives its needs' artifacts;
//! - `actions/cache` (`with.key`, `with.path`, `with.restore-keys`): the job's `cache:`,
//!   restored before the job and saved after it succeeds; `${{ hashFiles('…') }}` becomes
//!   `{{ hash '…' }}` and `${{ runner.os }}` is `Linux`.
//!
//! Any other action is an error naming the step.

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::super::error::Diagnostics;
use super::super::files::workspace_pattern;
use super::super::model::{CacheSpec, KeyTemplate, StepFiles};
use super::super::yaml::{entry, location, scalar_location};
use super::expressions::Scope;

/// The shell a built-in action amounts to (`:` for all of them: what they do happens around
/// the job), or `None` after reporting why the step cannot be read.
pub(super) fn uses_step(
    uses: &Node,
    step: &MarkedMappingNode,
    step_label: &str,
    scope: &Scope<'_>,
    files: &mut StepFiles,
    diagnostics: &mut Diagnostics,
) -> Option<String> {
    let action = uses
        .as_scalar()
        .map(|s| s.as_str().trim())
        .unwrap_or_default();
    let name = action.split('@').next().unwrap_or(action);
    match name {
        "actions/checkout" | "actions/download-artifact" => Some(":".to_owned()),
        "actions/upload-artifact" => {
            for path in with_lines(step, "path", step_label, diagnostics)? {
                match workspace_pattern(&path) {
                    Ok(pattern) if !files.artifacts.contains(&pattern) => {
                        files.artifacts.push(pattern)
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        report_with(step, "path", step_label, &reason, diagnostics);
                        return None;
                    }
                }
            }
            Some(":".to_owned())
        }
        "actions/cache" => {
            if files.cache.is_some() {
                diagnostics.report(
                    location(uses),
                    format!(
                        "{step_label}: a job keeps one cache; this is its second `actions/cache`"
                    ),
                );
                return None;
            }
            let mut paths = Vec::new();
            for path in with_lines(step, "path", step_label, diagnostics)? {
                match workspace_pattern(&path) {
                    Ok(pattern) => paths.push(pattern),
                    Err(reason) => {
                        report_with(step, "path", step_label, &reason, diagnostics);
                        return None;
                    }
                }
            }
            let key_text = with_lines(step, "key", step_label, diagnostics)?.join("");
            let key = match cache_key(&key_text, scope) {
                Ok(key) => key,
                Err(reason) => {
                    report_with(step, "key", step_label, &reason, diagnostics);
                    return None;
                }
            };
            let mut restore_keys = Vec::new();
            if with_value(step, "restore-keys").is_some() {
                for text in with_lines(step, "restore-keys", step_label, diagnostics)? {
                    match cache_key(&text, scope) {
                        Ok(key) => restore_keys.push(key),
                        Err(reason) => {
                            report_with(step, "restore-keys", step_label, &reason, diagnostics);
                            return None;
                        }
                    }
                }
            }
            files.cache = Some(CacheSpec {
                key,
                paths,
                restore_keys,
            });
            Some(":".to_owned())
        }
        _ => {
            diagnostics.report(
                location(uses),
                format!("{step_label} uses `{action}`: only `actions/checkout`, `actions/upload-artifact`, `actions/download-artifact` and `actions/cache` are built in (no marketplace actions in an air gap); replace it with a `run:` step"),
            );
            None
        }
    }
}

fn with_value<'a>(step: &'a MarkedMappingNode, key: &str) -> Option<&'a Node> {
    let (_, with) = entry(step, "with")?;
    entry(with.as_mapping()?, key).map(|(_, node)| node)
}

/// `with.<key>` as its non-empty lines (GitHub's way of listing paths in one string).
fn with_lines(
    step: &MarkedMappingNode,
    key: &str,
    step_label: &str,
    diagnostics: &mut Diagnostics,
) -> Option<Vec<String>> {
    let Some(node) = with_value(step, key) else {
        let at = entry(step, "uses").map(|(k, _)| scalar_location(k));
        if let Some(at) = at {
            diagnostics.report(at, format!("{step_label} needs `with.{key}`"));
        }
        return None;
    };
    let Some(text) = node.as_scalar() else {
        diagnostics.report(
            location(node),
            format!("`with.{key}` of {step_label} must be text (one entry per line)"),
        );
        return None;
    };
    let lines: Vec<String> = text
        .as_str()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        diagnostics.report(
            location(node),
            format!("`with.{key}` of {step_label} is empty"),
        );
        return None;
    }
    Some(lines)
}

fn report_with(
    step: &MarkedMappingNode,
    key: &str,
    step_label: &str,
    reason: &str,
    diagnostics: &mut Diagnostics,
) {
    if let Some(node) = with_value(step, key) {
        diagnostics.report(
            location(node),
            format!("in `with.{key}` of {step_label}: {reason}"),
        );
    }
}

/// An Actions cache key as a Cairn key template.
fn cache_key(text: &str, scope: &Scope<'_>) -> Result<KeyTemplate, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| "`${{` without its closing `}}`".to_owned())?;
        let expression = after[..end].trim();
        out.push_str(&key_part(expression, scope)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    KeyTemplate::parse(&out).map_err(|(_, message)| message)
}

fn key_part(expression: &str, scope: &Scope<'_>) -> Result<String, String> {
    if let Some(arguments) = expression
        .strip_prefix("hashFiles(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let patterns: Vec<&str> = arguments
            .split(',')
            .map(|a| a.trim().trim_matches('\''))
            .filter(|a| !a.is_empty())
            .collect();
        if patterns.is_empty() {
            return Err("`hashFiles()` names no file".to_owned());
        }
        let quoted: Vec<String> = patterns.iter().map(|p| format!("'{p}'")).collect();
        return Ok(format!("{{{{ hash {} }}}}", quoted.join(" ")));
    }
    match expression.split('.').collect::<Vec<_>>().as_slice() {
        ["runner", "os"] => Ok("Linux".to_owned()),
        ["runner", "arch"] => Ok(std::env::consts::ARCH.to_owned()),
        ["matrix", key] => {
            scope.matrix.get(*key).cloned().ok_or_else(|| {
                format!("`matrix.{key}` is not in the matrix of job `{}`", scope.job)
            })
        }
        _ => Err(format!(
            "`${{{{ {expression} }}}}` is not supported in a cache key (supported: hashFiles('…'), runner.os, runner.arch, matrix.*)"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn cache_keys_become_templates() {
        let matrix = BTreeMap::from([("rust".to_owned(), "stable".to_owned())]);
        let ids = BTreeMap::new();
        let scope = Scope {
            job: "build",
            matrix: &matrix,
            ids: &ids,
            needs: &[],
        };
        let key = cache_key(
            "${{ runner.os }}-cargo-${{ matrix.rust }}-${{ hashFiles('**/Cargo.lock', 'rust-toolchain') }}",
            &scope,
        )
        .unwrap();
        assert_eq!(
            key.source,
            "Linux-cargo-stable-{{ hash '**/Cargo.lock' 'rust-toolchain' }}"
        );
        let error = cache_key("${{ github.sha }}", &scope).unwrap_err();
        assert!(error.contains("not supported in a cache key"), "{error}");
    }
}
