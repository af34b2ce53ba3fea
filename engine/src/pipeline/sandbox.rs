//! The sandbox keys of a workflow: `sandbox: required` at the top level, and per step the
//! declared exceptions (`sandbox: { read, write, docker, network }`), `network:` and
//! `limits:`. How they are enforced is `exec::sandbox`; see `ARCHITECTURE.md` ("Sandbox").
//!
//! ```yaml
//! sandbox: required              # top level, optional: refuse to run without a sandbox
//! steps:
//!   - id: integration
//!     run: make integration
//!     sandbox:
//!       read: [/srv/fixtures]     # absolute or ~/ paths the step may read beyond the system
//!       write: [~/.cache/pip]     # ... and write beyond its workspace and private /tmp
//!       docker: true              # the Docker socket (never given otherwise)
//!       network: host             # host (default) | none
//!     network: none               # shorthand for sandbox.network
//!     limits: { memory: 2GiB, processes: 256, file_size: 1GiB }   # or `unlimited`
//! ```

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::error::{Diagnostics, Error};
use super::model::{Limit, Limits, Network, SandboxPolicy, SandboxRequirement, StepSandbox};
use super::yaml::{check_keys, describe, entry, integer, is_null, location, string_or_list};

pub(crate) const SANDBOX_KEYS: &[&str] = &["read", "write", "docker", "network"];
const LIMIT_KEYS: &[&str] = &["memory", "processes", "file_size"];
const NETWORK_VALUES: &[&str] = &["host", "none"];
const CONFIG_KEYS: &[&str] = &["policy", "limits"];

/// The `sandbox:` section of `cairn.yaml`:
///
/// ```yaml
/// sandbox:
///   policy: auto        # auto (default): sandbox when possible, warn otherwise
///                       # required: refuse to run steps without a sandbox | off
///   limits: { memory: 4GiB, processes: 1024, file_size: 4GiB }   # every step's defaults
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxSettings {
    pub policy: Option<SandboxPolicy>,
    pub limits: Limits,
}

/// Reads the `sandbox:` section of a configuration file's text; other sections are not
/// looked at (they have their own readers). Every problem has `file:line:column`.
pub fn load_sandbox_settings(file_name: &str, text: &str) -> Result<SandboxSettings, Error> {
    let mut diagnostics = Diagnostics::new(file_name);
    let mut settings = SandboxSettings::default();
    if text.trim().is_empty() {
        return Ok(settings);
    }
    let mut root = match marked_yaml::parse_yaml(0, text) {
        Ok(root) => root,
        Err(error) => {
            diagnostics.report(
                super::model::Location { line: 1, column: 1 },
                format!("invalid YAML: {error}"),
            );
            return Err(diagnostics.into_error());
        }
    };
    super::yaml::normalize_spans(&mut root, &super::yaml::Source::new(text));
    let Some((_, node)) = root.as_mapping().and_then(|m| entry(m, "sandbox")) else {
        return Ok(settings);
    };
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "`sandbox` must be a mapping with any of {}, not {}",
                CONFIG_KEYS.join(", "),
                describe(node)
            ),
        );
        return Err(diagnostics.into_error());
    };
    check_keys(mapping, CONFIG_KEYS, "in `sandbox`", &mut diagnostics);
    if let Some((_, value)) = entry(mapping, "policy") {
        settings.policy = value
            .as_scalar()
            .and_then(|s| SandboxPolicy::parse(s.as_str()));
        if settings.policy.is_none() {
            diagnostics.report(
                location(value),
                format!(
                    "`policy` in `sandbox` must be auto, required or off, not {}",
                    describe(value)
                ),
            );
        }
    }
    if let Some((_, value)) = entry(mapping, "limits") {
        settings.limits = parse_limits(value, "`limits` in `sandbox`", &mut diagnostics);
    }
    diagnostics.finish(settings)
}

/// The top-level `sandbox:` value.
pub(crate) fn parse_requirement(node: &Node, diagnostics: &mut Diagnostics) -> SandboxRequirement {
    match node.as_scalar().map(|s| s.as_str().trim()) {
        Some("required") => SandboxRequirement::Required,
        Some("auto") => SandboxRequirement::Default,
        Some("off") => {
            diagnostics.report(
                location(node),
                "a workflow cannot turn the sandbox off: only the engine's configuration \
                 (`sandbox: { policy: off }` in cairn.yaml) can; use `required` or `auto`",
            );
            SandboxRequirement::Default
        }
        _ => {
            diagnostics.report(
                location(node),
                format!(
                    "top-level `sandbox` must be `required` or `auto`, not {}",
                    describe(node)
                ),
            );
            SandboxRequirement::Default
        }
    }
}

/// A step's `sandbox:`, `network:` and `limits:` keys, all reported at once.
pub(crate) fn parse_step_sandbox(
    mapping: &MarkedMappingNode,
    label: &str,
    diagnostics: &mut Diagnostics,
) -> StepSandbox {
    let mut sandbox = StepSandbox::default();
    if let Some((_, node)) = entry(mapping, "sandbox") {
        match node.as_mapping() {
            Some(inner) => {
                let what = format!("`sandbox` of {label}");
                check_keys(inner, SANDBOX_KEYS, &format!("in {what}"), diagnostics);
                sandbox.read = paths(inner, "read", &what, diagnostics);
                sandbox.write = paths(inner, "write", &what, diagnostics);
                if let Some((_, value)) = entry(inner, "docker") {
                    match value.as_scalar().map(|s| (s.may_coerce(), s.as_str())) {
                        Some((true, "true")) => sandbox.docker = true,
                        Some((true, "false")) => sandbox.docker = false,
                        _ => diagnostics.report(
                            location(value),
                            format!(
                                "`docker` in {what} must be true or false, not {}",
                                describe(value)
                            ),
                        ),
                    }
                }
                if let Some((_, value)) = entry(inner, "network") {
                    sandbox.network = network(value, &format!("`network` in {what}"), diagnostics);
                }
            }
            None => diagnostics.report(
                location(node),
                format!(
                    "`sandbox` of {label} must be a mapping with any of {}, not {}",
                    SANDBOX_KEYS.join(", "),
                    describe(node)
                ),
            ),
        }
    }
    if let Some((_, node)) = entry(mapping, "network") {
        let shorthand = network(node, &format!("`network` of {label}"), diagnostics);
        if sandbox.network.is_some() && shorthand.is_some() && sandbox.network != shorthand {
            diagnostics.report(
                location(node),
                format!("`network` of {label} contradicts its `sandbox.network`; keep one"),
            );
        }
        sandbox.network = sandbox.network.or(shorthand);
    }
    if let Some((_, node)) = entry(mapping, "limits") {
        sandbox.limits = parse_limits(node, &format!("`limits` of {label}"), diagnostics);
    }
    sandbox
}

/// A `limits:` mapping (also the defaults in `cairn.yaml`): sizes like `2GiB`, `512MB` or a
/// byte count, a process count, or `unlimited`.
pub(crate) fn parse_limits(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Limits {
    let mut limits = Limits::default();
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "{what} must be a mapping with any of {}, not {}",
                LIMIT_KEYS.join(", "),
                describe(node)
            ),
        );
        return limits;
    };
    check_keys(mapping, LIMIT_KEYS, &format!("in {what}"), diagnostics);
    for (key, value) in mapping.iter() {
        let parsed = match key.as_str() {
            "memory" | "file_size" => size(value),
            "processes" => count(value),
            _ => continue,
        };
        let limit = match parsed {
            Ok(limit) => limit,
            Err(expected) => {
                diagnostics.report(
                    location(value),
                    format!(
                        "`{}` in {what} must be {expected}, not {}",
                        key.as_str(),
                        describe(value)
                    ),
                );
                continue;
            }
        };
        match key.as_str() {
            "memory" => limits.memory = Some(limit),
            "processes" => limits.processes = Some(limit),
            _ => limits.file_size = Some(limit),
        }
    }
    limits
}

fn paths(
    mapping: &MarkedMappingNode,
    key: &str,
    what: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<String> {
    let Some((_, node)) = entry(mapping, key) else {
        return Vec::new();
    };
    let what = format!("`{key}` in {what}");
    let Some(items) = string_or_list(node, &what, diagnostics) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for item in items {
        let path = item.as_str().trim();
        // Relative paths would depend on where the engine was started; the workspace is
        // writable anyway, so an exception only makes sense for an absolute place.
        if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
            diagnostics.report(
                super::yaml::scalar_location(item),
                format!("each path of {what} must be absolute or start with `~/`, not `{path}`"),
            );
            continue;
        }
        if path.split('/').any(|part| part == "..") {
            diagnostics.report(
                super::yaml::scalar_location(item),
                format!("paths of {what} must not contain `..`: `{path}`"),
            );
            continue;
        }
        paths.push(path.to_owned());
    }
    paths
}

fn network(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Option<Network> {
    match node.as_scalar().map(|s| s.as_str().trim()) {
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        _ => {
            diagnostics.report(
                location(node),
                format!(
                    "{what} must be one of {}, not {}",
                    NETWORK_VALUES.join(", "),
                    describe(node)
                ),
            );
            None
        }
    }
}

fn unlimited(node: &Node) -> bool {
    node.as_scalar()
        .is_some_and(|s| !is_null(s) && s.as_str().trim() == "unlimited")
}

fn size(node: &Node) -> Result<Limit, &'static str> {
    const EXPECTED: &str = "a size such as 512MiB, 2GiB or a byte count, or `unlimited`";
    if unlimited(node) {
        return Ok(Limit::Unlimited);
    }
    if let Some(bytes) = integer(node) {
        return u64::try_from(bytes)
            .ok()
            .filter(|b| *b > 0)
            .map(Limit::At)
            .ok_or(EXPECTED);
    }
    let text = node.as_scalar().ok_or(EXPECTED)?.as_str().trim();
    match text.parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(Limit::At(size.as_u64())),
        _ => Err(EXPECTED),
    }
}

fn count(node: &Node) -> Result<Limit, &'static str> {
    const EXPECTED: &str = "a whole number of at least 1, or `unlimited`";
    if unlimited(node) {
        return Ok(Limit::Unlimited);
    }
    match integer(node) {
        Some(count) if count >= 1 => Ok(Limit::At(count as u64)),
        _ => Err(EXPECTED),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;
    use crate::pipeline::{LoadOptions, load_str};

    #[test]
    fn a_step_declares_exceptions_and_limits() {
        let text = "name: w\nsandbox: required\nsteps:\n  - id: a\n    run: make\n    \
                    sandbox: { read: /srv, write: [~/.cache, /var/ci], docker: true }\n    \
                    network: none\n    limits: { memory: 2GiB, processes: 64, file_size: unlimited }\n";
        let workflow = load_str("w.yaml", text, &LoadOptions::default()).unwrap();
        assert_eq!(workflow.sandbox, SandboxRequirement::Required);
        let sandbox = &workflow.steps[0].sandbox;
        assert_eq!(sandbox.read, ["/srv"]);
        assert_eq!(sandbox.write, ["~/.cache", "/var/ci"]);
        assert!(sandbox.docker);
        assert_eq!(sandbox.network, Some(Network::None));
        assert_eq!(sandbox.limits.memory, Some(Limit::At(2 << 30)));
        assert_eq!(sandbox.limits.processes, Some(Limit::At(64)));
        assert_eq!(sandbox.limits.file_size, Some(Limit::Unlimited));
    }

    #[test]
    fn contradicting_network_keys_are_reported() {
        let text = "name: w\nsteps:\n  - id: a\n    run: make\n    sandbox: { network: host }\n    network: none\n";
        let error = load_str("w.yaml", text, &LoadOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "w.yaml:6:14: `network` of step `a` contradicts its `sandbox.network`; keep one"
        );
    }

    #[test]
    fn the_configuration_section_is_read_with_positions() {
        let settings = load_sandbox_settings(
            "cairn.yaml",
            "llm: {}\nsandbox:\n  policy: required\n  limits: { processes: 100 }\n",
        )
        .unwrap();
        assert_eq!(settings.policy, Some(SandboxPolicy::Required));
        assert_eq!(settings.limits.processes, Some(Limit::At(100)));
        assert_eq!(
            load_sandbox_settings("c.yaml", "llm: {}\n").unwrap(),
            SandboxSettings::default()
        );
        let error = load_sandbox_settings(
            "c.yaml",
            "sandbox:\n  limits: { memory: -1 }\n  polcy: off\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("c.yaml:2:21: `memory` in `limits` in `sandbox` must be"),
            "{error}"
        );
        assert!(
            error.contains("c.yaml:3:3: unknown key `polcy` in `sandbox`"),
            "{error}"
        );
    }
}
