//! Which branches a trigger watches: names or patterns in GitHub's filter syntax, so a
//! workflow's `branches: [main, 'release/**', '!release/old']` means what it means on GitHub.
//!
//! `*` matches any characters but `/`, `**` any characters, `?` makes the character before
//! it optional and `+` repeats it, `[…]` is one character of a set or range; a pattern that
//! starts with `!` leaves out what it matches. Patterns are read in order and the last one
//! that matches a branch decides, so `['release/**', '!release/old']` keeps every release
//! branch but one.

use regex::Regex;

/// A pattern that cannot be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("branch pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// The branch filter of one repository of a trigger.
#[derive(Debug, Clone)]
pub struct BranchFilter {
    /// (leaves out, matcher) in the order written.
    rules: Vec<(bool, Regex)>,
}

impl BranchFilter {
    pub fn new(patterns: &[String]) -> Result<BranchFilter, PatternError> {
        let rules = patterns
            .iter()
            .map(|pattern| {
                let (negated, body) = match pattern.strip_prefix('!') {
                    Some(body) => (true, body),
                    None => (false, pattern.as_str()),
                };
                Ok((negated, compile(pattern, body)?))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        if !rules.is_empty() && rules.iter().all(|(negated, _)| *negated) {
            return Err(PatternError {
                pattern: patterns.join(", "),
                reason: "every pattern leaves branches out, so no branch is watched; add one that takes branches in (e.g. `'**'`) before them".to_owned(),
            });
        }
        Ok(BranchFilter { rules })
    }

    /// Whether the branch is watched: the last pattern that matches it decides.
    pub fn matches(&self, branch: &str) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, regex)| regex.is_match(branch))
            .is_some_and(|(negated, _)| !negated)
    }
}

fn compile(pattern: &str, body: &str) -> Result<Regex, PatternError> {
    let error = |reason: &str| PatternError {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    if body.is_empty() {
        return Err(error("the pattern is empty"));
    }
    let mut regex = String::from("^");
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                regex.push_str(".*");
                i += 2;
                continue;
            }
            '*' => regex.push_str("[^/]*"),
            '?' | '+' if i == 0 || matches!(chars[i - 1], '*' | '?' | '+') => {
                return Err(error(&format!(
                    "`{}` at character {} has no character before it to apply to",
                    chars[i],
                    i + 1
                )));
            }
            '?' => regex.push('?'),
            '+' => regex.push('+'),
            '[' => {
                let Some(end) = chars[i + 1..].iter().position(|c| *c == ']') else {
                    return Err(error("`[` is not closed with `]`"));
                };
                let set: String = chars[i + 1..i + 1 + end].iter().collect();
                if set.is_empty() {
                    return Err(error("`[]` lists no character"));
                }
                // Only letters, digits and ranges are special inside; escape the rest.
                regex.push('[');
                for c in set.chars() {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        regex.push(c);
                    } else {
                        regex.push_str(&regex::escape(&c.to_string()));
                    }
                }
                regex.push(']');
                i += end + 2;
                continue;
            }
            ']' => return Err(error("`]` without its `[`")),
            '!' => return Err(error("`!` may only start a pattern")),
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    regex.push('$');
    Regex::new(&regex).map_err(|e| error(&e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> BranchFilter {
        BranchFilter::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_follow_github_filter_syntax() {
        let f = filter(&["main", "release/*", "feature/**", "v[0-9].x", "docs?"]);
        for yes in ["main", "release/1.0", "feature/a/b", "v1.x", "doc", "docs"] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in ["mainline", "release/1/2", "release", "vx.x", "docss", "dev"] {
            assert!(!f.matches(no), "{no}");
        }
        // A name is a name: `.` is not "any character".
        assert!(!filter(&["v1.0"]).matches("v1x0"));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let f = filter(&["release/**", "!release/old", "release/old"]);
        assert!(f.matches("release/old"));
        let f = filter(&["release/**", "!release/old*"]);
        assert!(f.matches("release/new"));
        assert!(!f.matches("release/older"));
    }

    #[test]
    fn unreadable_patterns_say_why() {
        let bad = |p: &str| BranchFilter::new(&[p.to_owned()]).unwrap_err().reason;
        assert!(bad("[abc").contains("not closed"));
        assert!(bad("+x").contains("no character before it"));
        assert!(bad("a!b").contains("may only start"));
        assert!(bad("!main").contains("no branch is watched"));
    }
}
