//! Limits that hold against a hostile remote, over a real HTTP server on 127.0.0.1 speaking
//! the OpenAI wire format (`support/openai_server.rs`):
//! - budgets: a provider reporting more than the upper bound reserved is recorded and closes
//!   the window; a dead process's reservation expires; retries after an attempt the provider
//!   may have billed are covered by the call's reservation (or not made);
//! - time: a call gives up before the step's deadline, leaving the local fallback its time; a
//!   `Retry-After` beyond the cap says so; a refused and a reset connection read differently.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

mod support;

use std::time::{Duration, Instant};

use cairn_engine::llm::{CallScope, Request, Task, Tier};
use cairn_engine::store::{BudgetLimits, now_ms};
use serde_json::json;
use support::openai_server::{FakeOpenAi, Reply};
use support::router_harness::*;

/// A small request without a schema: its upper bound is a few hundred tokens.
fn summary(input: &str) -> Request {
    Request {
        task: Task::SummarizeDiff,
        instruction: "Summarize the change in one sentence.".into(),
        input: input.into(),
        diff: None,
    }
}

fn budget_yaml(day_tokens: u64, extra: &str) -> String {
    format!(
        "llm:
  remote:
    base_url: BASE_URL
    model: fake-gpt
    retries: 0
{extra}  tasks:
    summarize_diff: remote
  budgets:
    remote: {{ day_tokens: {day_tokens} }}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reporting_more_than_reserved_is_recorded_and_closes_the_day() {
    let server = FakeOpenAi::start().await;
    server.script([Reply::ReportsUsage(5_000, 10)]);
    let h = harness(&server, &budget_yaml(1_000, ""), None);
    let first = h
        .router
        .ask(None, summary("File: src/a.rs"), || json!("rules"))
        .await;
    assert_eq!(first.tier, Tier::Remote, "{first:?}");
    assert_eq!(first.prompt_tokens + first.completion_tokens, 5_010);
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    assert_eq!(
        ledger, 5_010,
        "the ledger records what the provider reported"
    );
    let second = h
        .router
        .ask(None, summary("File: src/b.rs"), || json!("rules"))
        .await;
    println!(
        "over-reporting provider: day_tokens 1000, one call reported 5010; ledger {ledger}; next call: {:?}",
        second.fallbacks
    );
    assert_eq!(second.tier, Tier::Rules, "{second:?}");
    assert!(
        second.fallbacks[0].contains("daily tokens budget exhausted: 5010 used"),
        "{:?}",
        second.fallbacks
    );
    assert_eq!(server.request_count(), 1, "the refused call was not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_processes_reservation_expires() {
    let server = FakeOpenAi::start().await;
    let h = harness(&server, &budget_yaml(1_000, ""), None);
    // What a process killed mid-call leaves: a reservation of most of the day, never settled,
    // expiring when its call could no longer be running.
    let limits = BudgetLimits {
        day_tokens: Some(1_000),
        ..BudgetLimits::default()
    };
    h.store
        .write(|txn| txn.reserve("remote", None, 900, 0, &limits, now_ms() + 300))
        .unwrap()
        .unwrap();
    let blocked = h
        .router
        .ask(None, summary("File: src/a.rs"), || json!("rules"))
        .await;
    assert_eq!(blocked.tier, Tier::Rules, "{blocked:?}");
    assert!(
        blocked.fallbacks[0].contains("budget exhausted"),
        "{:?}",
        blocked.fallbacks
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answered = h
        .router
        .ask(None, summary("File: src/a.rs"), || json!("rules"))
        .await;
    assert_eq!(answered.tier, Tier::Remote, "{answered:?}");
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    assert_eq!(
        ledger,
        server.usage_total(),
        "the expired reservation no longer counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timed_out_attempt_is_covered_by_the_reservation() {
    // The first attempt times out after the provider started (and will bill) the work.
    let server = FakeOpenAi::start().await;
    server.script([Reply::Slow(Duration::from_millis(800))]);
    let yaml = budget_yaml(2_000, "    timeout: 300ms\n").replace("retries: 0", "retries: 1");
    let h = harness(&server, &yaml, None);
    let answer = h
        .router
        .ask(None, summary("File: src/a.rs"), || json!("rules"))
        .await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    // Let the slow attempt finish on the server, so it has billed both.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    println!(
        "retry after a timeout: provider billed {} for 2 attempts; ledger {ledger}",
        server.usage_total()
    );
    assert_eq!(server.request_count(), 2);
    assert!(
        ledger >= server.usage_total(),
        "the timed-out attempt was not charged: ledger {ledger} < billed {}",
        server.usage_total()
    );

    // A budget with room for one try only: the retry is not made.
    let server = FakeOpenAi::start().await;
    server.set_mode(Reply::Slow(Duration::from_millis(800)));
    let h = harness(
        &server,
        &budget_yaml(300, "    timeout: 300ms\n").replace("retries: 0", "retries: 2"),
        None,
    );
    let answer = h
        .router
        .ask(None, summary("File: src/a.rs"), || json!("rules"))
        .await;
    assert_eq!(answer.tier, Tier::Rules, "{answer:?}");
    assert!(
        answer.fallbacks[0].contains("not retried")
            && answer.fallbacks[0].contains("budget exhausted"),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(server.request_count(), 1);
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    assert!(
        ledger > 0 && ledger <= 300,
        "the timed-out try is held at its bound: {ledger}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_gives_up_before_the_steps_deadline() {
    let server = FakeOpenAi::start().await;
    server.set_mode(Reply::Slow(Duration::from_secs(60)));
    // Settings that alone would wait minutes: 30 s per attempt, 3 retries.
    let yaml = FAILOVER
        .replace("timeout: 400ms", "timeout: 30s")
        .replace("retries: 1", "retries: 3");
    let local = StandInModel::new(false);
    let h = harness(&server, &yaml, Some(local));
    let started = Instant::now();
    let scope =
        CallScope::new(h.run_id, "analyze").with_deadline(Some(started + Duration::from_secs(3)));
    let answer = h
        .router
        .ask(Some(&scope), risk("Commit subject: deadline"), rules_answer)
        .await;
    let elapsed = started.elapsed();
    println!(
        "deadline: step deadline in 3 s; answered by {} after {elapsed:?}: {:?}",
        answer.tier.as_str(),
        answer.fallbacks
    );
    assert_fell_back_to_local(&answer, "remote");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // No time at all: the remote is not even tried.
    let scope = CallScope::new(h.run_id, "late")
        .with_deadline(Some(Instant::now() + Duration::from_millis(300)));
    let requests = server.request_count();
    let answer = h
        .router
        .ask(Some(&scope), risk("Commit subject: late"), rules_answer)
        .await;
    assert!(
        answer.fallbacks[0].contains("no time left before the step's deadline"),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(server.request_count(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_cap_says_so() {
    let (answer, server, _h, elapsed) = failing_call(
        vec![Reply::RetryAfter(120)],
        Reply::Normal,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "HTTP 429");
    assert!(
        answer.fallbacks[0].contains("asked to retry after 120s, beyond the 30s cap"),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(server.request_count(), 1);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_and_a_reset_connection_read_differently() {
    // Refused: a port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused_port = closed.local_addr().unwrap().port();
    drop(closed);
    // Reset: a listener that reads the request and aborts the connection (RST).
    let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_port = resetting.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = resetting.accept().await {
            // Wait for the request's first bytes: a reset before the client has written
            // anything reads as a connection that was never ready, not as a reset.
            let mut buffer = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await;
            // Closing with `SO_LINGER` 0 sends RST instead of FIN.
            #[allow(deprecated)] // `set_zero_linger` is newer than some tokio versions.
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    let server = FakeOpenAi::start().await;
    let mut reasons = Vec::new();
    for port in [refused_port, reset_port] {
        let yaml = FAILOVER
            .replace("BASE_URL", &format!("http://127.0.0.1:{port}/v1"))
            .replace("retries: 1", "retries: 0");
        let h = harness(&server, &yaml, Some(StandInModel::new(false)));
        let answer = h
            .router
            .ask(None, risk("Commit subject: sockets"), rules_answer)
            .await;
        assert_eq!(answer.tier, Tier::Local, "{answer:?}");
        reasons.push(answer.fallbacks[0].clone());
    }
    println!("refused: {}\nreset: {}", reasons[0], reasons[1]);
    assert!(reasons[0].contains("connection refused"), "{}", reasons[0]);
    assert!(reasons[1].contains("connection reset"), "{}", reasons[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_for_a_one_byte_per_token_provider_under_concurrency() {
    // The densest a byte-level BPE tokenizer can be: every byte a token. Twenty callers race
    // for a budget that fits a few of them; the provider must never bill more than the limit.
    const LIMIT: u64 = 3_000;
    const CALLERS: usize = 20;
    let server = FakeOpenAi::start().await;
    server.set_bytes_per_token(1);
    server.set_latency(Duration::from_millis(50));
    let h = harness(&server, &budget_yaml(LIMIT, ""), None);
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let router = std::sync::Arc::clone(&h.router);
            // Distinct (no cache hits), and long enough that the prompt dominates the bound.
            let input = format!(
                "File: src/module_{n}.rs\n{}",
                "fn handler() {}\n".repeat(40)
            );
            tokio::spawn(async move { router.ask(None, summary(&input), || json!("rules")).await })
        })
        .collect();
    let (mut answered, mut refused) = (0u64, 0u64);
    for caller in callers {
        let answer = caller.await.unwrap();
        match answer.tier {
            Tier::Remote => answered += 1,
            _ => {
                assert!(
                    answer.fallbacks[0].contains("daily tokens budget exhausted"),
                    "{:?}",
                    answer.fallbacks
                );
                refused += 1;
            }
        }
    }
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    println!(
        "one byte per token: day_tokens {LIMIT}, {CALLERS} concurrent callers: {answered} answered, {refused} refused; provider billed {}, ledger {ledger}",
        server.usage_total()
    );
    assert!(answered > 0 && refused > 0, "the limit was meant to bind");
    assert!(
        server.usage_total() <= LIMIT,
        "billed {} > {LIMIT}",
        server.usage_total()
    );
    assert_eq!(ledger, server.usage_total(), "settled on what was reported");
    assert_eq!(server.request_count() as u64, answered);
}
