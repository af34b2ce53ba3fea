//! `cairn risk calibrate --repo PATH`: learn a risk model from the repository's own history
//! and keep it in the store. `cairn risk report`: what each calibration measured — AUC on a
//! time-ordered split, precision/recall of `high` against later fixes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use cairn_engine::agents::orchestrator::history::{
    self as risk_model, Evaluation, FlagScore, Model, Options, canonical, root_commit,
};
use cairn_engine::store::{Store, StoredRiskModel};

use super::Invalid;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct RiskArgs {
    #[command(subcommand)]
    pub what: RiskCommand,
}

#[derive(clap::Subcommand)]
pub enum RiskCommand {
    /// Label past commits (SZZ, failed tests, rollbacks), fit the model, measure it on the
    /// newest part of the history, and keep it for `cairn analyze`.
    Calibrate {
        #[arg(long, value_name = "PATH")]
        repo: PathBuf,
        /// The history to learn from: everything reachable from this revision.
        #[arg(long, value_name = "REV", default_value = "HEAD")]
        commit: String,
        /// Leave out the newest days of history: their defects may not be fixed yet.
        #[arg(long, default_value_t = 90)]
        gap_days: u32,
        /// Share of the labelled history, oldest first, that the measured model learns from.
        #[arg(long, default_value_t = 0.75)]
        train_share: f64,
        #[arg(long)]
        json: bool,
    },
    /// What the calibrated models measured, per repository.
    Report {
        /// Only the model of this repository.
        #[arg(long, value_name = "PATH")]
        repo: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn risk(home: Option<PathBuf>, args: &RiskArgs) -> Result<()> {
    match &args.what {
        RiskCommand::Calibrate {
            repo,
            commit,
            gap_days,
            train_share,
            json,
        } => {
            if !(0.1..=0.95).contains(train_share) {
                return Err(Invalid(format!(
                    "--train-share must be between 0.1 and 0.95, not {train_share}"
                ))
                .into());
            }
            let options = Options {
                gap_days: *gap_days,
                train_share: *train_share,
                ..Options::default()
            };
            calibrate(home, repo, commit, options, *json)
        }
        RiskCommand::Report { repo, json } => report(home, repo.as_deref(), *json),
    }
}

fn calibrate(
    home: Option<PathBuf>,
    repo: &Path,
    commit: &str,
    mut options: Options,
    as_json: bool,
) -> Result<()> {
    super::check_repository(repo)?;
    let store = Settings::resolve(home, None)?.open_store()?;
    options.outcomes = store.failed_outcome_commits()?;
    let say = |line: String| eprintln!("calibrate: {line}");
    let calibration = match risk_model::calibrate(repo, commit, &options, &say) {
        Ok(calibration) => calibration,
        Err(
            error @ (risk_model::Error::TooFewCommits { .. } | risk_model::Error::OneClass { .. }),
        ) => return Err(Invalid(error.to_string()).into()),
        Err(risk_model::Error::Git { message, .. }) if commit != "HEAD" => {
            return Err(Invalid(format!("--commit {commit}: {message}")).into());
        }
        Err(error) => return Err(error.into()),
    };
    let key = canonical(repo);
    let root = root_commit(repo)?;
    let evaluation = serde_json::to_value(&calibration.evaluation)?;
    store.write(|txn| {
        txn.put_risk_model(
            &key,
            &root,
            &calibration.evaluation.head,
            &serde_json::to_value(&calibration.model).unwrap_or_default(),
            &evaluation,
        )
    })?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "repo": key,
                "evaluation": evaluation,
                "model": calibration.model,
            }))?
        );
    } else {
        print_evaluation(&key, &calibration.evaluation);
        print_model(&calibration.model);
    }
    Ok(())
}

fn report(home: Option<PathBuf>, repo: Option<&Path>, as_json: bool) -> Result<()> {
    let store: Store = Settings::resolve(home, None)?.open_store()?;
    let models: Vec<StoredRiskModel> = match repo {
        Some(repo) => {
            super::check_repository(repo)?;
            store
                .risk_model(&canonical(repo), &root_commit(repo)?)?
                .into_iter()
                .collect()
        }
        None => store.risk_models()?,
    };
    if models.is_empty() {
        return Err(Invalid(
            "no risk model has been calibrated yet: run `cairn risk calibrate --repo PATH`".into(),
        )
        .into());
    }
    if as_json {
        let all: Vec<_> = models
            .iter()
            .map(|m| json!({ "repo": m.repo, "evaluation": m.evaluation, "model": m.model }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for stored in &models {
        let evaluation: Evaluation = serde_json::from_value(stored.evaluation.clone())
            .with_context(|| format!("the stored evaluation of {} is unreadable", stored.repo))?;
        print_evaluation(&stored.repo, &evaluation);
        if let Ok(model) = serde_json::from_value::<Model>(stored.model.clone()) {
            print_model(&model);
        }
        println!();
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}

fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

fn flag(score: &FlagScore) -> String {
    format!(
        "precision {} recall {} ({} flagged, {} of {} defect-inducing caught)",
        figure(score.precision),
        figure(score.recall),
        score.flagged,
        score.hits,
        score.positives
    )
}

fn print_evaluation(repo: &str, e: &Evaluation) {
    let share = |part: usize, of: usize| 100.0 * part as f64 / of.max(1) as f64;
    println!("repository   {repo} (at {})", short(&e.head));
    println!(
        "history      {} commits (merges left out); {} fixes traced; {} labelled from Cairn's \
         own outcomes",
        e.commits, e.fixes_traced, e.from_outcomes
    );
    println!(
        "labelled     {} commits {}..{} (the newest {} days left out), {} defect-inducing ({:.1}%)",
        e.window.commits,
        short(&e.window.first),
        short(&e.window.last),
        e.gap_days,
        e.window.defect_inducing,
        share(e.window.defect_inducing, e.window.commits)
    );
    println!(
        "split        train {} older commits {}..{}; test {} newer commits {}..{} ({} \
         defect-inducing)",
        e.train.commits,
        short(&e.train.first),
        short(&e.train.last),
        e.test.commits,
        short(&e.test.first),
        short(&e.test.last),
        e.test.defect_inducing
    );
    println!(
        "AUC          model {}, rule floor alone {}",
        figure(e.auc),
        figure(e.rules_auc)
    );
    println!(
        "calibration  mean probability {:.3} vs observed rate {:.3}; Brier {:.4} (base rate \
         guess {:.4})",
        e.mean_probability, e.test_rate, e.brier, e.brier_base_rate
    );
    let bins: Vec<String> = e
        .reliability
        .iter()
        .map(|b| format!("{:.2}→{:.2}", b.mean_probability, b.observed_rate))
        .collect();
    println!(
        "reliability  predicted→observed by fifths of the test part: {}",
        bins.join(", ")
    );
    println!("high         rules alone:    {}", flag(&e.high_rules));
    println!("             model alone:    {}", flag(&e.high_model));
    println!("             rules or model: {}", flag(&e.high_combined));
    println!(
        "threshold    the model raises to high at probability {:.3}",
        e.threshold
    );
    println!("time         {:.1} s", e.seconds);
}

fn print_model(model: &Model) {
    println!(
        "model        logistic regression on {} commits, base rate {:.3}, high at {:.3}; \
         weights per standard deviation:",
        model.fitted_on, model.base_rate, model.high_threshold
    );
    let mut weights: Vec<(&String, f64)> = model
        .features
        .iter()
        .zip(model.coefficients.iter().copied())
        .collect();
    weights.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    for (feature, weight) in weights {
        println!("  {weight:>+7.3}  {feature}");
    }
}
