//! An automatable faithfulness check for a model's summary of a diff: everything the summary
//! names (identifiers, file names, versions, numbers) must appear in the diff it summarises.
//!
//! A small model asked about an `asyncpg` bump once answered "pyjwt is a new version of
//! ajax-pjwt-2.0": every name in that sentence is invented, and this check refuses it. Plain
//! English words are not checked (a summary may say "renames" or "adds a test"); words that
//! look like code are.

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
}
