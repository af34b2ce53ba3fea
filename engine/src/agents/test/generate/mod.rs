//! Validated test generation (`with: generate: true`): for functions the commit changed that no
//! test refers to, the model proposes a test, and the gate ([`gate`]) accepts it only if it
//! compiles, passes three times on the new commit and fails on the parent. Every proposal is
//! recorded with its verdict (`test_proposals`); accepted ones go to a patch and/or a branch
//! ([`deliver`]), never onto the tested branch.

mod deliver;
mod functions;
mod gate;
mod propose;

use std::path::Path;

use serde_json::{Value, json};

use super::coverage::Lcov;
use super::files::{Hunk, added_lines, changed_hunks, is_test_file, parent, test_files};
use super::handover::Delivery;
use crate::exec::{LogSink, git};
use crate::llm::{CallScope, Router};
use crate::store::{ProposalRecord, Store, now_ms};
use deliver::deliver;
use functions::{Language, functions, mentions, rust_test_part, touched};
use gate::{Scratch, Verdict};
use propose::{Target, propose};

pub use gate::Rejection;

/// `with: generate:`, `proposals:`, `max_proposals:`.
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: bool,
    pub delivery: Delivery,
    /// Each proposal costs a model call and several builds: a commit gets at most this many.
    pub max_proposals: usize,
}

impl Options {
    pub fn from(with: &Value) -> Result<Options, String> {
        let enabled = match with.get("generate") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(on)) => *on,
            Some(other) => {
                return Err(format!(
                    "with.generate: expected true or false, got {other}"
                ));
            }
        };
        let delivery = Delivery::from_with(with)?;
        let max_proposals = match with.get("max_proposals") {
            None | Some(Value::Null) => 3,
            Some(value) => value
                .as_u64()
                .ok_or_else(|| format!("with.max_proposals: expected a count, got {value}"))?
                as usize,
        };
        Ok(Options {
            enabled,
            delivery,
            max_proposals,
        })
    }
}

/// What the generation step needs from the agent's call.
pub struct Call<'a> {
    pub router: Option<&'a Router>,
    pub store: &'a Store,
    pub run_id: i64,
    pub step_id: &'a str,
    pub repo: &'a str,
    pub commit: &'a str,
    pub workspace: &'a Path,
    pub logs: &'a LogSink,
    /// The attempt's language-model call scope (see `agents::call_scope`).
    pub scope: CallScope,
    /// Line coverage of the run, when measured: a changed function with an added line that no
    /// test ran is untested even if a test names it, and one whose added lines all ran is
    /// tested even if none names it.
    pub coverage: Option<&'a Lcov>,
}

/// Changed functions that no test mentions, as proposal targets.
fn untested(
    workspace: &Path,
    commit: &str,
    hunks: &std::collections::BTreeMap<String, Vec<Hunk>>,
    coverage: Option<&Lcov>,
) -> Result<Vec<Target>, String> {
    let tests: Vec<String> = test_files(workspace, commit)?
        .iter()
        .filter_map(|file| std::fs::read_to_string(workspace.join(file)).ok())
        .collect();
    let has_tests_dir = workspace.join("tests").is_dir();
    let mut targets = Vec::new();
    for (path, file_hunks) in hunks {
        let Some(language) = Language::of(path) else {
            continue;
        };
        if is_test_file(path) || path.split('/').any(|d| d == "tests") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(workspace.join(path)) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for function in touched(&functions(language, &text), file_hunks) {
            let tested = match coverage.and_then(|lcov| lcov.get(path)) {
                Some(lines) => !added_lines(file_hunks)
                    .into_iter()
                    .filter(|n| (function.start..=function.end).contains(n))
                    .any(|n| lines.get(&n) == Some(&0)),
                None => {
                    let own_tests = if language == Language::Rust {
                        rust_test_part(&text)
                    } else {
                        ""
                    };
                    mentions(own_tests, &function.name)
                        || tests.iter().any(|t| mentions(t, &function.name))
                }
            };
            if tested {
                continue;
            }
            let source = lines
                [(function.start as usize - 1)..(function.end as usize).min(lines.len())]
                .join("\n");
            let diff = git(
                workspace,
                &[
                    "show",
                    "--format=",
                    "--no-color",
                    "--no-ext-diff",
                    commit,
                    "--",
                    path,
                ],
            )
            .unwrap_or_default();
            targets.push(Target {
                path: path.clone(),
                name: function.name,
                language,
                source,
                diff,
                has_tests_dir,
            });
        }
    }
    Ok(targets)
}

/// Proposes, validates, records and delivers tests; returns the outputs' `generated` value.
pub async fn generate(call: Call<'_>, options: &Options) -> Result<Value, String> {
    let log = |text: String| call.logs.line("engine", format!("generate: {text}"));
    let hunks = changed_hunks(call.workspace, call.commit)?;
    let all_targets = untested(call.workspace, call.commit, &hunks, call.coverage)?;
    if all_targets.is_empty() {
        log("every changed function (Rust, Python) already has a test (one that names it, or ran its changed lines)".into());
        return Ok(json!({ "candidates": 0, "accepted": [], "rejected": [] }));
    }
    let Some(router) = call.router else {
        log("no language-model router: no test proposed".into());
        return Ok(
            json!({ "candidates": all_targets.len(), "skipped": "no language-model router", "accepted": [], "rejected": [] }),
        );
    };
    let targets: Vec<Target> = all_targets
        .iter()
        .take(options.max_proposals)
        .cloned()
        .collect();
    log(format!(
        "{} changed function(s) without a test: {}; proposing for {}",
        all_targets.len(),
        all_targets
            .iter()
            .map(|t| format!("{} ({})", t.name, t.path))
            .collect::<Vec<_>>()
            .join(", "),
        targets.len()
    ));
    let run_dir = call.workspace.parent().unwrap_or(call.workspace);
    // The full id names the branch and the patch, whatever the run was started with.
    let commit = git(
        call.workspace,
        &[
            "rev-parse",
            "--verify",
            &format!("{}^{{commit}}", call.commit),
        ],
    )?
    .trim()
    .to_string();
    let parent = parent(call.workspace, &commit);
    let scratch = Scratch::create(
        call.workspace,
        &run_dir.join("generate-scratch"),
        &commit,
        parent.as_deref(),
    )
    .await?;
    let scope = &call.scope;
    call.store
        .write(|txn| txn.forget_proposals(call.run_id, call.step_id, "test"))
        .map_err(|e| format!("failed to clear an earlier attempt's proposals: {e}"))?;
    let mut accepted = Vec::new();
    let mut accepted_json = Vec::new();
    let mut rejected_json = Vec::new();
    let mut skipped_json = Vec::new();
    let outcome: Result<(), String> = async {
        for target in &targets {
            // A tree that does not build without the test would blame every proposal for it.
            if let Err(why) = scratch.baseline(target).await? {
                log(format!("{} ({}): skipped: {why}", target.name, target.path));
                skipped_json.push(json!({ "function": target.name, "file": target.path, "reason": why }));
                continue;
            }
            log(format!("asking for a test of {} ({})", target.name, target.path));
            let (proposal, status, reason, detail) = match propose(router, scope, target).await {
                Err(why) => (None, "rejected", "invalid", why),
                Ok(proposal) => match scratch.validate(target, &proposal, call.logs).await? {
                    Verdict::Accepted(note) => (Some(proposal), "accepted", "accepted", note),
                    Verdict::Rejected(rejection, detail) => (Some(proposal), "rejected", rejection.as_str(), detail),
                },
            };
            log(format!("{} ({}): {status}: {reason}", target.name, target.path));
            let record = ProposalRecord {
                kind: "test".into(),
                run_id: call.run_id,
                step_id: call.step_id.to_string(),
                repo: call.repo.to_string(),
                commit_id: commit.clone(),
                source_path: target.path.clone(),
                function: target.name.clone(),
                test_path: proposal.as_ref().map(|p| p.test_path.clone()).unwrap_or_default(),
                status: status.into(),
                reason: reason.into(),
                detail: detail.clone(),
                code: proposal.as_ref().map(|p| p.code.clone()).unwrap_or_default(),
                tier: proposal.as_ref().map_or_else(|| "none".to_string(), |p| p.tier.clone()),
                at: now_ms(),
            };
            call.store.write(|txn| txn.record_proposal(&record)).map_err(|e| format!("failed to record a proposal: {e}"))?;
            let entry = json!({ "function": target.name, "file": target.path, "test_path": record.test_path, "test_name": proposal.as_ref().map(|p| p.test_name.clone()), "tier": record.tier, "reason": reason, "detail": detail });
            match proposal {
                Some(proposal) if status == "accepted" => {
                    accepted_json.push(entry);
                    accepted.push((target.clone(), proposal));
                }
                _ => rejected_json.push(entry),
            }
        }
        Ok(())
    }
    .await;
    let delivered = match (&outcome, accepted.is_empty()) {
        (Ok(()), false) => Some(deliver(
            &scratch,
            &accepted,
            options.delivery,
            call.repo,
            run_dir,
        )),
        _ => None,
    };
    scratch.remove();
    outcome?;
    let delivered = delivered.transpose()?;
    if let Some(delivered) = &delivered {
        if let Some(patch) = &delivered.patch {
            log(format!("accepted tests written to {}", patch.display()));
        }
        if let (Some(branch), Some(place)) = (&delivered.branch, &delivered.branch_in) {
            log(format!(
                "accepted tests committed on branch {branch} in {place}"
            ));
        }
        for problem in &delivered.problems {
            log(problem.clone());
        }
    }
    Ok(json!({
        "candidates": all_targets.len(),
        "proposed": targets.len(),
        "accepted": accepted_json,
        "rejected": rejected_json,
        "skipped": skipped_json,
        "patch": delivered.as_ref().and_then(|d| d.patch.as_ref()).map(|p| p.to_string_lossy().into_owned()),
        "branch": delivered.as_ref().and_then(|d| d.branch.clone()),
        "branch_in": delivered.as_ref().and_then(|d| d.branch_in.clone()),
    }))
}
