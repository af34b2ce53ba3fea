//! `.dockerignore` with Docker's own semantics (moby `patternmatcher`), which differ from
//! `.gitignore`: patterns are anchored at the context root (`foo` is only `./foo`, not every
//! `foo`), `*` stays inside one path component, `**` spans any number of them, a pattern that
//! matches a directory excludes everything below it, `!` re-includes, and the last matching
//! pattern wins.

use globset::{Glob, GlobMatcher};

pub struct Dockerignore {
    patterns: Vec<Pattern>,
}

struct Pattern {
    matcher: GlobMatcher,
    negated: bool,
}

impl Dockerignore {
    /// Parses the file's text. Invalid patterns are an error naming the line, as `docker build`
    /// refuses them too.
    pub fn parse(text: &str) -> Result<Dockerignore, String> {
        let mut patterns = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(body);
            if cleaned.is_empty() {
                continue;
            }
            let matcher = globset::GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map(|g: Glob| g.compile_matcher())
                .map_err(|e| {
                    format!(
                        ".dockerignore line {}: invalid pattern `{body}`: {e}",
                        index + 1
                    )
                })?;
            patterns.push(Pattern { matcher, negated });
        }
        Ok(Dockerignore { patterns })
    }

    pub fn empty() -> Dockerignore {
        Dockerignore {
            patterns: Vec::new(),
        }
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            // A pattern naming a directory also covers what is inside it, so try the path and
            // each of its parents.
            let matched = pattern.matcher.is_match(path)
                || parents(path).any(|parent| pattern.matcher.is_match(parent));
            if matched {
                excluded = !pattern.negated;
            }
        }
        excluded
    }

    /// Whether any `!` pattern exists: then an excluded directory must still be walked, since
    /// something below it may be re-included.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.negated)
    }
}

/// `./a//b/` → `a/b`, like Go's `filepath.Clean` for the cases that occur in practice.
fn clean(pattern: &str) -> String {
    pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let ignore = Dockerignore::parse(
            "# comment\n.git\ntarget/\n*.log\n**/*.tmp\n!keep.log\ndocs/*\n!docs/README.md\n",
        )
        .expect("valid");
        assert!(ignore.excludes(".git"));
        assert!(ignore.excludes(".git/objects/ab"));
        assert!(ignore.excludes("target/release/app"));
        assert!(ignore.excludes("build.log"));
        assert!(
            !ignore.excludes("logs/build.log"),
            "`*.log` is anchored at the root"
        );
        assert!(ignore.excludes("a/b/c.tmp"));
        assert!(!ignore.excludes("keep.log"));
        assert!(ignore.excludes("docs/guide.md"));
        assert!(!ignore.excludes("docs/README.md"));
        assert!(!ignore.excludes("src/main.rs"));
    }

    #[test]
    fn bad_pattern_names_its_line() {
        let error = Dockerignore::parse("ok\n[z-a\n").err().unwrap_or_default();
        assert!(error.contains("line 2"), "{error}");
    }
}
