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
    fn suggests_only_close_names() {
        let keys = ["depends_on", "timeout", "retries"];
        assert_eq!(closest("dependson", keys), Some("depends_on"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("banana", keys), None);
    }
}
