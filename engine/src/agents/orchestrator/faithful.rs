//! An automatable faithfulness check for a model's summary of a diff: everything the summary
//! names (identifiers, file names, versions, numbers) must appear in the diff it summarises.
//!
//! A small model asked about an `asyncpg` bump once answered "pyjwt is a new version of
//! ajax-pjwt-2.0": every name in that sentence is invented, and this check refuses it. Plain
//! English words are not checked (a summary may say "renames" or "adds a test"); words that
//! look like code are.
//!
//! Faithful is not enough: measured on outside repositories, the default small model's
//! summaries were mostly faithful because they said nothing ("A:", "Your code is already a
//! good example of how to write a test suite."). [`says_nothing`] refuses those too, so only a
//! summary that names something the change touched is shown.

/// The names in `summary` that do not occur in `diff`; empty when the summary is faithful.
pub fn invented_names(summary: &str, diff: &str) -> Vec<String> {
    let haystack = diff.to_lowercase();
    let mut invented = Vec::new();
    for word in summary.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '"' | '\'' | '`' | '[' | ']' | '{' | '}'
            )
    }) {
        let word = word.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?' | '*'));
        if !looks_like_code(word) {
            continue;
        }
        let lower = word.to_lowercase();
        // A path may be named by its file name only, a version without its `v`.
        let short = lower.rsplit('/').next().unwrap_or(&lower);
        let bare = lower.trim_start_matches('v');
        if !haystack.contains(&lower) && !haystack.contains(short) && !haystack.contains(bare) {
            invented.push(word.to_string());
        }
    }
    invented.dedup();
    invented
}

/// Why `summary` says nothing about `diff`, if it does not: it announces a list it never gives,
/// is too short to say anything, or shares no specific word with the changed lines and paths.
pub fn says_nothing(summary: &str, diff: &str) -> Option<&'static str> {
    let summary = summary.trim();
    if summary.ends_with(':') {
        return Some("it announces a list it does not give");
    }
    let words: Vec<String> = summary
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < 3 {
        return Some("it is too short to say anything");
    }
    let touched = changed_words(diff);
    let specific = words
        .iter()
        .filter(|w| w.len() >= 4 && !GENERIC.contains(&w.as_str()))
        .any(|w| touched.contains(w.as_str()) || touched.contains(w.trim_end_matches('s')));
    (!specific).then_some("it names nothing the change touched")
}

/// Words any summary of any change may use: they tell nothing about this one.
const GENERIC: &[&str] = &[
    "about",
    "added",
    "adding",
    "adds",
    "already",
    "also",
    "and",
    "change",
    "changed",
    "changes",
    "class",
    "code",
    "designed",
    "different",
    "does",
    "example",
    "file",
    "files",
    "from",
    "function",
    "functions",
    "good",
    "have",
    "into",
    "line",
    "lines",
    "method",
    "methods",
    "module",
    "more",
    "new",
    "now",
    "removed",
    "removes",
    "same",
    "some",
    "suite",
    "test",
    "tests",
    "that",
    "the",
    "their",
    "this",
    "update",
    "updated",
    "updates",
    "used",
    "uses",
    "using",
    "version",
    "when",
    "which",
    "will",
    "with",
    "write",
    "your",
];

/// The lowercased identifier parts (split at `_` and case changes) of the diff's changed lines
/// and file names.
fn changed_words(diff: &str) -> std::collections::HashSet<String> {
    let mut words = std::collections::HashSet::new();
    for line in diff.lines() {
        let text = match line.as_bytes().first() {
            Some(b'+' | b'-') if !line.starts_with("+++") && !line.starts_with("---") => &line[1..],
            _ if line.starts_with("diff --git")
                || line.starts_with("+++")
                || line.starts_with("---") =>
            {
                line
            }
            _ => continue,
        };
        for token in text.split(|c: char| !c.is_alphanumeric()) {
            let mut part = String::new();
            let mut previous_lower = false;
            for c in token.chars() {
                if c.is_uppercase() && previous_lower {
                    words.insert(std::mem::take(&mut part));
                }
                previous_lower = c.is_lowercase() || c.is_ascii_digit();
                part.extend(c.to_lowercase());
            }
            words.insert(part);
            words.insert(token.to_lowercase());
        }
    }
    words
}

/// Identifiers with `_`, `::`, `/` or a dot inside, camelCase words, and anything with a
/// digit: the tokens a summary can only know from the diff.
fn looks_like_code(word: &str) -> bool {
    if word.len() < 2 {
        return false;
    }
    let inner_dot = word
        .char_indices()
        .any(|(i, c)| c == '.' && i > 0 && i + 1 < word.len());
    let camel =
        word.chars().skip(1).any(|c| c.is_uppercase()) && word.chars().any(|c| c.is_lowercase());
    word.contains('_')
        || word.contains("::")
        || word.contains('/')
        || inner_dot
        || camel
        || word.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/requirements/base.txt b/requirements/base.txt\n--- a/requirements/base.txt\n+++ b/requirements/base.txt\n@@ -1,2 +1,2 @@\n-asyncpg==0.28.0\n+asyncpg==0.29.0\n starlette==0.36.3\n";

    #[test]
    fn a_summary_naming_only_what_the_diff_holds_is_faithful() {
        assert!(
            invented_names(
                "Bumps asyncpg from 0.28.0 to 0.29.0 in requirements/base.txt.",
                DIFF
            )
            .is_empty()
        );
        assert!(invented_names("Updates a pinned dependency version.", DIFF).is_empty());
    }

    #[test]
    fn invented_packages_and_versions_are_caught() {
        let invented = invented_names("pyjwt is a new version of ajax-pjwt-2.0", DIFF);
        assert_eq!(invented, vec!["ajax-pjwt-2.0".to_string()]);
        let invented = invented_names("Upgrades asyncpg to 1.0.0 and adds PyJWT.", DIFF);
        assert_eq!(invented, vec!["1.0.0".to_string(), "PyJWT".to_string()]);
    }

    #[test]
    fn a_summary_that_says_nothing_about_the_change_is_caught() {
        const CODE: &str = "diff --git a/src/requests/models.py b/src/requests/models.py\n--- a/src/requests/models.py\n+++ b/src/requests/models.py\n@@ -1,2 +1,2 @@\n-        self.cookies = None\n+        self.cookieJar = extract_cookies(response)\n";
        // What the default model wrote for real commits of psf/requests.
        assert!(says_nothing("A:", CODE).is_some());
        assert!(says_nothing("The changes to the code are:", CODE).is_some());
        assert!(
            says_nothing(
                "Your code is already a good example of how to write a test suite.",
                CODE
            )
            .is_some()
        );
        // Summaries that name what changed pass, in prose or in code words.
        assert_eq!(
            says_nothing("Keeps the response's cookies in a jar.", CODE),
            None
        );
        assert_eq!(
            says_nothing("Extracts cookies from the response.", CODE),
            None
        );
        assert_eq!(says_nothing("Bumps asyncpg to 0.29.0.", DIFF), None);
    }
}
