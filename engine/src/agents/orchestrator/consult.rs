//! Asking the language models about a change: per-file summaries (local, cached by content,
//! so a rebase or a re-run reuses them) and, only where the answer can change the outcome, a
//! risk assessment that may raise the rule floor but never lower it.
//!
//! Bounded: lockfiles, generated, vendored and minified files are never sent to a model, the
//! summaries share a time and an input budget per analysis, and every file left out is named
//! with why (`not_summarised`). A summary that names anything the diff does not hold
//! (`faithful.rs`) is withheld and the file's deterministic description shown instead.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::faithful::{invented_names, says_nothing};
use super::lines;
use super::machine::machine_written;
use super::risk::Level;
use super::{Analysis, Route};
use crate::llm::{CallScope, Request, Router, Task, Tier, TierChoice};

/// Files summarized one by one; the rest are named by the rules' summary.
const MAX_FILE_SUMMARIES: usize = 6;
/// A file's patch longer than this is described by its numbers, not read by the model.
const MAX_PATCH_LINES: usize = 400;
/// The risk question carries the diff itself only when it is this small.
const MAX_RISK_DIFF_LINES: usize = 300;
/// Time the file summaries of one analysis may take together: a summary is not started when
/// the time spent plus the last summary's duration would pass it. Keeps a typical commit's
/// model-backed analysis within 5 s on a 2-core machine (`cairn bench analyze`).
const SUMMARY_TIME_BUDGET: Duration = Duration::from_millis(4_000);
/// Diff characters the summaries of one analysis may read together (about 4,000 tokens).
const SUMMARY_INPUT_BUDGET: usize = 12_000;

/// What the models contributed, kept on the analysis.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelView {
    /// One sentence per summarized file.
    pub file_summaries: Vec<String>,
    /// Who answered each call: `task: tier (cache hit) [fallbacks]`.
    pub calls: Vec<String>,
    /// Whether a model was asked about risk (rules were not certain, floor below high).
    pub risk_asked: bool,
    /// The level the model proposed, when asked.
    pub model_level: Option<String>,
    /// Why the risk question was not asked, when it was not for a reason other than the rules.
    pub risk_note: Option<String>,
    /// Why no file was summarised, when summaries are off.
    pub summary_note: Option<String>,
    /// Files not summarised by a model, each with why (`path: lockfile`, `… over the time
    /// budget`, `… summary withheld: names X not in the diff`).
    pub not_summarised: Vec<String>,
}

/// `diff --git` sections of a patch, by the new path.
pub fn split_patch(patch: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in patch.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("diff --git ") {
            let path = header
                .trim_end()
                .rsplit_once(" b/")
                .map(|(_, p)| p.to_string())
                .unwrap_or_default();
            files.push((path, String::new()));
        }
        if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
        }
    }
    files
}

pub async fn consult(
    router: &Router,
    scope: Option<&CallScope>,
    analysis: &mut Analysis,
    patch: &str,
    subject: &str,
) {
    let mut view = ModelView::default();
    let patches = split_patch(patch);
    let mut order: Vec<usize> = (0..analysis.files.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(analysis.files[i].file.additions + analysis.files[i].file.deletions)
    });
    // The default small model's summaries were not worth their time (measured: see
    // ARCHITECTURE.md, "Risk and routing"): summaries are written only when a remote tier or
    // `llm.tasks.summarize_diff` asks for them; the deterministic description stands otherwise.
    let settings = router.settings();
    if settings.tier(Task::SummarizeDiff) == TierChoice::Local
        && !settings.tiers.contains_key(&Task::SummarizeDiff)
    {
        order.clear();
        view.summary_note = Some(
            "no model summaries: the default local model's were not faithful enough to show \
             (set llm.tasks.summarize_diff: local to ask it)"
                .into(),
        );
    }
    let started = Instant::now();
    let mut last_call = Duration::ZERO;
    let mut input_left = SUMMARY_INPUT_BUDGET;
    let mut asked = 0;
    for index in order {
        let file = &analysis.files[index];
        let path = &file.file.path;
        let Some((_, file_patch)) = patches.iter().find(|(p, _)| p == path) else {
            continue;
        };
        let changed = lines::parse(file_patch);
        let skip = if file.file.binary {
            Some("binary".to_string())
        } else if let Some(kind) = machine_written(path, changed.first()) {
            Some(format!("{kind}, never sent to a model"))
        } else if file_patch.lines().count() > MAX_PATCH_LINES {
            Some(format!("over {MAX_PATCH_LINES} diff lines"))
        } else if asked >= MAX_FILE_SUMMARIES {
            Some(format!("beyond the {MAX_FILE_SUMMARIES} largest files"))
        } else if started.elapsed() + last_call >= SUMMARY_TIME_BUDGET {
            Some(format!(
                "over the {} s summary time budget",
                SUMMARY_TIME_BUDGET.as_secs()
            ))
        } else if file_patch.len() > input_left {
            Some(format!(
                "over the {SUMMARY_INPUT_BUDGET}-character summary input budget"
            ))
        } else {
            None
        };
        if let Some(why) = skip {
            view.not_summarised.push(format!("{path}: {why}"));
            continue;
        }
        asked += 1;
        input_left -= file_patch.len();
        let facts = format!(
            "{} {} (+{} -{})",
            file.file.status, file.file.path, file.file.additions, file.file.deletions
        );
        let request = Request {
            task: Task::SummarizeDiff,
            instruction: "You summarize code changes for a CI system. Reply with one short sentence saying what the change does.".into(),
            input: format!("File: {} ({})", file.file.path, file.category.as_str()),
            diff: Some(file_patch.clone()),
        };
        let call_started = Instant::now();
        let answer = router
            .ask(scope, request, || Value::String(facts.clone()))
            .await;
        last_call = call_started.elapsed();
        view.calls.push(describe("summarize_diff", &answer));
        let sentence = first_sentence(&answer.text);
        let invented = invented_names(&sentence, file_patch);
        let empty = says_nothing(&sentence, file_patch);
        if sentence.is_empty() || answer.tier == Tier::Rules {
            view.file_summaries.push(facts);
        } else if let Some(why) = empty.filter(|_| invented.is_empty()) {
            view.not_summarised
                .push(format!("{path}: summary withheld, {why}"));
            view.file_summaries.push(facts);
        } else if !invented.is_empty() {
            // Unfaithful: say what the diff holds, not what the model imagined.
            view.not_summarised.push(format!(
                "{path}: summary withheld, it named {} not in the diff",
                invented.join(", ")
            ));
            view.file_summaries.push(facts);
        } else {
            view.file_summaries.push(format!("{path}: {sentence}"));
        }
    }
    if !view.file_summaries.is_empty() {
        analysis.summary = format!("{} — {}", view.file_summaries.join("; "), analysis.summary);
    }

    let floor = analysis.risk.level;
    // Measured on outside repositories, the small local model never changed a level: ask it
    // about risk only when configured to (`llm.tasks.assess_risk: local`); a remote tier is
    // asked whenever one is set up.
    let local_by_default = settings.tier(Task::AssessRisk) == TierChoice::Local
        && !settings.tiers.contains_key(&Task::AssessRisk);
    if local_by_default {
        view.risk_note = Some(
            "risk not asked of the local model (it did not change levels in measurement; \
             set llm.tasks.assess_risk: local to ask it)"
                .into(),
        );
    }
    if !analysis.risk.certain && floor < Level::High && !local_by_default {
        view.risk_asked = true;
        let diff_lines = patch.lines().count();
        let files: Vec<String> = analysis
            .files
            .iter()
            .map(|f| {
                format!(
                    "- {} {} ({}, +{} -{})",
                    f.file.status,
                    f.file.path,
                    f.category.as_str(),
                    f.file.additions,
                    f.file.deletions
                )
            })
            .collect();
        let rule_reasons: Vec<String> = analysis
            .risk
            .reasons
            .iter()
            .map(|r| format!("- {}", r.detail))
            .collect();
        let request = Request {
            task: Task::AssessRisk,
            instruction: "You assess how risky it is to deploy a code change. Answer only with JSON: \
                          level (low, medium or high), score (0-100), up to 5 short reasons, and the \
                          deployment strategy (rolling, blue_green or canary)."
                .into(),
            input: format!(
                "Commit subject: {subject}\nFiles:\n{}\nRules found (level {}):\n{}\nSummary: {}",
                files.join("\n"),
                floor.as_str(),
                rule_reasons.join("\n"),
                analysis.summary
            ),
            diff: (diff_lines <= MAX_RISK_DIFF_LINES).then(|| patch.to_string()),
        };
        let fallback = json!({
            "level": floor.as_str(),
            "score": analysis.risk.score,
            "reasons": [],
            "strategy": Route::for_level(floor).deploy,
        });
        let answer = router.ask(scope, request, || fallback).await;
        view.calls.push(describe("assess_risk", &answer));
        if let Some(value) = answer.value.as_ref().filter(|_| answer.tier != Tier::Rules) {
            let proposed = match value.get("level").and_then(Value::as_str) {
                Some("high") => Level::High,
                Some("medium") => Level::Medium,
                _ => Level::Low,
            };
            view.model_level = Some(proposed.as_str().to_string());
            // The rules are a floor: a model may raise the level, never lower it.
            if proposed > floor {
                analysis.risk.level = proposed;
                let score = value.get("score").and_then(Value::as_u64).unwrap_or(0) as u32;
                analysis.risk.score = analysis.risk.score.max(score);
                analysis.decided_by = answer.tier.as_str();
                for reason in value
                    .get("reasons")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(reason) = reason.as_str() {
                        analysis.risk.reasons.push(super::Reason {
                            rule: "model",
                            score,
                            detail: format!("{} model: {reason}", answer.tier.as_str()),
                        });
                    }
                }
                analysis.route = Route::for_level(proposed);
            }
        }
    }
    analysis.models = Some(view);
}

fn describe(task: &str, answer: &crate::llm::Answer) -> String {
    let mut text = format!("{task}: {}", answer.tier.as_str());
    if answer.cache_hit {
        text.push_str(" (cache hit)");
    }
    if answer.replayed {
        text.push_str(" (replayed)");
    }
    if !answer.fallbacks.is_empty() {
        text.push_str(&format!(" after [{}]", answer.fallbacks.join("; ")));
    }
    text
}

fn first_sentence(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let end = line.find(". ").map_or(line.len(), |i| i + 1);
    line[..end].chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_splits_by_file() {
        let patch = "diff --git a/x.rs b/x.rs\n--- a/x.rs\n+++ b/x.rs\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/old.md b/new.md\nsimilarity index 90%\n";
        let files = split_patch(patch);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, "x.rs");
        assert!(files[0].1.ends_with("+b\n"));
        assert_eq!(files[1].0, "new.md");
    }
}
