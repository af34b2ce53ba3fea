//! One failing step's fix suggestions: up to `max_fixes` proposals, each asked, parsed, gated
//! and recorded within [`ATTEMPT_TIMEOUT`], stopping at the first accepted, which is handed
//! over as a patch and/or the `cairn/fix/<sha12>` branch.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Options;
use super::gate::{self, Suite, Verdict};
use super::patch::{Malformed, Patch, parse};
use super::propose::{Failure, propose, question};
use crate::agents::test::files::changed_hunks;
use crate::agents::test::handover::{Handover, hand_over};
use crate::agents::test::scratch::{Scratch, bounded, bounded_to};
use crate::exec::{LogSink, git};
use crate::llm::{CallScope, Router};
use crate::store::{ProposalRecord, Store, now_ms};

/// One proposal, from the question to the verdict: a model that hangs or a patch whose build
/// or tests hang is rejected (`timed_out`), not waited for.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What fix suggestions need from the agent's call.
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
}

/// One proposal's outcome.
struct Judged {
    patch: Option<Patch>,
    answer: String,
    tier: String,
    reason: &'static str,
    detail: String,
}

/// Proposes, gates, records and delivers fixes for `failures`; returns the outputs' `fix` value.
pub async fn suggest(
    call: Call<'_>,
    options: &Options,
    failures: &[Failure],
    suite: &Suite,
) -> Result<Value, String> {
    let log = |text: String| call.logs.line("engine", format!("fix: {text}"));
    let earlier = call
        .store
        .proposal_count(call.run_id, call.step_id, "fix")
        .map_err(|e| format!("failed to read earlier fix proposals: {e}"))?;
    if earlier > 0 {
        // A retry runs the same commit's tests again; the same failures get the same answer.
        let why = format!("an earlier attempt of this step proposed {earlier} fix(es)");
        log(format!("{why}; not asking again"));
        return Ok(json!({ "skipped": why }));
    }
    let Some(router) = call.router else {
        log("no language-model router: no fix proposed".into());
        return Ok(json!({ "skipped": "no language-model router" }));
    };
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
    let hunks = changed_hunks(call.workspace, &commit)?;
    let run_dir = call.workspace.parent().unwrap_or(call.workspace);
    let scratch =
        Scratch::create(call.workspace, &run_dir.join("fix-scratch"), &commit, None).await?;
    let ids: Vec<&str> = failures.iter().map(|f| f.id.as_str()).collect();
    let mut files: Vec<&str> = failures
        .iter()
        .flat_map(|f| &f.files)
        .map(String::as_str)
        .collect();
    files.dedup();
    log(format!(
        "{} test(s) failed for real: {}; asking for at most {} fix(es)",
        failures.len(),
        ids.join(", "),
        options.max_fixes
    ));
    let mut judged_json = Vec::new();
    let mut accepted: Option<Patch> = None;
    let mut previous: Option<String> = None;
    let outcome: Result<(), String> = async {
        for number in 1..=options.max_fixes {
            let mut request = question(call.workspace, &commit, failures, &hunks);
            if let Some(previous) = &previous {
                // Also what makes the question differ from the last one (not a cached answer).
                request
                    .input
                    .push_str(&format!("\nAn earlier fix was rejected: {previous}\n"));
            }
            let judged = match tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                judge(router, &call.scope, request, &scratch, suite, call.logs),
            )
            .await
            {
                Ok(judged) => judged?,
                Err(_) => Judged {
                    patch: None,
                    answer: String::new(),
                    tier: "none".into(),
                    reason: "timed_out",
                    detail: format!("the proposal took longer than {ATTEMPT_TIMEOUT:?}"),
                },
            };
            let status = if judged.reason == "accepted" {
                "accepted"
            } else {
                "rejected"
            };
            log(format!("proposal {number}: {status}: {}", judged.reason));
            let record = ProposalRecord {
                kind: "fix".into(),
                run_id: call.run_id,
                step_id: call.step_id.to_string(),
                repo: call.repo.to_string(),
                commit_id: commit.clone(),
                source_path: judged
                    .patch
                    .as_ref()
                    .map(|p| p.paths().join(", "))
                    .unwrap_or_default(),
                function: ids.join(", "),
                test_path: files.join(", "),
                status: status.into(),
                reason: judged.reason.into(),
                detail: judged.detail.clone(),
                code: judged
                    .patch
                    .as_ref()
                    .map_or_else(|| bounded_to(&judged.answer, 16_000), Patch::text),
                tier: judged.tier.clone(),
                at: now_ms(),
            };
            call.store
                .write(|txn| txn.record_proposal(&record))
                .map_err(|e| format!("failed to record a fix proposal: {e}"))?;
            judged_json.push(json!({
                "status": status,
                "reason": judged.reason,
                "detail": judged.detail,
                "files": judged.patch.as_ref().map(Patch::paths).unwrap_or_default(),
                "tier": judged.tier,
            }));
            if status == "accepted" {
                accepted = judged.patch;
                break;
            }
            previous = Some(format!(
                "{}: {}",
                judged.reason,
                bounded_to(&judged.detail, 600)
            ));
        }
        Ok(())
    }
    .await;
    let delivered = match (&outcome, &accepted) {
        (Ok(()), Some(patch)) => Some(deliver(&scratch, patch, options, call.repo, run_dir, &ids)),
        _ => None,
    };
    scratch.remove();
    outcome?;
    let delivered = delivered.transpose()?;
    if let Some(delivered) = &delivered {
        if let Some(patch) = &delivered.patch {
            log(format!(
                "the accepted fix is written to {}",
                patch.display()
            ));
        }
        if let (Some(branch), Some(place)) = (&delivered.branch, &delivered.branch_in) {
            log(format!(
                "the accepted fix is committed on branch {branch} in {place}"
            ));
        }
        for problem in &delivered.problems {
            log(problem.clone());
        }
    }
    Ok(json!({
        "failing": ids,
        "proposals": judged_json,
        "accepted": accepted.is_some(),
        "patch": delivered.as_ref().and_then(|d| d.patch.as_ref()).map(|p| p.to_string_lossy().into_owned()),
        "branch": delivered.as_ref().and_then(|d| d.branch.clone()),
        "branch_in": delivered.as_ref().and_then(|d| d.branch_in.clone()),
    }))
}

/// Asks for one fix and judges it. `Err` only when the gate itself could not work.
async fn judge(
    router: &Router,
    scope: &CallScope,
    request: crate::llm::Request,
    scratch: &Scratch,
    suite: &Suite,
    logs: &LogSink,
) -> Result<Judged, String> {
    let (answer, tier) = match propose(router, scope, request).await {
        Ok(answer) => answer,
        Err(why) => {
            return Ok(Judged {
                patch: None,
                answer: String::new(),
                tier: "none".into(),
                reason: "no_answer",
                detail: format!("no proposal: {why}"),
            });
        }
    };
    let parsed =
        parse(&answer).and_then(
            |patch| match patch.paths().into_iter().find(|p| suite.runs(p)) {
                Some(path) => Err(Malformed::EditsTests(path)),
                None => Ok(patch),
            },
        );
    let patch = match parsed {
        Ok(patch) => patch,
        Err(malformed) => {
            return Ok(Judged {
                patch: None,
                answer,
                tier,
                reason: malformed.reason(),
                detail: malformed.to_string(),
            });
        }
    };
    let (reason, detail) = match gate::validate(scratch, &patch, suite, logs).await? {
        Verdict::Accepted(note) => ("accepted", note),
        Verdict::Rejected(rejection, detail) => (rejection.as_str(), bounded(&detail)),
    };
    Ok(Judged {
        patch: Some(patch),
        answer,
        tier,
        reason,
        detail,
    })
}

/// The accepted patch, applied to the pristine commit in the scratch tree, handed over.
fn deliver(
    scratch: &Scratch,
    patch: &Patch,
    options: &Options,
    repo: &str,
    run_dir: &Path,
    failing: &[&str],
) -> Result<crate::agents::test::handover::Delivered, String> {
    gate::apply(scratch, patch)?
        .map_err(|why| format!("the accepted fix no longer applies: {why}"))?;
    let sha12 = &scratch.commit[..scratch.commit.len().min(12)];
    let what = Handover {
        kind: "fix",
        patch_prefix: "fix-",
        message: format!(
            "fix: suggested fix for {sha12}\n\nProposed by Cairn's test agent and validated: it applies, builds, makes the failing tests pass and breaks none. Review before merging.\nFailing tests: {}\n",
            failing.join(", ")
        ),
    };
    hand_over(scratch, &what, options.delivery, repo, run_dir)
}
