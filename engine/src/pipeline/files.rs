//! A step's `artifacts:` and `cache:` keys: what it hands to its dependants and what it keeps
//! between runs of the same repository. How they are stored and restored is `exec/files/`;
//! see `ARCHITECTURE.md` ("Artifacts and caches").
//!
//! ```yaml
//! steps:
//!   - id: build
//!     run: cargo build --release && mkdir -p dist && cp target/release/app dist/
//!     artifacts: [dist/app, "reports/**/*.xml"]   # paths or globs in the workspace
//!     cache:
//!       key: "deps-{{ hash 'Cargo.lock' }}"       # literal text and `{{ hash 'GLOB' ... }}`
//!       paths: [target, ~/.cargo]                 # (~ is refused: only workspace paths)
//!       restore_keys: [deps-]                     # prefixes tried when the key misses
//! ```
//!
//! Every path is relative to the workspace: absolute paths, `~` and `..` are refused here, with
//! their position, so nothing a workflow names can reach outside the checkout.

use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::error::Diagnostics;
use super::model::{CacheSpec, KeyPart, KeyTemplate, StepFiles};
use super::yaml::{
    Source, check_keys, describe, entry, location, non_empty_string, position_inside,
    scalar_location, string_or_list,
};

const CACHE_KEYS: &[&str] = &["key", "paths", "restore_keys"];

/// Longer keys are a mistake (a whole file pasted), and keys are stored and compared often.
const MAX_KEY_LENGTH: usize = 512;

/// A step's `artifacts:` and `cache:`, all problems reported at once.
pub(crate) fn parse_step_files(
    mapping: &MarkedMappingNode,
    label: &str,
    source: &Source<'_>,
    diagnostics: &mut Diagnostics,
) -> StepFiles {
    let mut files = StepFiles::default();
    if let Some((_, node)) = entry(mapping, "artifacts") {
        files.artifacts = patterns(node, &format!("`artifacts` of {label}"), diagnostics);
    }
    if let Some((_, node)) = entry(mapping, "cache") {
        files.cache = parse_cache(node, label, source, diagnostics);
    }
    files
}

fn parse_cache(
    node: &Node,
    label: &str,
    source: &Source<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<CacheSpec> {
    let what = format!("`cache` of {label}");
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!(
                "{what} must be a mapping with `key`, `paths` and optionally `restore_keys`, not {}",
                describe(node)
            ),
        );
        return None;
    };
    check_keys(mapping, CACHE_KEYS, &format!("in {what}"), diagnostics);
    let key = match entry(mapping, "key") {
        Some((_, node)) => non_empty_string(node, &format!("`key` in {what}"), diagnostics)
            .and_then(|scalar| template(scalar, &format!("`key` in {what}"), source, diagnostics)),
        None => {
            diagnostics.report(
                location(node),
                format!("{what} is missing required key `key`"),
            );
            None
        }
    };
    let paths = match entry(mapping, "paths") {
        Some((_, node)) => patterns(node, &format!("`paths` in {what}"), diagnostics),
        None => {
            diagnostics.report(
                location(node),
                format!("{what} is missing required key `paths`"),
            );
            Vec::new()
        }
    };
    let mut restore_keys = Vec::new();
    if let Some((_, node)) = entry(mapping, "restore_keys") {
        let what = format!("`restore_keys` in {what}");
        for scalar in string_or_list(node, &what, diagnostics).unwrap_or_default() {
            if let Some(prefix) = template(scalar, &what, source, diagnostics) {
                restore_keys.push(prefix);
            }
        }
    }
    Some(CacheSpec {
        key: key?,
        paths,
        restore_keys,
    })
}

/// One path or a list, each checked by [`workspace_pattern`].
fn patterns(node: &Node, what: &str, diagnostics: &mut Diagnostics) -> Vec<String> {
    let mut kept = Vec::new();
    for scalar in string_or_list(node, what, diagnostics).unwrap_or_default() {
        match workspace_pattern(scalar.as_str()) {
            Ok(pattern) => kept.push(pattern),
            Err(reason) => {
                diagnostics.report(scalar_location(scalar), format!("in {what}: {reason}"));
            }
        }
    }
    kept
}

/// A path or glob inside the workspace, normalised (`./` and trailing `/` dropped), or why it
/// is refused. Shared with the executor, which checks again what it reads from a stored run.
pub fn workspace_pattern(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.contains('\0') {
        return Err(format!("`{trimmed}` contains a NUL character"));
    }
    if trimmed.starts_with('/') {
        return Err(format!(
            "`{trimmed}` is absolute; artifact and cache paths are relative to the workspace"
        ));
    }
    if trimmed == "~" || trimmed.starts_with("~/") {
        return Err(format!(
            "`{trimmed}` is in the home directory; artifact and cache paths must be inside the workspace"
        ));
    }
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!(
            "`{trimmed}` leaves the workspace (`..`); artifact and cache paths must stay inside it"
        ));
    }
    if parts.is_empty() {
        return Err(format!(
            "`{trimmed}` names the whole workspace; name the files or directories to keep"
        ));
    }
    let pattern = parts.join("/");
    globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|error| format!("`{trimmed}` is not a valid glob: {}", error.kind()))?;
    Ok(pattern)
}

/// Checks a key template where it is written, reporting the exact column of a mistake.
fn template(
    scalar: &MarkedScalarNode,
    what: &str,
    source: &Source<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<KeyTemplate> {
    match KeyTemplate::parse(scalar.as_str()) {
        Ok(template) => Some(template),
        Err((offset, message)) => {
            diagnostics.report(
                position_inside(source, scalar, offset),
                format!("invalid {what}: {message}"),
            );
            None
        }
    }
}

impl KeyTemplate {
    /// Parses `deps-{{ hash 'Cargo.lock' 'x/*.toml' }}-v1`; an error is the byte offset of the
    /// mistake and what it is.
    pub fn parse(text: &str) -> Result<KeyTemplate, (usize, String)> {
        if text.len() > MAX_KEY_LENGTH {
            return Err((
                0,
                format!(
                    "a key is at most {MAX_KEY_LENGTH} bytes, this one has {}",
                    text.len()
                ),
            ));
        }
        if let Some((offset, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err((
                offset,
                "a key cannot hold control characters or line breaks".into(),
            ));
        }
        let mut parts = Vec::new();
        let mut rest = 0;
        while let Some(open) = text[rest..].find("{{").map(|at| rest + at) {
            if let Some(stray) = text[rest..open].find("}}") {
                return Err((rest + stray, "`}}` without an opening `{{`".into()));
            }
            if open > rest {
                parts.push(KeyPart::Literal(text[rest..open].to_owned()));
            }
            let Some(close) = text[open..].find("}}").map(|at| open + at) else {
                return Err((open, "`{{` is never closed with `}}`".into()));
            };
            parts.push(KeyPart::Hash(expression(text, open + 2, close)?));
            rest = close + 2;
        }
        if let Some(stray) = text[rest..].find("}}") {
            return Err((rest + stray, "`}}` without an opening `{{`".into()));
        }
        if rest < text.len() {
            parts.push(KeyPart::Literal(text[rest..].to_owned()));
        }
        if parts.is_empty() {
            return Err((0, "the key is empty".into()));
        }
        Ok(KeyTemplate {
            source: text.to_owned(),
            parts,
        })
    }
}

/// The inside of `{{ … }}` between byte offsets `start` and `end`: `hash` and one or more
/// quoted workspace patterns.
fn expression(text: &str, start: usize, end: usize) -> Result<Vec<String>, (usize, String)> {
    let inner = &text[start..end];
    let skip = |from: usize| {
        from + inner[from..]
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(inner.len() - from)
    };
    let word_at = skip(0);
    let word_end = inner[word_at..]
        .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        .map_or(inner.len(), |at| word_at + at);
    let word = &inner[word_at..word_end];
    if word != "hash" {
        let shown = if word.is_empty() { "nothing" } else { word };
        return Err((
            start + word_at,
            format!("unknown function `{shown}` in `{{{{ }}}}`; the only one is `hash 'PATH'`"),
        ));
    }
    let mut patterns = Vec::new();
    let mut at = skip(word_end);
    while at < inner.len() {
        let quote = inner[at..].chars().next().unwrap_or(' ');
        if quote != '\'' && quote != '"' {
            return Err((
                start + at,
                "`hash` takes quoted paths: {{ hash 'Cargo.lock' }}".into(),
            ));
        }
        let Some(length) = inner[at + 1..].find(quote) else {
            return Err((start + at, format!("the quote {quote} is never closed")));
        };
        let pattern = &inner[at + 1..at + 1 + length];
        let checked = workspace_pattern(pattern).map_err(|reason| (start + at + 1, reason))?;
        patterns.push(checked);
        at = skip(at + length + 2);
    }
    if patterns.is_empty() {
        return Err((
            start + word_at,
            "`hash` needs at least one quoted path: {{ hash 'Cargo.lock' }}".into(),
        ));
    }
    Ok(patterns)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_literals_and_hashes() {
        let template = KeyTemplate::parse("deps-{{ hash 'Cargo.lock' \"a/*.toml\" }}-v1").unwrap();
        assert_eq!(
            template.parts,
            vec![
                KeyPart::Literal("deps-".into()),
                KeyPart::Hash(vec!["Cargo.lock".into(), "a/*.toml".into()]),
                KeyPart::Literal("-v1".into()),
            ]
        );
        assert_eq!(KeyTemplate::parse("{{hash 'x'}}").unwrap().parts.len(), 1);
    }

    #[test]
    fn template_mistakes_name_their_offset() {
        assert_eq!(KeyTemplate::parse("a-{{ hash 'x'").unwrap_err().0, 2);
        assert_eq!(KeyTemplate::parse("a-{{ sha 'x' }}").unwrap_err().0, 5);
        assert_eq!(KeyTemplate::parse("a-{{ hash x }}").unwrap_err().0, 10);
        let (offset, message) = KeyTemplate::parse("{{ hash '../x' }}").unwrap_err();
        assert_eq!(offset, 9);
        assert!(message.contains("leaves the workspace"), "{message}");
        assert_eq!(KeyTemplate::parse("a}}").unwrap_err().0, 1);
    }

    #[test]
    fn patterns_stay_inside_the_workspace() {
        assert_eq!(workspace_pattern("./dist/").unwrap(), "dist");
        assert!(
            workspace_pattern("/etc/passwd")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(workspace_pattern("a/../../b").unwrap_err().contains(".."));
        assert!(workspace_pattern("~/.cargo").unwrap_err().contains("home"));
        assert!(
            workspace_pattern(".")
                .unwrap_err()
                .contains("whole workspace")
        );
        assert!(workspace_pattern("a/[b").unwrap_err().contains("glob"));
    }
}
