//! The cache decision: a full build (no layer cache) when what the image is made from changed
//! underneath the application — dependency manifests or lockfiles, the Dockerfile (and with it
//! the base image), `.dockerignore`, or configured paths — and a build on cached layers when
//! only application code changed.
//!
//! "What changed" is the diff between the commit the branch's current image was built from
//! (its `org.opencontainers.image.revision` label) and this commit, when git knows both and the
//! former is an ancestor; otherwise the commit's own diff. So a dependency bump in a commit
//! that was never built still forces the next build to be full.

use serde::Serialize;

use crate::agents::orchestrator::{Category, categorize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Full,
    Cached,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Cached => "cached",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub mode: Mode,
    pub reason: String,
    /// The changed files that forced a full build.
    pub triggers: Vec<String>,
}

/// What the decision is made from.
pub struct Inputs<'a> {
    /// `with: nocache:` when set.
    pub forced: Option<bool>,
    /// Whether any earlier image of this repository exists to reuse layers from.
    pub has_previous: bool,
    /// Changed paths, or `None` when git could not tell.
    pub changed: Option<&'a [String]>,
    /// `change.categories` from the orchestrator, when it ran.
    pub categories: &'a [String],
    pub dockerfile: &'a str,
    pub full_rebuild_paths: &'a [String],
}

pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let full = |reason: String, triggers: Vec<String>| Decision {
        mode: Mode::Full,
        reason,
        triggers,
    };
    match inputs.forced {
        Some(true) => return full("`with: nocache: true` forces a full build".into(), vec![]),
        Some(false) => {
            return Decision {
                mode: Mode::Cached,
                reason: "`with: nocache: false` forces a cached build".into(),
                triggers: vec![],
            };
        }
        None => {}
    }
    if !inputs.has_previous {
        return full(
            "first build of this repository: no earlier image to reuse layers from".into(),
            vec![],
        );
    }
    let Some(changed) = inputs.changed else {
        if inputs
            .categories
            .iter()
            .any(|c| c == Category::Dependencies.as_str())
        {
            return full(
                "the orchestrator classified the change as touching dependencies".into(),
                vec![],
            );
        }
        return full(
            "could not tell which files changed, so nothing cached is trusted".into(),
            vec![],
        );
    };
    let extra: Vec<globset::GlobMatcher> = inputs
        .full_rebuild_paths
        .iter()
        .filter_map(|p| globset::Glob::new(p).ok().map(|g| g.compile_matcher()))
        .collect();
    let mut reasons = Vec::new();
    let mut triggers = Vec::new();
    for path in changed {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let why = if path == inputs.dockerfile
            || name.starts_with("dockerfile")
            || name.starts_with("containerfile")
            || name.ends_with(".dockerfile")
        {
            Some("the Dockerfile (and possibly its base image) changed")
        } else if name == ".dockerignore" {
            Some("the .dockerignore changed")
        } else if categorize(path) == Category::Dependencies {
            Some("a dependency manifest or lockfile changed")
        } else if extra.iter().any(|m| m.is_match(path)) {
            Some("a path listed in full_rebuild_paths changed")
        } else {
            None
        };
        if let Some(why) = why {
            reasons.push(format!("{why}: {path}"));
            triggers.push(path.clone());
        }
    }
    if !reasons.is_empty() {
        return full(reasons.join("; "), triggers);
    }
    let reason = if changed.is_empty() {
        "nothing changed since the last build: every layer can come from the cache".to_string()
    } else {
        format!(
            "only application files changed ({}): building on cached layers",
            preview(changed)
        )
    };
    Decision {
        mode: Mode::Cached,
        reason,
        triggers,
    }
}

fn preview(paths: &[String]) -> String {
    let mut text = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 3 {
        text.push_str(&format!(" and {} more", paths.len() - 3));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide_for(changed: &[&str]) -> Decision {
        let changed: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
        decide(&Inputs {
            forced: None,
            has_previous: true,
            changed: Some(&changed),
            categories: &[],
            dockerfile: "Dockerfile",
            full_rebuild_paths: &["vendor/**".into()],
        })
    }

    #[test]
    fn dependencies_and_dockerfile_force_full_builds() {
        let decision = decide_for(&["src/main.rs", "Cargo.lock"]);
        assert_eq!(decision.mode, Mode::Full);
        assert!(
            decision.reason.contains("Cargo.lock"),
            "{}",
            decision.reason
        );
        assert_eq!(decide_for(&["Dockerfile"]).mode, Mode::Full);
        assert_eq!(decide_for(&["vendor/x/lib.c"]).mode, Mode::Full);
        assert_eq!(decide_for(&["requirements.txt"]).mode, Mode::Full);
    }

    #[test]
    fn application_code_builds_cached() {
        let decision = decide_for(&["src/main.rs", "README.md"]);
        assert_eq!(decision.mode, Mode::Cached);
        assert!(decision.reason.contains("src/main.rs"));
    }

    #[test]
    fn first_build_and_unknown_changes_are_full() {
        let first = decide(&Inputs {
            forced: None,
            has_previous: false,
            changed: Some(&[]),
            categories: &[],
            dockerfile: "Dockerfile",
            full_rebuild_paths: &[],
        });
        assert_eq!(first.mode, Mode::Full);
        let unknown = decide(&Inputs {
            forced: None,
            has_previous: true,
            changed: None,
            categories: &[],
            dockerfile: "Dockerfile",
            full_rebuild_paths: &[],
        });
        assert_eq!(unknown.mode, Mode::Full);
    }
}
