//! `cairn risk calibrate`: label a repository's history (SZZ and Cairn's own outcomes),
//! compute features, measure a model on a time-ordered split, and fit the model to keep.
//!
//! The newest `gap_days` of history are left out of the labelled window: their defects may
//! not have been fixed yet, so they would count as clean and teach the model wrongly. The
//! window is split by time: the model is fitted on the older part and measured on the newer
//! one, as it will be used — on commits after the ones it learned from. The model kept is then
//! fitted on the whole window.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::evaluate::{FlagScore, auc, brier, flag_score};
use super::features::{self, NAMES, Row};
use super::log;
use super::model::Model;
use super::szz;

/// Fewer labelled commits than this cannot be split and fitted meaningfully.
pub const MIN_COMMITS: usize = 40;

#[derive(Debug, Clone)]
pub struct Options {
    /// The newest history left unlabelled (its fixes may not have come yet).
    pub gap_days: u32,
    /// Share of the labelled window, oldest first, the measured model is fitted on.
    pub train_share: f64,
    /// Threads tracing fixes with `git blame`.
    pub workers: usize,
    /// Commits Cairn itself saw fail (tests failed, deployment rolled back): defect-inducing.
    pub outcomes: BTreeSet<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gap_days: 90,
            train_share: 0.75,
            workers: 2,
            outcomes: BTreeSet::new(),
        }
    }
}

/// A part of the history: how many commits, how many defect-inducing, first and last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Span {
    pub commits: usize,
    pub defect_inducing: usize,
    pub first: String,
    pub last: String,
}

/// What calibration measured, stored beside the model and printed by `cairn risk report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub head: String,
    /// Non-merge commits read.
    pub commits: usize,
    pub gap_days: u32,
    pub fixes_traced: usize,
    /// Commits labelled from Cairn's own outcomes (failed tests, rollbacks).
    pub from_outcomes: usize,
    pub window: Span,
    pub train: Span,
    pub test: Span,
    /// The model's area under the ROC curve on the test part.
    pub auc: Option<f64>,
    /// The same for the rule floor alone (low/medium/high from paths and sizes).
    pub rules_auc: Option<f64>,
    pub brier: f64,
    /// Brier score of always guessing the training base rate, to compare with.
    pub brier_base_rate: f64,
    pub mean_probability: f64,
    pub test_rate: f64,
    /// `high` against later fixes on the test part: rules alone, the model alone, and the
    /// two together (what Cairn decides: the model only ever raises).
    pub high_rules: FlagScore,
    pub high_model: FlagScore,
    pub high_combined: FlagScore,
    pub threshold: f64,
    /// The test part in five equal groups by predicted probability: does a group predicted at
    /// p see defects at about p?
    #[serde(default)]
    pub reliability: Vec<Bin>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bin {
    pub commits: usize,
    pub mean_probability: f64,
    pub observed_rate: f64,
}

/// Commits sorted by probability, cut into `count` groups of (nearly) equal size.
fn reliability(probabilities: &[f64], labels: &[bool], count: usize) -> Vec<Bin> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|a, b| probabilities[*a].total_cmp(&probabilities[*b]));
    (0..count)
        .filter_map(|k| {
            let start = k * order.len() / count;
            let end = (k + 1) * order.len() / count;
            let group = order.get(start..end).filter(|g| !g.is_empty())?;
            let n = group.len() as f64;
            Some(Bin {
                commits: group.len(),
                mean_probability: group.iter().map(|i| probabilities[*i]).sum::<f64>() / n,
                observed_rate: group.iter().filter(|i| labels[**i]).count() as f64 / n,
            })
        })
        .collect()
}

pub struct Calibration {
    pub model: Model,
    pub evaluation: Evaluation,
}

/// Calibrates on the history reachable from `revision`. `say` receives progress lines.
pub fn calibrate(
    repo: &Path,
    revision: &str,
    options: &Options,
    say: &(dyn Fn(String) + Sync),
) -> Result<Calibration> {
    let started = Instant::now();
    let name = repo.display().to_string();
    let head = log::resolve(repo, revision)?;
    let commits = log::read(repo, &head)?;
    say(format!("read {} commits (merges left out)", commits.len()));
    let head_time = commits.iter().map(|c| c.time).max().unwrap_or(0);
    let cutoff = head_time - i64::from(options.gap_days) * 86_400;

    let step = std::sync::atomic::AtomicUsize::new(0);
    let (inducing, fixes_traced) = szz::label(repo, &commits, options.workers, &|done, total| {
        // About twenty progress lines, whatever the size of the history.
        let every = (total / 20).max(1);
        if done % every == 0 || done == total {
            let previous = step.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
            if previous < done {
                say(format!("tracing fixes with git blame: {done}/{total}"));
            }
        }
    });
    let known: BTreeSet<&str> = commits.iter().map(|c| c.id.as_str()).collect();
    let from_outcomes = options
        .outcomes
        .iter()
        .filter(|id| known.contains(id.as_str()) && !inducing.contains(*id))
        .count();
    say(format!(
        "{} fix commits traced: {} commits labelled defect-inducing, {} more from Cairn's own \
         outcomes",
        fixes_traced,
        inducing.len(),
        from_outcomes
    ));

    let rows = features::rows(&commits);
    let mut window: Vec<(&Row, bool)> = rows
        .iter()
        .filter(|r| r.time <= cutoff)
        .map(|r| {
            let label = inducing.contains(&r.commit) || options.outcomes.contains(&r.commit);
            (r, label)
        })
        .collect();
    window.sort_by_key(|(r, _)| r.time);
    if window.len() < MIN_COMMITS {
        return Err(Error::TooFewCommits {
            repo: name,
            found: window.len(),
            needed: MIN_COMMITS,
            gap_days: options.gap_days,
        });
    }
    let split = ((window.len() as f64) * options.train_share).round() as usize;
    let split = split.clamp(1, window.len() - 1);
    let (train, test) = window.split_at(split);
    let fit = |part: &[(&Row, bool)]| -> Result<Model> {
        let labels: Vec<bool> = part.iter().map(|(_, l)| *l).collect();
        let positives = labels.iter().filter(|l| **l).count();
        if positives == 0 || positives == labels.len() {
            return Err(Error::OneClass {
                repo: name.clone(),
                missing: if positives == 0 {
                    "defect-inducing"
                } else {
                    "clean"
                },
                positives,
                total: labels.len(),
            });
        }
        let rows: Vec<&Row> = part.iter().map(|(r, _)| *r).collect();
        Model::fit(&rows, &labels)
    };
    say(format!(
        "fitting on the older {} commits, measuring on the newer {}",
        train.len(),
        test.len()
    ));
    let measured = fit(train)?;
    let labels: Vec<bool> = test.iter().map(|(_, l)| *l).collect();
    let probabilities: Vec<f64> = test.iter().map(|(r, _)| measured.probability(r)).collect();
    let floor_index = NAMES
        .iter()
        .position(|n| *n == "rule_floor")
        .unwrap_or(NAMES.len() - 1);
    let floors: Vec<f64> = test.iter().map(|(r, _)| r.raw[floor_index]).collect();
    let rules_high: Vec<bool> = floors.iter().map(|f| *f >= 2.0).collect();
    let model_high: Vec<bool> = probabilities
        .iter()
        .map(|p| *p >= measured.high_threshold)
        .collect();
    let combined: Vec<bool> = rules_high
        .iter()
        .zip(&model_high)
        .map(|(a, b)| *a || *b)
        .collect();
    let n = test.len().max(1) as f64;
    let test_rate = labels.iter().filter(|l| **l).count() as f64 / n;
    let brier_base_rate = brier(&vec![measured.base_rate; labels.len()], &labels);

    say(format!(
        "fitting the model to keep on all {} labelled commits",
        window.len()
    ));
    let model = fit(&window)?;
    let span = |part: &[(&Row, bool)]| Span {
        commits: part.len(),
        defect_inducing: part.iter().filter(|(_, l)| *l).count(),
        first: part
            .first()
            .map(|(r, _)| r.commit.clone())
            .unwrap_or_default(),
        last: part
            .last()
            .map(|(r, _)| r.commit.clone())
            .unwrap_or_default(),
    };
    let evaluation = Evaluation {
        head,
        commits: commits.len(),
        gap_days: options.gap_days,
        fixes_traced,
        from_outcomes,
        window: span(&window),
        train: span(train),
        test: span(test),
        auc: auc(&probabilities, &labels),
        rules_auc: auc(&floors, &labels),
        brier: brier(&probabilities, &labels),
        brier_base_rate,
        mean_probability: probabilities.iter().sum::<f64>() / n,
        test_rate,
        high_rules: flag_score(&rules_high, &labels),
        high_model: flag_score(&model_high, &labels),
        high_combined: flag_score(&combined, &labels),
        threshold: measured.high_threshold,
        reliability: reliability(&probabilities, &labels, 5),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Calibration { model, evaluation })
}
