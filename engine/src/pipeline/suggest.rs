//! "Did you mean …?" hints: the closest known name to a misspelt key, step id or variable.

/// Differences of at most this many single-character edits are worth suggesting; beyond that
/// the hint is more often confusing than helpful.
const MAX_SUGGESTION_DISTANCE: usize = 2;

/// The candidate closest to `unknown`, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    let length = unknown.chars().count();
    for candidate in candidates {
        // The distance is at least the difference in length: skip the quadratic comparison
        // for candidates that cannot be close (thousands of step ids stay fast).
        if candidate.len().abs_diff(unknown.len()) > 4 * MAX_SUGGESTION_DISTANCE
            || candidate.chars().count().abs_diff(length) > MAX_SUGGESTION_DISTANCE
        {
            continue;
        }
        let distance = edit_distance(unknown, candidate);
        if distance == 0 || distance > MAX_SUGGESTION_DISTANCE {
            continue;
        }
        if best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `"; did you mean `x`?"`, or nothing.
pub(crate) fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    match closest(unknown, candidates) {
        Some(candidate) => format!("; did you mean `{candidate}`?"),
        None => String::new(),
    }
}

/// Keys of GitHub/Gitea Actions (and the design brief's stages) met in a native workflow, with
/// what Cairn calls them; only offered where the Cairn key is one the place accepts.
const FOREIGN_KEYS: &[(&str, &str, &str)] = &[
    (
        "if",
        "when",
        "Cairn's `when:` takes a condition (`when: steps.analyze.outputs.risk != 'low'`)",
    ),
    (
        "needs",
        "depends_on",
        "Cairn's `depends_on:` lists the steps this one waits for",
    ),
    (
        "timeout-minutes",
        "timeout",
        "Cairn's `timeout:` takes a duration (`timeout: 10m`)",
    ),
    (
        "continue-on-error",
        "on_failure",
        "Cairn's `on_failure: continue` lets the run go on",
    ),
    (
        "uses",
        "run",
        "Cairn runs shell commands (`run:`) or built-in agents (`agent:`), not marketplace actions",
    ),
    (
        "runs-on",
        "run",
        "Cairn runs every step on this machine, in its sandbox: remove `runs-on`",
    ),
    (
        "on",
        "trigger",
        "this looks like a GitHub Actions workflow: Cairn reads those as they are when they have `on:` and `jobs:` (and no `steps:`); in Cairn's own form the key is `trigger:`",
    ),
    (
        "jobs",
        "steps",
        "this looks like a GitHub Actions workflow: Cairn reads those as they are when they have `jobs:` and no `steps:`; in Cairn's own form the key is `steps:`",
    ),
    (
        "stages",
        "steps",
        "Cairn's own form lists `steps:`; the design brief's form is `pipeline: { stages: [...] }`",
    ),
];

/// What to say about `key` when it belongs to another CI system's vocabulary.
pub(crate) fn foreign_key_hint(key: &str, known: &[&str]) -> Option<String> {
    FOREIGN_KEYS
        .iter()
        .find(|(foreign, cairn, _)| *foreign == key && known.contains(cairn))
        .map(|(_, cairn, hint)| format!("use `{cairn}`: {hint}"))
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (i, left_char) in left.chars().enumerate() {
        current[0] = i + 1;
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[right.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("depends_on", "depend_on"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn foreign_keys_get_their_cairn_names() {
        let step = ["id", "run", "depends_on", "when", "timeout", "on_failure"];
        let hint = foreign_key_hint("if", &step).unwrap();
        assert!(hint.starts_with("use `when`"), "{hint}");
        assert!(
            foreign_key_hint("needs", &step)
                .unwrap()
                .starts_with("use `depends_on`")
        );
        // Not offered where the Cairn key does not belong either.
        assert_eq!(foreign_key_hint("if", &["url", "branches"]), None);
        assert_eq!(foreign_key_hint("banana", &step), None);
    }

    #[test]
    fn suggests_only_close_names() {
        let keys = ["depends_on", "timeout", "retries"];
        assert_eq!(closest("dependson", keys), Some("depends_on"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("banana", keys), None);
    }
}
