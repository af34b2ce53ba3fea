//! Measures of a ranking against labels: the area under the ROC curve and precision/recall of
//! a yes/no flag.

use serde::{Deserialize, Serialize};

/// Area under the ROC curve: the chance that a random defect-inducing commit scores above a
/// random clean one (ties count half). `None` when either class is missing.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Mann-Whitney U from average ranks, so ties are handled exactly.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for index in &order[i..=j] {
            if labels[*index] {
                rank_sum += average_rank;
            }
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// How a yes/no flag (`high`) fares against the labels.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FlagScore {
    pub flagged: usize,
    pub hits: usize,
    pub positives: usize,
    /// Of the flagged commits, the share that were defect-inducing (`None`: none flagged).
    pub precision: Option<f64>,
    /// Of the defect-inducing commits, the share flagged (`None`: none to find).
    pub recall: Option<f64>,
}

pub fn flag_score(flags: &[bool], labels: &[bool]) -> FlagScore {
    let flagged = flags.iter().filter(|f| **f).count();
    let positives = labels.iter().filter(|l| **l).count();
    let hits = flags.iter().zip(labels).filter(|(f, l)| **f && **l).count();
    FlagScore {
        flagged,
        hits,
        positives,
        precision: (flagged > 0).then(|| hits as f64 / flagged as f64),
        recall: (positives > 0).then(|| hits as f64 / positives as f64),
    }
}

/// Mean squared error of the probabilities (lower is better; always guessing the base rate
/// `p` scores `p(1-p)`).
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    let n = probabilities.len().max(1) as f64;
    probabilities
        .iter()
        .zip(labels)
        .map(|(p, l)| (p - f64::from(u8::from(*l))).powi(2))
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_half_of_ties() {
        assert_eq!(
            auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // Pairs (pos, neg): (0.4 vs 0.1) win, (0.4 vs 0.6) lose, (0.7 vs both) win: 3 of 4.
        assert_eq!(
            auc(&[0.1, 0.4, 0.6, 0.7], &[false, true, false, true]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.1], &[true]), None);
    }

    #[test]
    fn precision_and_recall_of_a_flag() {
        let score = flag_score(&[true, true, false, false], &[true, false, true, false]);
        assert_eq!((score.flagged, score.hits, score.positives), (2, 1, 2));
        assert_eq!(score.precision, Some(0.5));
        assert_eq!(score.recall, Some(0.5));
        assert_eq!(flag_score(&[false], &[false]).precision, None);
    }
}
