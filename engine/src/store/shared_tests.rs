//! The store's contract, checked on both backends: every test here runs once against a
//! SQLite file and once against a fresh database on a private PostgreSQL server
//! (`test_postgres.rs`). The run core first, then the records beside it: model calls and the
//! budget ledger, artifacts and caches, deployments, notifications, secrets, risk models, the
//! test agent's memory, API tokens and retention.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;

use super::*;

fn new_run(owner: &str, step_ids: &[&str]) -> NewRun {
    NewRun {
        workflow: "w".into(),
        source_path: None,
        definition: "name: w\n".into(),
        context: json!({ "repo_url": "https://example.invalid/r.git", "branch": "main" }),
        step_ids: step_ids.iter().map(|s| s.to_string()).collect(),
        owner: owner.into(),
        lease_ms: 60_000,
    }
}

/// A stdout line of step `s`'s first attempt.
fn log_line(run_id: i64, text: &str) -> LogLine {
    LogLine {
        run_id,
        step_id: "s".into(),
        attempt: 1,
        stream: "stdout",
        line: text.into(),
        at: now_ms(),
    }
}

/// Each named function, as one test per backend: `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = crate::store::Store::open(&dir.path().join("cairn.db"))
                    .expect("the SQLite store opens");
                super::$name(&store);
            }

            #[test]
            fn postgres() {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = crate::store::test_postgres::database();
                let store = crate::store::Store::open_postgres(&url, &dir.path().join("cairn.db"))
                    .expect("the PostgreSQL store opens");
                super::$name(&store);
            }
        }
    )*};
}

on_both_backends!(
    a_run_follows_the_transition_table,
    a_claim_fences_out_the_previous_holder,
    concurrent_claims_take_one_epoch_each,
    a_cursor_moves_once_from_what_was_read,
    the_event_log_is_append_only,
    filters_read_the_run_context,
    polls_count_failures_until_a_success,
    reopening_finds_the_schema_current,
    model_responses_are_cached_until_they_expire,
    a_replay_answers_only_the_same_question,
    the_budget_ledger_holds_a_hard_limit,
    concurrent_reservations_never_overspend,
    artifacts_replace_an_earlier_attempt_s,
    cache_keys_are_immutable_and_evicted_least_recently_used,
    deployments_and_service_locks,
    alerts_dedupe_and_messages_count,
    sealed_secrets_round_trip_as_bytes,
    risk_models_and_failed_outcomes,
    test_results_and_the_quarantine,
    a_commit_is_learned_once_and_links_accumulate,
    proposals_are_listed_and_forgotten_per_step,
    coverage_records_replace_a_test_file_s_previous_one,
    an_unreadable_coverage_record_is_left_out_whole,
    api_tokens_are_kept_by_hash_and_revoked,
    attempts_logs_and_metrics_are_read_back,
    pruning_takes_a_run_s_events_and_spares_a_live_run,
    a_task_goes_to_a_worker_with_its_labels,
    an_expired_task_lease_fences_out_the_stalled_worker,
    concurrent_workers_lease_each_task_once,
);

fn a_run_follows_the_transition_table(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["build", "test"])))
        .expect("run created");
    store
        .write(|txn| {
            let mut running = StepTransition::new(run_id, "build", StepState::Running);
            running.attempt = Some(1);
            running.lease = Some(("a".into(), now_ms() + 1_000));
            txn.transition_step(&running)?;
            txn.start_attempt(run_id, "build", 1, "a")
        })
        .expect("pending -> running");
    let refused = store.write(|txn| {
        txn.append_event(run_id, None, None, "marker", &json!({}))?;
        txn.transition_step(&StepTransition::new(run_id, "test", StepState::Succeeded))
    });
    assert!(
        matches!(refused, Err(Error::IllegalTransition { .. })),
        "{refused:?}"
    );
    store
        .write(|txn| {
            let mut done = StepTransition::new(run_id, "build", StepState::Succeeded);
            done.attempt = Some(1);
            done.outputs = Some(json!({ "risk": "low", "route": { "depth": 2 } }));
            txn.transition_step(&done)?;
            txn.finish_attempt(run_id, "build", 1, "succeeded", None, Some(0), None)
        })
        .expect("running -> succeeded");
    let steps = store.steps(run_id).expect("steps");
    assert_eq!(steps[0].state, StepState::Succeeded);
    assert_eq!(steps[0].attempts, 1);
    assert_eq!(
        steps[0].outputs,
        Some(json!({ "risk": "low", "route": { "depth": 2 } }))
    );
    assert!(steps[0].finished_at.is_some() && steps[0].started_at.is_some());
    assert_eq!(steps[1].state, StepState::Pending);
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // The refused transaction left nothing, its marker included.
    assert_eq!(kinds, ["run_created", "step_running", "step_succeeded"]);
    store
        .write(|txn| txn.finish_run(run_id, RunState::Succeeded, None))
        .expect("finished");
    let again = store.write(|txn| txn.finish_run(run_id, RunState::Failed, Some("late")));
    assert!(matches!(again, Err(Error::RunNotRunning(_))), "{again:?}");
    let run = store.run(run_id).expect("run");
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.lease_owner, None);
    assert!(matches!(
        store.run(run_id + 100),
        Err(Error::RunNotFound(_))
    ));
}

fn a_claim_fences_out_the_previous_holder(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run created");
    let first = store
        .write(|txn| txn.claim_run(run_id, "a", 60_000, &|_| true))
        .expect("the holder renews its own claim");
    let held = store.write(|txn| txn.claim_run(run_id, "b", 60_000, &|_| true));
    assert!(matches!(held, Err(Error::LeaseHeld { .. })), "{held:?}");
    let second = store
        .write(|txn| txn.claim_run(run_id, "b", 60_000, &|_| false))
        .expect("a gone holder's run is taken over");
    assert_eq!(second.previous.as_deref(), Some("a"));
    assert_eq!(second.fence.epoch, first.fence.epoch + 1);
    for (what, result) in [
        ("check", store.write(|txn| txn.check_fence(&first.fence))),
        (
            "renewal",
            store.write(|txn| txn.renew_lease(&first.fence, 60_000)),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::LeaseLost { run_id: r, .. }) if r == run_id),
            "{what}: {result:?}"
        );
    }
    let line = |text: &str| log_line(run_id, text);
    store
        .append_logs(
            &[line("from the stale holder")],
            Some(&LogFence::Run(first.fence.clone())),
        )
        .expect("dropped, not failed");
    store
        .append_logs(
            &[line("from the holder")],
            Some(&LogFence::Run(second.fence.clone())),
        )
        .expect("kept");
    let lines: Vec<String> = store
        .logs(run_id, Some("s"), 0)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["from the holder"]);
    store
        .write(|txn| txn.renew_lease(&second.fence, 60_000))
        .expect("the holder renews");
    let events = store.events(run_id).expect("events");
    let reclaimed = events
        .iter()
        .find(|e| e.kind == "run_reclaimed")
        .expect("the takeover is in the log");
    assert_eq!(reclaimed.data["previous_owner"], "a");
    store
        .write(|txn| txn.finish_run(run_id, RunState::Succeeded, None))
        .expect("finished");
    let late = store.write(|txn| txn.claim_run(run_id, "c", 1_000, &|_| false));
    assert!(matches!(late, Err(Error::RunNotRunning(_))), "{late:?}");
}

fn concurrent_claims_take_one_epoch_each(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("start", &["s"])))
        .expect("run created");
    const CLAIMERS: usize = 6;
    const ROUNDS: usize = 8;
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let handles: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..ROUNDS)
                    .map(|_| {
                        store
                            .write(|txn| {
                                txn.claim_run(run_id, &format!("e{i}"), 60_000, &|_| false)
                            })
                            .expect("a claim")
                            .fence
                            .epoch
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let epochs: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("claimer"))
        .collect();
    let distinct: HashSet<i64> = epochs.iter().copied().collect();
    // Serialized writes: no two claims read the same epoch and both raised it.
    assert_eq!(distinct.len(), CLAIMERS * ROUNDS, "{epochs:?}");
    assert_eq!(distinct.iter().max(), Some(&((CLAIMERS * ROUNDS) as i64)));
}

fn a_cursor_moves_once_from_what_was_read(store: &Store) {
    let (w, repo, branch) = ("w", "https://example.invalid/r.git", "main");
    assert_eq!(store.cursor(w, repo, branch).expect("cursor"), None);
    let barrier = Arc::new(Barrier::new(4));
    let moved: usize = (0..4)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .write(|txn| txn.advance_cursor(w, repo, branch, None, &format!("c{i}")))
                    .expect("compare and set")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().expect("poller")))
        .sum();
    assert_eq!(
        moved, 1,
        "exactly one poller moves a cursor from what it read"
    );
    let now = store.cursor(w, repo, branch).expect("cursor").expect("set");
    assert!(
        store
            .write(|txn| txn.advance_cursor(w, repo, branch, Some(&now), "next"))
            .expect("advance")
    );
    assert_eq!(store.cursor_branches(w, repo).expect("branches"), ["main"]);
    store
        .write(|txn| txn.delete_cursor(w, repo, branch))
        .expect("delete");
    assert_eq!(store.cursor(w, repo, branch).expect("cursor"), None);
}

fn the_event_log_is_append_only(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run created");
    let edit = store.write(|txn| {
        txn.conn.execute(
            "UPDATE events SET kind = 'forged' WHERE run_id = ?1",
            &[&run_id],
        )
    });
    assert!(edit.is_err(), "an event was rewritten: {edit:?}");
    let delete = store.write(|txn| {
        txn.conn
            .execute("DELETE FROM events WHERE run_id = ?1", &[&run_id])
    });
    assert!(
        delete.is_err(),
        "an event of a live run was deleted: {delete:?}"
    );
    assert_eq!(store.events(run_id).expect("events")[0].kind, "run_created");
}

fn filters_read_the_run_context(store: &Store) {
    let main = store
        .write(|txn| txn.create_run(&new_run("a", &["analyze"])))
        .expect("run");
    let mut other = new_run("a", &["analyze"]);
    other.context = json!({ "repo_url": "https://example.invalid/r.git", "branch": "dev" });
    let dev = store.write(|txn| txn.create_run(&other)).expect("run");
    store
        .write(|txn| {
            txn.transition_step(&StepTransition::new(main, "analyze", StepState::Running))?;
            let mut done = StepTransition::new(main, "analyze", StepState::Succeeded);
            done.outputs = Some(json!({ "risk": "high" }));
            txn.transition_step(&done)
        })
        .expect("analyzed");
    let on = |branch: Option<&str>, risk: Option<&str>| -> Vec<i64> {
        store
            .filtered_runs(&RunFilter {
                branch: branch.map(str::to_string),
                risk: risk.map(str::to_string),
                limit: 10,
                ..RunFilter::default()
            })
            .expect("filtered runs")
            .into_iter()
            .map(|summary| summary.run.id)
            .collect()
    };
    assert_eq!(on(None, None), [dev, main]);
    assert_eq!(on(Some("dev"), None), [dev]);
    assert_eq!(on(None, Some("high")), [main]);
    assert_eq!(store.unfinished_runs().expect("unfinished").len(), 2);
    assert_eq!(store.runs(1).expect("runs")[0].id, dev);
}

fn polls_count_failures_until_a_success(store: &Store) {
    let url = "https://example.invalid/r.git";
    for _ in 0..2 {
        store
            .write(|txn| txn.record_poll(url, Some("unreachable"), None, Some(now_ms() + 1_000)))
            .expect("failed poll");
    }
    let status = &store.repositories().expect("repositories")[0];
    assert_eq!((status.failures, status.last_ok_at), (2, None));
    store
        .write(|txn| txn.record_poll(url, None, Some("3 new commits"), None))
        .expect("poll");
    let status = &store.repositories().expect("repositories")[0];
    assert_eq!(status.failures, 0);
    assert_eq!(status.last_note.as_deref(), Some("3 new commits"));
    assert!(status.last_ok_at.is_some() && status.last_error.is_none());
}

fn reopening_finds_the_schema_current(store: &Store) {
    let reopened = match store.backend() {
        Backend::Sqlite => Store::open(store.path()),
        // The test server has no passwords: the shown address is the whole address.
        Backend::Postgres => Store::open_postgres(&store.location(), store.path()),
    }
    .expect("reopens");
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run");
    assert_eq!(
        reopened.run(run_id).expect("seen by another handle").id,
        run_id
    );
}

fn model_responses_are_cached_until_they_expire(store: &Store) {
    let response = CachedResponse {
        response: "summary".into(),
        prompt_tokens: 12,
        completion_tokens: 3,
        cost_micros: 40,
    };
    store
        .write(|txn| {
            txn.cache_put("k", "summarize_file", "local", "m", &response, 60_000)?;
            txn.cache_put("old", "summarize_file", "local", "m", &response, -1)
        })
        .expect("cached");
    assert_eq!(store.cache_get("k").expect("get"), Some(response.clone()));
    assert_eq!(store.cache_get("old").expect("get"), None, "expired");
    assert_eq!(store.cache_get("missing").expect("get"), None);
    let newer = CachedResponse {
        response: "better".into(),
        ..response
    };
    store
        .write(|txn| {
            txn.cache_hit("k")?;
            txn.cache_put("k", "summarize_file", "local", "m", &newer, 60_000)
        })
        .expect("replaced");
    assert_eq!(store.cache_get("k").expect("get"), Some(newer));
}

fn call(run_id: i64, index: u32, hash: &str, result: &str) -> CallRecord {
    CallRecord {
        run_id,
        step_id: "a".into(),
        call_index: index,
        task: "summarize_file".into(),
        tier: "local".into(),
        cache_hit: false,
        prompt_tokens: 10,
        completion_tokens: 5,
        cost_micros: 7,
        saved_micros: 0,
        latency_ms: 1,
        result: result.into(),
        fallbacks: Vec::new(),
        request_sha256: Some(hash.into()),
    }
}

fn a_replay_answers_only_the_same_question(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["a"])))
        .expect("run created");
    store
        .write(|txn| txn.record_call(&call(run_id, 0, "about-a", "answer a")))
        .expect("record");
    store
        .write(|txn| txn.record_call(&call(run_id, 1, "about-b", "answer b")))
        .expect("record");
    let lookup = |index, hash| {
        store
            .recorded_call(run_id, "a", index, "summarize_file", hash)
            .expect("lookup")
            .map(|c| c.result)
    };
    assert_eq!(lookup(0, "about-a").as_deref(), Some("answer a"));
    // The re-run asks in another order: each question still gets its own answer.
    assert_eq!(lookup(0, "about-b").as_deref(), Some("answer b"));
    assert_eq!(lookup(0, "about-c"), None, "a new question is a new call");
    assert_eq!(
        store
            .recorded_call(run_id, "a", 0, "assess_risk", "about-a")
            .expect("lookup"),
        None,
        "another task never answers"
    );
    // The new question asked at a taken index is recorded after the others.
    store
        .write(|txn| txn.record_call(&call(run_id, 0, "about-c", "answer c")))
        .expect("record");
    // A replay of a recorded call is not recorded twice.
    store
        .write(|txn| txn.record_call(&call(run_id, 0, "about-a", "answer a")))
        .expect("replayed");
    assert_eq!(lookup(0, "about-c").as_deref(), Some("answer c"));
    let calls = store.calls(run_id).expect("calls");
    assert_eq!(
        calls.iter().map(|c| c.call_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let costs = store.costs().expect("costs");
    assert_eq!(costs.len(), 1, "{costs:?}");
    assert_eq!(costs[0].day, day_and_month(now_ms()).0);
    assert_eq!(
        (costs[0].calls, costs[0].cache_hits, costs[0].tokens),
        (3, 0, 45)
    );
    assert_eq!(costs[0].cost_micros, 21);
}

fn the_budget_ledger_holds_a_hard_limit(store: &Store) {
    let limits = BudgetLimits {
        day_tokens: Some(100),
        run_tokens: Some(80),
        ..BudgetLimits::default()
    };
    let later = now_ms() + 600_000;
    let reserve = |run: Option<i64>, tokens: u64| {
        store
            .write(|txn| txn.reserve("remote", run, tokens, 0, &limits, later))
            .expect("ledger")
    };
    let first = reserve(Some(1), 60).expect("within the limits");
    let refused = reserve(Some(2), 50).expect_err("over the daily limit");
    assert!(refused.contains("daily tokens"), "{refused}");
    let run_refused = reserve(Some(1), 30).expect_err("over the run's limit");
    assert!(run_refused.contains("run tokens"), "{run_refused}");
    store
        .write(|txn| txn.settle(first, 30, 5))
        .expect("settled below the reservation");
    assert_eq!(store.spent_today("remote").expect("spent"), (30, 5));
    let second = reserve(Some(2), 50).expect("room after settling");
    let extended = store
        .write(|txn| txn.extend(second, "remote", Some(2), 40, 0, &limits))
        .expect("ledger");
    assert!(extended.is_err(), "an extension is held to the limits too");
    store.write(|txn| txn.release(second)).expect("released");
    assert_eq!(store.spent_today("remote").expect("spent"), (30, 5));
    assert_eq!(store.spent_today("local").expect("spent"), (0, 0));
    // A reservation whose call can no longer be running stops holding the budget.
    store
        .write(|txn| txn.reserve("remote", None, 70, 0, &limits, now_ms() - 1))
        .expect("ledger")
        .expect("within the limits");
    reserve(None, 70).expect("the expired reservation no longer counts");
}

fn concurrent_reservations_never_overspend(store: &Store) {
    const CALLERS: usize = 8;
    let limits = BudgetLimits {
        day_tokens: Some(100),
        ..BudgetLimits::default()
    };
    let barrier = Arc::new(Barrier::new(CALLERS));
    let granted: usize = (0..CALLERS)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .write(|txn| txn.reserve("remote", None, 20, 0, &limits, now_ms() + 60_000))
                    .expect("ledger")
                    .is_ok()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().expect("caller")))
        .sum();
    assert_eq!(granted, 5, "exactly the limit is reserved");
    assert_eq!(store.spent_today("remote").expect("spent").0, 100);
}

fn artifacts_replace_an_earlier_attempt_s(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["build", "test"])))
        .expect("run");
    let file = |path: &str, size: u64| ArtifactFile {
        path: path.into(),
        size,
        sha256: format!("sha-{path}"),
    };
    store
        .record_artifacts(run_id, "test", "archive-t", &[file("report.xml", 3)], 1)
        .expect("recorded");
    store
        .record_artifacts(run_id, "build", "archive-1", &[file("old.bin", 1)], 1)
        .expect("recorded");
    store
        .record_artifacts(
            run_id,
            "build",
            "archive-2",
            &[file("b.bin", 2), file("a.bin", 1 << 40)],
            2,
        )
        .expect("the re-run attempt replaces");
    let listed: Vec<(String, String, u64)> = store
        .artifacts(run_id)
        .expect("artifacts")
        .into_iter()
        .map(|a| (a.step_id, a.file.path, a.file.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("build".into(), "a.bin".into(), 1 << 40),
            ("build".into(), "b.bin".into(), 2),
            ("test".into(), "report.xml".into(), 3),
        ]
    );
    assert_eq!(
        store.artifact_archive(run_id, "build").expect("archive"),
        Some("archive-2".into())
    );
    assert_eq!(store.artifact_archive(run_id, "lint").expect("none"), None);
    assert!(store.blob_referenced("archive-2").expect("referenced"));
    assert!(!store.blob_referenced("archive-1").expect("replaced"));
}

fn cache_keys_are_immutable_and_evicted_least_recently_used(store: &Store) {
    let first = store
        .save_cache("repo", "deps-v1", "blob-1", 40, 1_000, 100)
        .expect("saved");
    assert_eq!(
        first,
        CacheSave {
            saved: true,
            evicted: vec![]
        }
    );
    let again = store
        .save_cache("repo", "deps-v1", "blob-other", 40, 1_001, 100)
        .expect("not saved");
    assert!(!again.saved, "a key is never overwritten");
    store
        .save_cache("repo", "deps-v2", "blob-2", 40, 2_000, 100)
        .expect("saved");
    store
        .save_cache("other", "deps-v1", "blob-3", 10, 2_500, 100)
        .expect("saved");
    assert_eq!(
        store
            .cache_entry("repo", "deps-v1")
            .expect("entry")
            .map(|e| e.blob),
        Some("blob-1".into())
    );
    assert_eq!(
        store
            .cache_entry_by_prefix("repo", "deps-")
            .expect("entry")
            .map(|e| e.key),
        Some("deps-v2".into()),
        "the newest entry of the prefix"
    );
    assert_eq!(
        store.cache_entry_by_prefix("repo", "dep%").expect("entry"),
        None
    );
    // Used after the newer one: deps-v2 is now the least recently used.
    store
        .touch_cache("repo", "deps-v1", 3_000)
        .expect("touched");
    store
        .touch_cache("repo", "deps-v1", 500)
        .expect("never moves back");
    assert_eq!(
        store
            .cache_entry("repo", "deps-v1")
            .expect("entry")
            .map(|e| e.last_used_at),
        Some(3_000)
    );
    let saved = store
        .save_cache("repo", "deps-v3", "blob-4", 30, 4_000, 100)
        .expect("saved");
    assert_eq!(
        saved.evicted,
        [("deps-v2".to_string(), "blob-2".to_string())]
    );
    assert_eq!(
        store.referenced_blobs().expect("blobs"),
        HashSet::from(["blob-1".into(), "blob-3".into(), "blob-4".into()])
    );
    let evicted = store.evict_caches(35).expect("evicted");
    assert_eq!(evicted.len(), 2, "{evicted:?}");
    store.forget_cache("repo", "deps-v3").expect("forgotten");
    assert_eq!(store.cache_entry("repo", "deps-v3").expect("entry"), None);
}

fn deployments_and_service_locks(store: &Store) {
    let state = json!({ "active": { "version": "v2" }, "history": [] });
    store
        .write(|txn| {
            assert_eq!(txn.deployment("api")?, None);
            txn.put_deployment("api", &state)?;
            assert_eq!(txn.deployment("api")?, Some(state.clone()));
            txn.put_deployment("web", &json!({}))
        })
        .expect("written");
    assert_eq!(store.deployment("api").expect("read"), Some(state.clone()));
    let names: Vec<String> = store
        .deployments()
        .expect("all")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(store.deployments_updated().expect("all")[0].1, state);

    let lock = |holder: &str, alive: bool| {
        store
            .write(|txn| txn.lock_service("api", holder, "deploy", &|_| alive))
            .expect("lock")
    };
    assert_eq!(lock("e1", true), None, "free: taken");
    assert_eq!(lock("e1", true), None, "its own lock: kept");
    let held = lock("e2", true).expect("held by a live engine");
    assert_eq!(
        (held.holder.as_str(), held.purpose.as_str()),
        ("e1", "deploy")
    );
    assert_eq!(
        lock("e2", false),
        None,
        "a gone holder's lock is taken over"
    );
    store
        .write(|txn| txn.unlock_service("api", "e1"))
        .expect("not e1's any more: no change");
    assert!(lock("e3", true).is_some());
    store
        .write(|txn| txn.unlock_service("api", "e2"))
        .expect("unlocked");
    assert_eq!(lock("e3", true), None);

    for (i, key) in ["1/build", "2/build", "3/build"].into_iter().enumerate() {
        store
            .write(|txn| txn.record_build(key, "img", i as i64, &json!({ "key": key }), 2))
            .expect("build");
    }
    assert_eq!(
        store.builds("img").expect("builds"),
        [json!({ "key": "2/build" }), json!({ "key": "3/build" })]
    );
}

fn alerts_dedupe_and_messages_count(store: &Store) {
    assert_eq!(store.last_alert("api", "error-rate").expect("none"), None);
    let before = now_ms();
    store
        .record_notification(1, "api", "alert", "error-rate")
        .expect("alert");
    store
        .record_notification(1, "api", "message", "error-rate")
        .expect("message");
    store
        .record_notification(2, "api", "message", "latency")
        .expect("message");
    let last = store
        .last_alert("api", "error-rate")
        .expect("seen")
        .expect("an alert");
    assert!(last >= before);
    assert_eq!(store.last_alert("web", "error-rate").expect("none"), None);
    assert_eq!(store.messages_sent(1).expect("count"), 1);
    assert_eq!(store.messages_since("api", before).expect("count"), 2);
    assert_eq!(
        store
            .messages_since("api", now_ms() + 1_000)
            .expect("count"),
        0
    );
}

fn sealed_secrets_round_trip_as_bytes(store: &Store) {
    let nonce: Vec<u8> = (0..24).collect();
    let ciphertext = vec![0x00, 0xff, 0x27, 0x5c, 0x00, 0x80];
    store
        .put_secret("DEPLOY_TOKEN", &nonce, &ciphertext)
        .expect("stored");
    store.put_secret("A", &[1], &[2]).expect("stored");
    let found = store
        .secret("DEPLOY_TOKEN")
        .expect("read")
        .expect("present");
    assert_eq!((found.nonce, found.ciphertext), (nonce, ciphertext.clone()));
    store
        .put_secret("DEPLOY_TOKEN", &[9; 24], &[7])
        .expect("replaced");
    assert_eq!(
        store
            .secret("DEPLOY_TOKEN")
            .expect("read")
            .map(|s| s.ciphertext),
        Some(vec![7])
    );
    let names: Vec<String> = store
        .secrets()
        .expect("all")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["A", "DEPLOY_TOKEN"]);
    assert!(store.delete_secret("A").expect("deleted"));
    assert!(!store.delete_secret("A").expect("already gone"));
    assert!(store.secret("A").expect("read").is_none());
}

fn risk_models_and_failed_outcomes(store: &Store) {
    let model = json!({ "features": ["lines"], "coefficients": [0.5] });
    let evaluation = json!({ "auc": 0.7 });
    store
        .write(|txn| txn.put_risk_model("/src/r", "root", "head1", &model, &evaluation))
        .expect("stored");
    let by_path = store
        .risk_model("/src/r", "elsewhere")
        .expect("read")
        .expect("by path");
    assert_eq!((by_path.head.as_str(), &by_path.model), ("head1", &model));
    let by_root = store
        .risk_model("/tmp/clone", "root")
        .expect("read")
        .expect("a clone finds it by root commit");
    assert_eq!(by_root.repo, "/src/r");
    assert!(store.risk_model("/x", "other").expect("read").is_none());
    assert_eq!(store.risk_models().expect("all").len(), 1);

    let mut run = new_run("a", &["deploy"]);
    run.context = json!({ "commit": "c-rolled-back" });
    let run_id = store.write(|txn| txn.create_run(&run)).expect("run");
    store
        .write(|txn| {
            txn.record_test_result(run_id, "test", "r", "c-failed", "t1", "failed", Some(5))?;
            txn.record_test_result(run_id, "test", "r", "c-passed", "t1", "passed", None)?;
            txn.put_deployment(
                "api",
                &json!({ "history": [
                    { "key": format!("{run_id}/deploy"), "outcome": "rolled_back" },
                    { "key": "999/deploy", "outcome": "succeeded" },
                ] }),
            )
        })
        .expect("outcomes");
    let failed: Vec<String> = store
        .failed_outcome_commits()
        .expect("outcomes")
        .into_iter()
        .collect();
    assert_eq!(failed, ["c-failed", "c-rolled-back"]);
}

fn test_results_and_the_quarantine(store: &Store) {
    store
        .write(|txn| {
            for (i, outcome) in ["passed", "failed", "ignored", "flaky", "passed"]
                .into_iter()
                .enumerate()
            {
                txn.record_test_result(1, "test", "r", &format!("c{i}"), "t1", outcome, Some(3))?;
            }
            txn.record_test_result(1, "test", "r", "c0", "t2", "passed", None)?;
            txn.record_test_result(1, "test", "other", "c0", "t3", "failed", None)
        })
        .expect("results");
    assert_eq!(
        store.test_history("r", "t1", 3).expect("history"),
        ["failed", "flaky", "passed"]
    );
    assert_eq!(
        store.unsteady_tests(Some("r")).expect("unsteady"),
        [("r".to_string(), "t1".to_string())]
    );
    assert_eq!(store.unsteady_tests(None).expect("unsteady").len(), 2);
    store
        .write(|txn| {
            txn.quarantine("r", "t1", "flaky twice")?;
            txn.quarantine("r", "t2", "slow")?;
            txn.set_quarantine_passes("r", "t1", 3)
        })
        .expect("quarantined");
    let quarantined = store.quarantined("r").expect("quarantine");
    assert_eq!(quarantined["t1"].passes_in_row, 3);
    assert_eq!(quarantined["t2"].reason, "slow");
    let flaky: Vec<(String, String, u64, u64, u64, bool)> = store
        .flaky_tests()
        .expect("flaky")
        .into_iter()
        .map(|f| {
            let quarantined = f.quarantined_since.is_some();
            (f.repo, f.test_id, f.runs, f.failed, f.flaky, quarantined)
        })
        .collect();
    assert_eq!(
        flaky,
        [
            ("other".into(), "t3".into(), 1, 1, 0, false),
            ("r".into(), "t1".into(), 4, 1, 1, true),
            ("r".into(), "t2".into(), 1, 0, 0, true),
        ]
    );
    store
        .write(|txn| {
            txn.quarantine("r", "t1", "again")?;
            txn.release_quarantine("r", "t2")
        })
        .expect("changed");
    let quarantined = store.quarantined("r").expect("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        (
            quarantined["t1"].reason.as_str(),
            quarantined["t1"].passes_in_row
        ),
        ("again", 0),
        "quarantined again: its passes start over"
    );
}

fn a_commit_is_learned_once_and_links_accumulate(store: &Store) {
    let pairs = vec![("src/pay.py".to_string(), "tests/test_pay.py".to_string())];
    assert!(
        store
            .write(|t| t.learn_commit("r", "c1", &pairs))
            .expect("learn")
    );
    assert!(
        !store
            .write(|t| t.learn_commit("r", "c1", &pairs))
            .expect("learn again"),
        "counted once"
    );
    store
        .write(|t| t.learn_commit("r", "c2", &pairs))
        .expect("learn");
    store
        .write(|t| t.link_failure("r", "src/pay.py", "tests/test_other.py", "c3"))
        .expect("failure");
    let links = store
        .test_links("r", &["src/pay.py".into()])
        .expect("links");
    assert_eq!(links.len(), 2);
    assert_eq!(
        (
            links[0].test_file.as_str(),
            links[0].kind.as_str(),
            links[0].count
        ),
        ("tests/test_pay.py", "co_change", 2)
    );
    assert_eq!(
        (links[1].test_file.as_str(), links[1].kind.as_str()),
        ("tests/test_other.py", "failure")
    );
    assert_eq!(store.learned_commits("r").expect("commits").len(), 2);
    assert!(
        store
            .test_links("other", &["src/pay.py".into()])
            .expect("links")
            .is_empty()
    );
}

fn proposals_are_listed_and_forgotten_per_step(store: &Store) {
    let proposal = |repo: &str, kind: &str, function: &str| ProposalRecord {
        kind: kind.into(),
        run_id: 1,
        step_id: "test".into(),
        repo: repo.into(),
        commit_id: "c".into(),
        source_path: "src/a.py".into(),
        function: function.into(),
        test_path: "tests/test_a.py".into(),
        status: "accepted".into(),
        reason: "accepted".into(),
        detail: String::new(),
        code: "def test(): pass".into(),
        tier: "local".into(),
        at: 1,
    };
    store
        .write(|txn| {
            txn.record_proposal(&proposal("r", "test", "f"))?;
            txn.record_proposal(&proposal("r", "fix", "t"))?;
            txn.record_proposal(&proposal("s", "test", "g"))
        })
        .expect("recorded");
    let functions = |repo: Option<&str>| -> Vec<String> {
        store
            .test_proposals(repo, 10)
            .expect("proposals")
            .into_iter()
            .map(|p| p.function)
            .collect()
    };
    assert_eq!(functions(None), ["g", "t", "f"]);
    assert_eq!(functions(Some("r")), ["t", "f"]);
    assert_eq!(store.proposal_count(1, "test", "test").expect("count"), 2);
    store
        .write(|txn| txn.forget_proposals(1, "test", "test"))
        .expect("forgotten");
    assert_eq!(functions(None), ["t"]);
}

fn coverage(commit: &str, lines: Vec<u32>) -> TestCoverage {
    TestCoverage {
        test_file: "tests/test_a.py".into(),
        commit_id: commit.into(),
        lines: BTreeMap::from([
            ("src/a.py".to_string(), lines),
            ("tests/test_a.py".to_string(), vec![1, 2]),
        ]),
    }
}

fn coverage_records_replace_a_test_file_s_previous_one(store: &Store) {
    store
        .write(|txn| txn.record_test_coverage("r", &[coverage("c1", vec![1, 2, 3, 9])]))
        .expect("write");
    store
        .write(|txn| txn.record_test_coverage("r", &[coverage("c2", vec![4, 5, 7])]))
        .expect("write");
    assert_eq!(
        store.test_coverage("r").expect("read"),
        [coverage("c2", vec![4, 5, 7])]
    );
    assert!(store.test_coverage("other").expect("read").is_empty());
}

fn an_unreadable_coverage_record_is_left_out_whole(store: &Store) {
    store
        .write(|txn| {
            txn.conn.execute(
                "INSERT INTO test_coverage VALUES ('r', 't.py', 'c', 'a.py', 'garbage', 0)",
                &[],
            )
        })
        .expect("write");
    assert!(store.test_coverage("r").expect("read").is_empty());
}

fn api_tokens_are_kept_by_hash_and_revoked(store: &Store) {
    let read = store
        .write(|txn| txn.create_token("dashboard", "read", "sha-read"))
        .expect("created");
    let write = store
        .write(|txn| txn.create_token("ci", "write", "sha-write"))
        .expect("created");
    assert!(write > read);
    let duplicate = store.write(|txn| txn.create_token("again", "read", "sha-read"));
    assert!(duplicate.is_err(), "a hash names one token");
    assert_eq!(
        store.token_scope("sha-write").expect("scope").as_deref(),
        Some("write")
    );
    assert_eq!(store.token_scope("sha-unknown").expect("scope"), None);
    let tokens = store.tokens().expect("tokens");
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens[1].last_used_at.is_some(),
        "its use was noted: {tokens:?}"
    );
    assert!(store.write(|txn| txn.revoke_token(write)).expect("revoked"));
    assert!(!store.write(|txn| txn.revoke_token(write)).expect("once"));
    assert_eq!(store.token_scope("sha-write").expect("scope"), None);
    assert_eq!(store.tokens().expect("tokens").len(), 1);
}

fn attempts_logs_and_metrics_are_read_back(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("a", &["build", "test"])))
        .expect("run");
    store
        .write(|txn| {
            let mut running = StepTransition::new(run_id, "build", StepState::Running);
            running.attempt = Some(1);
            txn.transition_step(&running)?;
            txn.start_attempt(run_id, "build", 1, "a")?;
            txn.finish_attempt(run_id, "build", 1, "failed", Some("exit"), Some(2), None)
        })
        .expect("attempted");
    let attempts = store.attempts(run_id).expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].exit_code),
        ("failed", Some(2))
    );
    let lines: Vec<LogLine> = (0..5)
        .map(|i| LogLine {
            run_id,
            step_id: "build".into(),
            attempt: 1,
            stream: "stdout",
            line: format!("line {i}"),
            at: now_ms(),
        })
        .collect();
    store.append_logs(&lines, None).expect("logs");
    let page = store.logs_page(run_id, Some("build"), 0, 2).expect("page");
    assert_eq!(page.len(), 2);
    let next = store
        .logs_page(run_id, None, page[1].seq, 10)
        .expect("page");
    assert_eq!(next.len(), 3);
    assert_eq!(next[0].line, "line 2");

    let mut refused = call(run_id, 0, "h", "rules");
    refused.fallbacks = vec!["remote: Daily tokens Budget exhausted".into()];
    refused.cache_hit = true;
    store
        .write(|txn| {
            txn.record_call(&refused)?;
            txn.record_call(&call(run_id, 1, "i", "answer"))
        })
        .expect("calls");
    let counts = store.metric_counts().expect("metrics");
    assert_eq!(counts.runs_by_state, [("running".to_string(), 1)]);
    assert_eq!(counts.queue_depth, 1, "the test step waits");
    assert_eq!(counts.attempt_durations_ms.len(), 1);
    assert_eq!(counts.model_calls, [("local".to_string(), 2, 20, 10, 1)]);
    assert_eq!(counts.budget_refusals, 1, "matched whatever its case");
    assert_eq!(counts.lease_reclaims, 0);
}

fn pruning_takes_a_run_s_events_and_spares_a_live_run(store: &Store) {
    let old = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run");
    let live = store
        .write(|txn| txn.create_run(&new_run("a", &["s"])))
        .expect("run");
    let line = |run_id| LogLine {
        run_id,
        step_id: "s".into(),
        attempt: 1,
        stream: "stdout",
        line: "output".into(),
        at: now_ms(),
    };
    store
        .append_logs(&[line(old), line(live)], None)
        .expect("logs");
    store
        .write(|txn| {
            txn.record_test_result(old, "s", "r", "c", "t", "passed", None)?;
            txn.record_call(&call(old, 0, "h", "answer"))?;
            txn.cache_put(
                "expired",
                "t",
                "local",
                "m",
                &CachedResponse {
                    response: String::new(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    cost_micros: 0,
                },
                -1,
            )?;
            txn.finish_run(old, RunState::Succeeded, None)
        })
        .expect("finished");
    store
        .record_artifacts(old, "s", "archive", &[], now_ms())
        .expect("no files");
    let policy = RetentionPolicy {
        runs: Duration::ZERO,
        logs: Duration::ZERO,
        keep_runs: 0,
    };
    let pruned = store.prune(&policy, now_ms() + 1_000).expect("pruned");
    assert_eq!(pruned.runs, [old]);
    assert_eq!(pruned.log_lines, 1);
    assert_eq!(pruned.cache_entries, 1);
    assert!(pruned.other_rows >= 4, "{pruned:?}");
    assert!(matches!(store.run(old), Err(Error::RunNotFound(_))));
    assert!(
        store.events(old).expect("events").is_empty(),
        "its events went with it"
    );
    assert!(store.calls(old).expect("calls").is_empty());
    assert!(
        !store.events(live).expect("events").is_empty(),
        "a live run's events stay"
    );
    assert_eq!(store.logs(live, None, 0).expect("logs").len(), 1);
    assert_eq!(
        store
            .run_ids()
            .expect("ids")
            .into_iter()
            .collect::<Vec<_>>(),
        [live]
    );
    let again = store.prune(&policy, now_ms() + 1_000).expect("pruned");
    assert_eq!(again, Pruned::default(), "nothing left to prune");
    let delete = store.write(|txn| {
        txn.conn
            .execute("DELETE FROM events WHERE run_id = ?1", &[&live])
    });
    assert!(delete.is_err(), "a live run's events stay append-only");
}

fn task(run_id: i64, step_id: &str, labels: &[&str]) -> NewTask {
    NewTask {
        run_id,
        step_id: step_id.into(),
        attempt: 1,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        spec: TaskSpec {
            command: format!("echo {step_id}"),
            env: vec![("A".into(), "1".into())],
            timeout_ms: Some(5_000),
            secrets: Vec::new(),
        },
    }
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|l| l.to_string()).collect()
}

fn a_task_goes_to_a_worker_with_its_labels(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["build", "lint"])))
        .expect("run");
    let build = store
        .write(|txn| txn.enqueue_task(&task(run_id, "build", &["docker", "linux"])))
        .expect("queued");
    let lint = store
        .write(|txn| txn.enqueue_task(&task(run_id, "lint", &["linux"])))
        .expect("queued");
    let lease = |worker: &str, have: &[&str]| {
        store
            .task_write(|txn| txn.lease_task(worker, &labels(have), 60_000))
            .expect("lease")
    };
    // A worker without `docker` skips the older task it cannot run.
    let first = lease("w1", &["linux"]).expect("the lint task");
    assert_eq!(first.task.id, lint);
    assert!(lease("w1", &["linux"]).is_none(), "nothing else it can run");
    let second = lease("w2", &["docker", "linux", "x86_64"]).expect("the build task");
    assert_eq!(second.task.id, build);
    assert_eq!(
        second.task.spec.env,
        vec![("A".to_string(), "1".to_string())]
    );
    assert_eq!(
        store
            .unread_task(run_id, "build")
            .expect("unread")
            .map(|t| t.id),
        Some(build)
    );
    let result = TaskResult::Succeeded {
        outputs: json!({ "image": "sha256:1" }),
    };
    store
        .task_write(|txn| txn.finish_task(&second.fence, &result))
        .expect("finished");
    let done = store.task(build).expect("task");
    assert_eq!(
        (done.state.as_str(), done.result),
        ("succeeded", Some(result))
    );
    // An attempt cut off before it recorded the result leaves the task to adopt; the attempt
    // that records it marks the task read in the same transaction.
    let finish = |state: &str| {
        store
            .write(|txn| txn.finish_attempt(run_id, "build", 1, state, None, None, None))
            .expect("attempt closed")
    };
    finish("interrupted");
    assert_eq!(
        store
            .unread_task(run_id, "build")
            .expect("unread")
            .map(|t| t.id),
        Some(build),
        "a cut-off attempt did not read the result"
    );
    finish("succeeded");
    assert!(
        store
            .unread_task(run_id, "build")
            .expect("unread")
            .is_none()
    );
    // Cancelling: the holder learns it at its next renewal.
    store.write(|txn| txn.cancel_task(lint)).expect("cancel");
    assert!(
        store
            .task_write(|txn| txn.renew_task(&first.fence, 60_000))
            .expect("renewal")
    );
    let queued = store
        .write(|txn| txn.enqueue_task(&task(run_id, "build", &[])))
        .expect("queued");
    store.write(|txn| txn.cancel_task(queued)).expect("cancel");
    assert_eq!(store.task(queued).expect("task").state, "cancelled");
    let kinds: Vec<String> = store
        .events(run_id)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("task_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "task_queued",
            "task_queued",
            "task_leased",
            "task_leased",
            "task_succeeded",
            "task_queued"
        ]
    );
}

fn an_expired_task_lease_fences_out_the_stalled_worker(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["s"])))
        .expect("run");
    let id = store
        .write(|txn| txn.enqueue_task(&task(run_id, "s", &[])))
        .expect("queued");
    let stalled = store
        .task_write(|txn| txn.lease_task("w1", &[], 1))
        .expect("lease")
        .expect("a task");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let taken = store
        .task_write(|txn| txn.lease_task("w2", &[], 60_000))
        .expect("lease")
        .expect("the expired task");
    assert_eq!(taken.task.id, id);
    assert_eq!(taken.previous.as_deref(), Some("w1"));
    assert_eq!(taken.fence.epoch, stalled.fence.epoch + 1);
    let line = |text: &str| log_line(run_id, text);
    store
        .append_logs(
            &[line("stale")],
            Some(&LogFence::Task(stalled.fence.clone())),
        )
        .expect("dropped, not failed");
    store
        .append_logs(
            &[line("current")],
            Some(&LogFence::Task(taken.fence.clone())),
        )
        .expect("kept");
    for (what, result) in [
        (
            "renewal",
            store
                .task_write(|txn| txn.renew_task(&stalled.fence, 60_000))
                .map(|_| ()),
        ),
        (
            "result",
            store.task_write(|txn| txn.finish_task(&stalled.fence, &TaskResult::Cancelled)),
        ),
    ] {
        assert!(
            matches!(result, Err(Error::TaskLost { task_id, .. }) if task_id == id),
            "{what}: {result:?}"
        );
    }
    let lines: Vec<String> = store
        .logs(run_id, None, 0)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(lines, ["current"]);
    store
        .task_write(|txn| {
            txn.finish_task(
                &taken.fence,
                &TaskResult::Failed {
                    class: "exit_code".into(),
                    exit_code: Some(2),
                    message: "exit 2".into(),
                },
            )
        })
        .expect("the holder finishes");
    assert_eq!(store.task(id).expect("task").state, "failed");
    assert!(
        store
            .events(run_id)
            .expect("events")
            .iter()
            .any(|e| e.kind == "task_reclaimed")
    );
}

fn concurrent_workers_lease_each_task_once(store: &Store) {
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["s"])))
        .expect("run");
    const TASKS: usize = 30;
    for i in 0..TASKS {
        store
            .write(|txn| txn.enqueue_task(&task(run_id, &format!("s{i}"), &["linux"])))
            .expect("queued");
    }
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                while let Some(lease) = store
                    .task_write(|txn| txn.lease_task(&format!("w{w}"), &labels(&["linux"]), 60_000))
                    .expect("lease")
                {
                    store
                        .task_write(|txn| {
                            txn.finish_task(
                                &lease.fence,
                                &TaskResult::Succeeded { outputs: json!({}) },
                            )
                        })
                        .expect("finish");
                    mine.push(lease.task.id);
                }
                mine
            })
        })
        .collect();
    let leased: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    let distinct: HashSet<i64> = leased.iter().copied().collect();
    assert_eq!((leased.len(), distinct.len()), (TASKS, TASKS), "{leased:?}");
    assert!(
        store
            .tasks(run_id)
            .expect("tasks")
            .iter()
            .all(|t| t.state == "succeeded")
    );
}

/// PostgreSQL only: a worker's lease neither waits for a task whose row another transaction
/// holds (it takes the next one: `SKIP LOCKED`) nor for the store's write lock, which an
/// engine's transaction holds meanwhile.
#[test]
fn a_postgres_lease_passes_over_locked_rows_and_the_engines_write_lock() {
    use std::sync::mpsc;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = test_postgres::database();
    let store = Store::open_postgres(&url, &dir.path().join("a.db")).expect("the store");
    let run_id = store
        .write(|txn| txn.create_run(&new_run("engine", &["a", "b"])))
        .expect("run");
    let first = store
        .write(|txn| txn.enqueue_task(&task(run_id, "a", &[])))
        .expect("queued");
    let second = store
        .write(|txn| txn.enqueue_task(&task(run_id, "b", &[])))
        .expect("queued");
    let mut other = ::postgres::Client::connect(&url, ::postgres::NoTls).expect("a connection");
    let mut holding = other.transaction().expect("a transaction");
    holding
        .query("SELECT id FROM tasks WHERE id = $1 FOR UPDATE", &[&first])
        .expect("the first task's row locked");
    // An engine (its own store, its own connection) in a write transaction until released.
    let engine = Store::open_postgres(&url, &dir.path().join("b.db")).expect("the store");
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        engine.write(move |_| {
            let _ = entered_tx.send(());
            Ok(released.recv_timeout(Duration::from_secs(30)).is_ok())
        })
    });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the engine holds the write lock");
    let (leased_tx, leased) = mpsc::channel();
    let worker = store.clone();
    std::thread::spawn(move || {
        let _ = leased_tx.send(worker.task_write(|txn| txn.lease_task("w1", &[], 60_000)));
    });
    let lease = leased
        .recv_timeout(Duration::from_secs(20))
        .expect("the lease waited for a lock")
        .expect("lease")
        .expect("a task");
    assert_eq!(lease.task.id, second, "the locked task is passed over");
    release.send(()).expect("the engine waits");
    assert!(
        writer.join().expect("engine").expect("the engine's write"),
        "the engine held its write lock throughout the lease"
    );
    holding.rollback().expect("rollback");
    let lease = store
        .task_write(|txn| txn.lease_task("w2", &[], 60_000))
        .expect("lease")
        .expect("the released task");
    assert_eq!(lease.task.id, first);
}
