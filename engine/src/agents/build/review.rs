//! Deterministic Dockerfile review: each rule reads the parsed instructions and reports
//! findings with a rule id, line and severity. The local model only explains these findings;
//! it never adds or removes one.
//!
//! | rule id                         | severity | what                                              |
//! |---------------------------------|----------|---------------------------------------------------|
//! | `base-image-unpinned`           | warning  | `FROM` without a tag or with `:latest`            |
//! | `runs-as-root`                  | warning  | final stage has no `USER`, or `USER root`/`0`     |
//! | `secret-in-build-config`        | error    | `ENV`/`ARG` with a value for a secret-like name   |
//! | `copy-all-before-dependencies`  | warning  | `COPY . .` before the first dependency install    |
//! | `single-stage-compiled`         | warning  | one stage that compiles (cargo/go build, gcc, …)  |
//! | `missing-dockerignore`          | warning  | no `.dockerignore` beside the Dockerfile's context|
//! | `add-from-url`                  | warning  | `ADD https://…` without `--checksum`              |
//! | `package-cache-in-layer`        | warning  | apt lists / pip cache / apk cache left in a layer |

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::dockerfile::{Instruction, Stage, parse, stages, words};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    /// 1-based line; `None` for findings about the context rather than a line.
    pub line: Option<usize>,
    pub severity: Severity,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match self.line {
            Some(line) => write!(
                f,
                "line {line}: {severity} [{}] {}",
                self.rule, self.message
            ),
            None => write!(f, "{severity} [{}] {}", self.rule, self.message),
        }
    }
}

static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(^|_)TOKEN$|PASSWORD|PASSWD|SECRET|(^|_)KEY$|_KEY_").expect("valid regex")
});
/// A RUN that installs or fetches dependencies (or builds, which fetches them).
static DEPENDENCY_STEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(cargo\s+(build|install|fetch|chef)|npm\s+(install|ci|i)\b|yarn(\s+install)?\b|pnpm\s+(install|i)\b|pip3?\s+install|poetry\s+install|uv\s+(sync|pip\s+install)|go\s+(mod\s+download|build|install)|bundle\s+install|mvn\b|gradle\b|gradlew\b|composer\s+install|dotnet\s+(restore|build|publish))")
        .expect("valid regex")
});
// Package installs that leave a cache; shared with `rewrite.rs`, which inserts its flag after
// the command (group 1).
pub(super) static APT_INSTALL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bapt(-get)?\s+(-\S+\s+)*install\b").expect("valid regex"));
pub(super) static PIP_INSTALL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(pip3?\s+install)\b").expect("valid regex"));
pub(super) static APK_ADD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(apk\s+add)\b").expect("valid regex"));
static COMPILE_STEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(cargo\s+build|go\s+build|gcc|g\+\+|clang|javac|mvn|gradle|gradlew|dotnet\s+(build|publish)|rustc)\b").expect("valid regex")
});

/// Reviews a Dockerfile's text; `has_dockerignore` says whether the build context has one.
pub fn review(text: &str, has_dockerignore: bool) -> Vec<Finding> {
    let instructions = parse(text);
    let stages = stages(&instructions);
    let mut findings = Vec::new();
    base_images(&stages, &mut findings);
    final_user(&stages, &mut findings);
    secrets(&instructions, &mut findings);
    copy_all_first(&stages, &mut findings);
    single_stage(&stages, &mut findings);
    if !has_dockerignore {
        findings.push(Finding {
            rule: "missing-dockerignore",
            line: None,
            severity: Severity::Warning,
            message: "no .dockerignore: the whole checkout (.git, build output, local env files) is sent as the build context and can land in `COPY .` layers".into(),
        });
    }
    add_urls(&instructions, &mut findings);
    package_caches(&stages, &mut findings);
    findings.sort_by_key(|f| (f.line.unwrap_or(0), f.rule));
    findings
}

fn base_images(stages: &[Stage<'_>], findings: &mut Vec<Finding>) {
    let mut names: Vec<&str> = Vec::new();
    for stage in stages {
        let base = stage.base.as_str();
        let is_stage = names.iter().any(|n| n.eq_ignore_ascii_case(base));
        if !(is_stage
            || base.eq_ignore_ascii_case("scratch")
            || base.contains('$')
            || base.contains("@sha256:"))
        {
            let last = base.rsplit('/').next().unwrap_or(base);
            let message = match last.split_once(':') {
                None => Some(format!(
                    "base image `{base}` has no tag: it means `:latest`, which moves; pin a version (and ideally a digest)"
                )),
                Some((_, "latest")) => Some(format!(
                    "base image `{base}` uses `:latest`, which moves; pin a version (and ideally a digest)"
                )),
                Some(_) => None,
            };
            if let Some(message) = message {
                findings.push(Finding {
                    rule: "base-image-unpinned",
                    line: Some(stage.from.line),
                    severity: Severity::Warning,
                    message,
                });
            }
        }
        if let Some(name) = &stage.name {
            names.push(name);
        }
    }
}

/// The user the final stage runs as, following `FROM <earlier stage>` chains.
fn final_user(stages: &[Stage<'_>], findings: &mut Vec<Finding>) {
    let Some(last) = stages.last() else { return };
    let mut stage = last;
    let mut guard = 0;
    let user = loop {
        if let Some(user) = stage
            .instructions
            .iter()
            .rev()
            .find(|i| i.keyword == "USER")
        {
            break Some(user);
        }
        let parent = stages.iter().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&stage.base))
        });
        match parent {
            Some(parent) if guard < stages.len() => {
                stage = parent;
                guard += 1;
            }
            _ => break None,
        }
    };
    match user {
        None => findings.push(Finding {
            rule: "runs-as-root",
            line: Some(last.from.line),
            severity: Severity::Warning,
            message: "the final stage sets no USER, so the container runs as root; add `USER <uid>` (a numeric uid works even FROM scratch)".into(),
        }),
        Some(user) => {
            let name = user.arguments.split(':').next().unwrap_or("").trim();
            if name == "root" || name == "0" {
                findings.push(Finding {
                    rule: "runs-as-root",
                    line: Some(user.line),
                    severity: Severity::Warning,
                    message: format!("`USER {}` in the final stage runs the container as root", user.arguments),
                });
            }
        }
    }
}

fn secrets(instructions: &[Instruction], findings: &mut Vec<Finding>) {
    for instruction in instructions
        .iter()
        .filter(|i| i.keyword == "ENV" || i.keyword == "ARG")
    {
        for (name, has_value) in assignments(instruction) {
            if has_value && SECRET_NAME.is_match(&name) {
                // The value itself is never repeated: reports are stored and may be sent on.
                findings.push(Finding {
                    rule: "secret-in-build-config",
                    line: Some(instruction.line),
                    severity: Severity::Error,
                    message: format!(
                        "{} {name} gives a secret-looking variable a value: it is stored in the image ({}) for anyone who can pull it; pass secrets at run time or with build secrets",
                        instruction.keyword,
                        if instruction.keyword == "ENV" { "config, `docker inspect`" } else { "history, `docker history`" },
                    ),
                });
            }
        }
    }
}

/// `(name, has a non-empty value)` for `ENV a=b c=d`, legacy `ENV a b`, `ARG a[=b] ...`.
fn assignments(instruction: &Instruction) -> Vec<(String, bool)> {
    let arguments = instruction.arguments.trim();
    let first = arguments.split_whitespace().next().unwrap_or("");
    if instruction.keyword == "ENV" && !first.contains('=') {
        let value = arguments[first.len()..].trim();
        return vec![(first.to_string(), !value.is_empty())];
    }
    arguments
        .split_whitespace()
        .filter(|w| !w.starts_with('"') || w.contains('='))
        .map(|word| match word.split_once('=') {
            Some((name, value)) => (
                name.to_string(),
                !value.trim_matches(|c| c == '"' || c == '\'').is_empty(),
            ),
            None => (word.to_string(), false),
        })
        .collect()
}

fn copy_all_first(stages: &[Stage<'_>], findings: &mut Vec<Finding>) {
    for stage in stages {
        let copy_all = stage.instructions.iter().find(|i| {
            (i.keyword == "COPY" || i.keyword == "ADD") && {
                let args: Vec<String> = words(&i.arguments)
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                args.len() >= 2
                    && args[..args.len() - 1]
                        .iter()
                        .any(|s| s == "." || s == "./" || s == "*")
            }
        });
        let first_install = stage
            .instructions
            .iter()
            .find(|i| i.keyword == "RUN" && DEPENDENCY_STEP.is_match(&i.arguments));
        if let (Some(copy), Some(install)) = (copy_all, first_install)
            && install.line > copy.line
        {
            findings.push(Finding {
                rule: "copy-all-before-dependencies",
                line: Some(copy.line),
                severity: Severity::Warning,
                message: format!(
                    "`{} {}` comes before the dependency step on line {}: any source change invalidates that layer's cache; copy the manifests and lockfiles first, install, then copy the rest",
                    copy.keyword, copy.arguments, install.line
                ),
            });
        }
    }
}

fn single_stage(stages: &[Stage<'_>], findings: &mut Vec<Finding>) {
    let [stage] = stages else { return };
    if let Some(compile) = stage
        .instructions
        .iter()
        .find(|i| i.keyword == "RUN" && COMPILE_STEP.is_match(&i.arguments))
    {
        findings.push(Finding {
            rule: "single-stage-compiled",
            line: Some(compile.line),
            severity: Severity::Warning,
            message: "the image compiles in its only stage, so compilers, sources and build caches ship in it; build in one stage and `COPY --from=` the artifact into a small runtime stage".into(),
        });
    }
}

fn add_urls(instructions: &[Instruction], findings: &mut Vec<Finding>) {
    for add in instructions.iter().filter(|i| i.keyword == "ADD") {
        let args = words(&add.arguments);
        if args.iter().any(|w| w.starts_with("--checksum")) {
            continue;
        }
        if let Some(url) = args
            .iter()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        {
            findings.push(Finding {
                rule: "add-from-url",
                line: Some(add.line),
                severity: Severity::Warning,
                message: format!("`ADD {url}` downloads without verification and is never cached by content; fetch it in a RUN with a checksum check (or `ADD --checksum=`)"),
            });
        }
    }
}

fn package_caches(stages: &[Stage<'_>], findings: &mut Vec<Finding>) {
    for stage in stages {
        let pip_env_off = stage
            .instructions
            .iter()
            .any(|i| i.keyword == "ENV" && i.arguments.contains("PIP_NO_CACHE_DIR"));
        for run in stage.instructions.iter().filter(|i| i.keyword == "RUN") {
            let text = &run.arguments;
            let mut push = |message: &str| {
                findings.push(Finding {
                    rule: "package-cache-in-layer",
                    line: Some(run.line),
                    severity: Severity::Warning,
                    message: message.to_string(),
                })
            };
            if APT_INSTALL.is_match(text) && !text.contains("/var/lib/apt/lists") {
                push(
                    "`apt-get install` without `rm -rf /var/lib/apt/lists/*` in the same RUN leaves the package lists in the layer",
                );
            }
            if PIP_INSTALL.is_match(text) && !text.contains("--no-cache-dir") && !pip_env_off {
                push(
                    "`pip install` without `--no-cache-dir` leaves pip's download cache in the layer",
                );
            }
            if APK_ADD.is_match(text) && !text.contains("--no-cache") {
                push("`apk add` without `--no-cache` leaves the package index in the layer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<&'static str> {
        review(text, true).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_clean_file_has_no_findings() {
        let text = "FROM rust:1.80 AS build\nCOPY Cargo.toml Cargo.lock ./\nRUN cargo fetch\nCOPY . .\nRUN cargo build --release\nFROM scratch\nCOPY --from=build /app /app\nUSER 65534\n";
        assert!(rules(text).is_empty(), "{:?}", review(text, true));
    }

    #[test]
    fn user_is_inherited_from_an_earlier_stage() {
        let text = "FROM alpine:3.20 AS base\nUSER app\nFROM base\nCOPY a /a\n";
        assert!(!rules(text).contains(&"runs-as-root"));
    }
}
