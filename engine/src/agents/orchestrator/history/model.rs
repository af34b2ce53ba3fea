//! The history model: logistic regression over standardised change features, fitted with
//! `linfa-logistic`, kept as plain numbers (means, scales, coefficients) so that using it needs
//! no fitting library and every prediction can be explained: each feature contributes
//! `coefficient × standardised value` to the log-odds.

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::features::{COUNT, NAMES, Row};

/// L2 penalty on the coefficients. The loss is summed over commits, so with thousands of rows
/// this is light: enough to keep correlated features (files, directories) from trading huge
/// opposite weights, too little to bias the probabilities.
const ALPHA: f64 = 1.0;
const MAX_ITERATIONS: u64 = 300;

/// A fitted model, as stored in the `risk_models` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub features: Vec<String>,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Probability at or above which the model raises a commit to `high`, chosen on the
    /// commits it was fitted on.
    pub high_threshold: f64,
    /// Share of defect-inducing commits among those it was fitted on.
    pub base_rate: f64,
    pub fitted_on: usize,
}

/// One feature's share of a prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Contribution {
    pub feature: String,
    /// The value as measured (lines, days, commits).
    pub value: f64,
    /// Its push on the log-odds: positive raises the probability.
    pub log_odds: f64,
}

/// Shares of flagged commits tried when choosing the threshold: raising to `high` means full
/// tests and a canary, so the model may flag at most a fifth of the history.
const MAX_FLAGGED: f64 = 0.2;

impl Model {
    /// Fits the model to `rows` with `labels` (true: defect-inducing).
    pub fn fit(rows: &[&Row], labels: &[bool]) -> Result<Model> {
        let values: Vec<[f64; COUNT]> = rows.iter().map(|r| r.transformed()).collect();
        let n = values.len().max(1) as f64;
        let mut means = vec![0.0; COUNT];
        let mut scales = vec![0.0; COUNT];
        for row in &values {
            for (mean, value) in means.iter_mut().zip(row) {
                *mean += value / n;
            }
        }
        for row in &values {
            for ((scale, value), mean) in scales.iter_mut().zip(row).zip(&means) {
                *scale += (value - mean).powi(2) / n;
            }
        }
        // A constant feature (no fixes ever) gets scale 1: it contributes nothing either way.
        for scale in &mut scales {
            *scale = if *scale > 1e-12 { scale.sqrt() } else { 1.0 };
        }
        let standardised = Array2::from_shape_fn((values.len(), COUNT), |(i, j)| {
            (values[i][j] - means[j]) / scales[j]
        });
        let targets = Array1::from_iter(labels.iter().copied());
        let fitted = LogisticRegression::default()
            .alpha(ALPHA)
            .max_iterations(MAX_ITERATIONS)
            .fit(&Dataset::new(standardised, targets))
            .map_err(Error::Fit)?;
        // linfa names the first label it meets "positive"; orient the weights so that they
        // always predict defect-inducing.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let mut model = Model {
            features: NAMES.iter().map(|s| s.to_string()).collect(),
            means,
            scales,
            coefficients: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
            high_threshold: 1.0,
            base_rate: labels.iter().filter(|l| **l).count() as f64 / n,
            fitted_on: values.len(),
        };
        let probabilities: Vec<f64> = rows.iter().map(|r| model.probability(r)).collect();
        model.high_threshold = choose_threshold(&probabilities, labels);
        Ok(model)
    }

    /// Refuses a model fitted over other features (written by another build of Cairn).
    pub fn check(&self) -> Result<()> {
        let same = self.features.len() == COUNT
            && self.features.iter().zip(NAMES).all(|(a, b)| a == b)
            && [&self.means, &self.scales, &self.coefficients]
                .iter()
                .all(|v| v.len() == COUNT);
        if same {
            Ok(())
        } else {
            Err(Error::BadModel(format!(
                "it was fitted over the features {:?}, this build computes {:?}; run `cairn \
                 risk calibrate` again",
                self.features, NAMES
            )))
        }
    }

    fn log_odds_parts(&self, row: &Row) -> [f64; COUNT] {
        let values = row.transformed();
        let mut parts = [0.0; COUNT];
        for (j, part) in parts.iter_mut().enumerate() {
            *part = self.coefficients[j] * (values[j] - self.means[j]) / self.scales[j];
        }
        parts
    }

    /// The probability that the commit of `row` is defect-inducing.
    pub fn probability(&self, row: &Row) -> f64 {
        let z = self.intercept + self.log_odds_parts(row).iter().sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    /// The features that pushed this prediction most, largest push first (either way).
    pub fn top_contributions(&self, row: &Row, count: usize) -> Vec<Contribution> {
        let mut all: Vec<Contribution> = self
            .log_odds_parts(row)
            .iter()
            .enumerate()
            .map(|(j, part)| Contribution {
                feature: self.features[j].clone(),
                value: row.raw[j],
                log_odds: *part,
            })
            .collect();
        all.sort_by(|a, b| b.log_odds.abs().total_cmp(&a.log_odds.abs()));
        all.truncate(count);
        all
    }
}

/// The threshold with the best F1 among those that flag at most [`MAX_FLAGGED`] of the
/// commits (1.0, flagging none, when there is no defect-inducing commit to find).
fn choose_threshold(probabilities: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return 1.0;
    }
    let most = ((probabilities.len() as f64) * MAX_FLAGGED).floor() as usize;
    let (mut best, mut best_f1, mut caught) = (1.0, -1.0, 0usize);
    for (k, index) in order.iter().take(most.max(1)).enumerate() {
        caught += usize::from(labels[*index]);
        // Ties: only a cut between two different probabilities can be a threshold.
        let next = order.get(k + 1).map(|i| probabilities[*i]);
        if next == Some(probabilities[*index]) {
            continue;
        }
        let precision = caught as f64 / (k + 1) as f64;
        let recall = caught as f64 / positives as f64;
        let f1 = if caught == 0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        if f1 > best_f1 {
            best_f1 = f1;
            best = probabilities[*index];
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lines: f64) -> Row {
        let mut raw = [0.0; COUNT];
        raw[0] = lines;
        raw[15] = 1.0;
        Row {
            commit: String::new(),
            time: 0,
            raw,
        }
    }

    #[test]
    fn a_model_learns_that_bigger_changes_break_more_and_says_why() {
        // Large changes induce defects more often than small ones.
        let rows: Vec<Row> = (0..200).map(|i| row(f64::from(i % 100) * 10.0)).collect();
        let labels: Vec<bool> = (0..200).map(|i| (i % 100) > 60 || i % 17 == 0).collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let model = Model::fit(&refs, &labels).expect("fits");
        model.check().expect("current features");
        assert!(model.coefficients[0] > 0.0, "{:?}", model.coefficients);
        let small = model.probability(&row(5.0));
        let large = model.probability(&row(900.0));
        assert!(large > small, "{large} > {small}");
        let top = model.top_contributions(&row(900.0), 3);
        assert_eq!(top[0].feature, "lines_added");
        assert!(top[0].log_odds > 0.0);
        assert!(model.high_threshold > 0.0 && model.high_threshold <= 1.0);
    }

    #[test]
    fn the_threshold_flags_at_most_a_fifth() {
        let probabilities: Vec<f64> = (0..10).map(|i| f64::from(i) / 10.0).collect();
        let labels = [
            false, false, false, false, false, true, true, true, true, true,
        ];
        // The best F1 overall would flag half; a fifth allows the top two only.
        assert_eq!(choose_threshold(&probabilities, &labels), 0.8);
    }
}
