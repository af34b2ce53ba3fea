//! The language-model router against a real HTTP server speaking the OpenAI wire format
//! (`support/openai_server.rs`): fallback on every kind of remote failure, hard token budgets
//! under concurrency, the response cache, redaction of secrets, durable replay, the circuit
//! breaker, a machine with no remote at all, the API key's handling, and tiers a step turns off.
//!
//! Most tests give the router a deterministic stand-in for the local model
//! ([`StandInModel`]). That is acceptable here only because these tests are about the
//! router's decisions (which tier answers, and why); the real model is exercised by the
//! `cairn-models` tests and the end-to-end tests. One test (`no_remote_...`) uses the real
//! loading path with a missing model file, so the local tier fails as it would on a machine
//! without a model.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairn_engine::llm::{CallScope, Request, Task, Tier, redact};
use serde_json::{Value, json};
use support::openai_server::{FakeOpenAi, Reply, normal_content, schema_breaking_content};
use support::router_harness::*;

// ---------------------------------------------------------------------------------------------
// 1. Fallback on every kind of failure

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_and_the_local_tier_answers() {
    let yaml = FAILOVER.replace("retries: 1", "retries: 0");
    let (answer, server, _h, elapsed) = failing_call(
        vec![],
        Reply::Slow(Duration::from_secs(5)),
        &yaml,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "timed out after 400ms");
    assert_eq!(server.request_count(), 1);
    assert!(
        elapsed < Duration::from_secs(3),
        "the timeout was not enforced: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_retry_after_and_then_succeeds() {
    let (answer, server, _h, _) = failing_call(
        vec![Reply::TooManyRequests],
        Reply::Normal,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    assert!(answer.fallbacks.is_empty(), "{:?}", answer.fallbacks);
    assert_eq!(answer.text, normal_content());
    let received = server.received();
    assert_eq!(received.len(), 2);
    // Without Retry-After the first backoff is 500 ms + at most 50% jitter (< 750 ms).
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured, retried after {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_that_never_ends_falls_back() {
    let (answer, server, _h, _) = failing_call(
        vec![],
        Reply::TooManyRequests,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "HTTP 429");
    assert!(
        answer.fallbacks[0].contains("Rate limit reached"),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(server.request_count(), 2, "one try and one retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_then_falls_back() {
    let (answer, server, _h, _) = failing_call(
        vec![],
        Reply::ServerError,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "HTTP 500");
    assert_eq!(server.request_count(), 2, "one try and one retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_falls_back() {
    let (answer, server, _h, _) = failing_call(
        vec![],
        Reply::MalformedJson,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "malformed response: not JSON");
    assert_eq!(
        server.request_count(),
        1,
        "a malformed answer is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_falls_back() {
    let (answer, server, _h, _) =
        failing_call(vec![], Reply::Truncated, FAILOVER, StandInModel::new(false)).await;
    assert_fell_back_to_local(&answer, "malformed response: unreadable body");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_breaking_answer_is_repaired_once_and_accepted() {
    let (answer, server, _h, _) = failing_call(
        vec![Reply::BreaksSchema],
        Reply::Normal,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    assert!(answer.fallbacks.is_empty());
    assert_eq!(
        answer.value.as_ref(),
        Some(&serde_json::from_str::<Value>(&normal_content()).unwrap())
    );
    let received = server.received();
    assert_eq!(received.len(), 2, "exactly one repair request");
    let first = received[0].contents();
    let repair = received[1].contents();
    assert_eq!(
        repair.len(),
        first.len() + 2,
        "the repair carries the conversation, the answer and a correction"
    );
    assert_eq!(
        received[1].json["messages"][first.len()]["role"],
        "assistant"
    );
    assert_eq!(
        repair[first.len()],
        schema_breaking_content(),
        "the previous answer is sent back"
    );
    assert!(
        repair[first.len() + 1].contains("invalid"),
        "{}",
        repair[first.len() + 1]
    );
    // Both rounds were paid for, and the answer says so.
    let billed: u64 = received
        .iter()
        .map(|r| {
            let messages = r.json["messages"].as_array().unwrap();
            messages
                .iter()
                .map(|m| m["content"].as_str().unwrap().len().div_ceil(4) as u64 + 4)
                .sum::<u64>()
        })
        .sum();
    assert_eq!(answer.prompt_tokens, billed);
    assert_eq!(
        answer.prompt_tokens + answer.completion_tokens,
        server.usage_total()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_breaking_answer_twice_falls_back() {
    let (answer, server, _h, _) = failing_call(
        vec![],
        Reply::BreaksSchema,
        FAILOVER,
        StandInModel::new(false),
    )
    .await;
    assert_fell_back_to_local(&answer, "invalid answer after one repair");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_remote_and_local_both_fail_the_rules_decide() {
    let local = StandInModel::new(true);
    let (answer, server, _h, _) =
        failing_call(vec![], Reply::ServerError, FAILOVER, Arc::clone(&local)).await;
    assert_eq!(answer.tier, Tier::Rules);
    assert_eq!(answer.value, Some(rules_answer()));
    assert_eq!(answer.fallbacks.len(), 2, "{:?}", answer.fallbacks);
    assert!(
        answer.fallbacks[0].starts_with("remote: HTTP 500"),
        "{:?}",
        answer.fallbacks
    );
    assert!(
        answer.fallbacks[1].starts_with("local: local model failed"),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(local.calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.request_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Budgets hold under concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_never_overspend_the_daily_budget() {
    const LIMIT: u64 = 3_000;
    let server = FakeOpenAi::start().await;
    server.set_latency(Duration::from_millis(30));
    let yaml = format!(
        "llm:
  remote:
    base_url: BASE_URL
    model: fake-gpt
    retries: 0
  tasks:
    assess_risk: remote
  budgets:
    remote: {{ day_tokens: {LIMIT} }}
"
    );
    let h = harness(&server, &yaml, None);
    let mut callers = Vec::new();
    for caller in 0..50 {
        let router = Arc::clone(&h.router);
        callers.push(tokio::spawn(async move {
            // Distinct requests: no cache hits.
            router
                .ask(
                    None,
                    risk(&format!("Commit subject: change number {caller}")),
                    rules_answer,
                )
                .await
        }));
    }
    let mut answered = 0;
    let mut exhausted = 0;
    let mut spent_by_answers = 0;
    for caller in callers {
        let answer = caller.await.unwrap();
        assert!(!answer.cache_hit);
        match answer.tier {
            Tier::Remote => {
                answered += 1;
                spent_by_answers += answer.prompt_tokens + answer.completion_tokens;
            }
            Tier::Rules => {
                exhausted += 1;
                assert_eq!(answer.fallbacks.len(), 1, "{:?}", answer.fallbacks);
                assert!(
                    answer.fallbacks[0].starts_with("remote: remote daily tokens budget exhausted"),
                    "{:?}",
                    answer.fallbacks
                );
            }
            Tier::Local => panic!("no local tier was configured for assess_risk: {answer:?}"),
        }
    }
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    println!(
        "budget: limit {LIMIT} tokens; 50 callers: {answered} answered remotely, {exhausted} refused \
         (budget exhausted); server billed {}, ledger {ledger}",
        server.usage_total()
    );
    assert_eq!(answered + exhausted, 50);
    assert!(exhausted > 0, "the limit was meant to bind");
    assert!(answered > 0);
    assert!(
        server.usage_total() <= LIMIT,
        "the server billed {} > {LIMIT}",
        server.usage_total()
    );
    assert!(ledger <= LIMIT, "the ledger shows {ledger} > {LIMIT}");
    assert_eq!(
        ledger,
        server.usage_total(),
        "the ledger settles on what the server reported"
    );
    assert_eq!(spent_by_answers, server.usage_total());
    assert_eq!(
        server.request_count(),
        answered,
        "refused calls never reached the server"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Cache

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_twice_is_answered_from_the_cache() {
    let server = FakeOpenAi::start().await;
    let h = harness(&server, FAILOVER, Some(StandInModel::new(false)));
    let first = h
        .router
        .ask(None, risk("Commit subject: cache me"), rules_answer)
        .await;
    let second = h
        .router
        .ask(None, risk("Commit subject: cache me"), rules_answer)
        .await;
    assert_eq!(first.tier, Tier::Remote);
    assert!(!first.cache_hit);
    assert!(first.cost_micros > 0, "{first:?}");
    assert_eq!(second.tier, Tier::Remote);
    assert!(second.cache_hit);
    assert_eq!(second.cost_micros, 0);
    assert_eq!(second.text, first.text);
    assert_eq!(second.value, first.value);
    assert_eq!(
        server.request_count(),
        1,
        "the second answer came from the cache"
    );
    let (ledger, _) = h.store.spent_today("remote").unwrap();
    assert_eq!(
        ledger,
        first.prompt_tokens + first.completion_tokens,
        "the hit spent nothing"
    );
    println!(
        "cache: 2 asks, 1 server request, 1 hit; first cost {} micros, second 0",
        first.cost_micros
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Redaction

const RSA_LINES: [&str; 2] = [
    "Wa8uo3q8hGcK08TTa8CKrR//jrhAbi+Kf8TM5N2fC0EQ2fL6ACXI7+V/N3JPTTfq",
    "KxQAQHcTm0GA3zkyJJlixoVyAAWa646hfPN4fg7SnRwLY//XKYN02b10/BGt17nK",
];
const EC_LINE: &str = "ZQOVImn9Zp9jdu5xh5c3/V9y+NUcSskbbQxI1BoeXsnmoDkoVKhhXu8Qn8G/qeJW";
const OPENSSH_LINE: &str = "NwEojymz1z9qwrae3SwZ8mS+5GKluvIP0n7PFMAR7SAfg2MgrbmLqxaGoo2YASEM";

/// (kind, secret, the line that carries it). Lines go into the commit text or the diff.
fn seeded_secrets() -> (Vec<(&'static str, &'static str)>, String, String) {
    let in_input: Vec<(&str, &str, String)> = vec![
        ("aws access key (temporary)", "ASIAPF91DHODZDOC9IS0", "export AWS_ACCESS_KEY_ID=ASIAPF91DHODZDOC9IS0".into()),
        (
            "aws secret key",
            "+6ilI8ihN5KXSc7Tvo+hBKqFYY+kv5ZJr3J1TWDt",
            "export AWS_SECRET_ACCESS_KEY=\"+6ilI8ihN5KXSc7Tvo+hBKqFYY+kv5ZJr3J1TWDt\"".into(),
        ),
        ("github ghp", "ghp_fljoQoaF1LlqsajAIxNKu8iS2G8NPRVdD53X", "old token ghp_fljoQoaF1LlqsajAIxNKu8iS2G8NPRVdD53X was leaked".into()),
        ("github gho", "gho_83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe3n", "oauth gho_83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe3n revoked".into()),
        ("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkNhaXJuIn0.Dn87XG3-q-xbMtEPO6UkzYuF0ie9Pu2njHkAm1-5wDr",
         "session cookie eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkNhaXJuIn0.Dn87XG3-q-xbMtEPO6UkzYuF0ie9Pu2njHkAm1-5wDr".into()),
        ("slack bot token", "xoxb-1676122202972-9975288200182-B3m03nbqnsGpWLuqIA1id6Vw", "notify via xoxb-1676122202972-9975288200182-B3m03nbqnsGpWLuqIA1id6Vw".into()),
        (
            "slack user token",
            "xoxp-798682828807-290222791805-888718033401-e02ea68ef786e4d3cea27d26934b484e",
            "user token xoxp-798682828807-290222791805-888718033401-e02ea68ef786e4d3cea27d26934b484e".into(),
        ),
        ("bearer token", "lsZfYcMMDktXP_tKsf2-r-cDkdfrUnW5gcF.Ha6i", "curl -H 'Authorization: Bearer lsZfYcMMDktXP_tKsf2-r-cDkdfrUnW5gcF.Ha6i' https://api".into()),
        // Hex tokens are exempt from the entropy test (they look like commit ids), so only the
        // bearer pattern can catch this one.
        ("bearer token (hex)", "8d2f4e6a1b3c5d7e9f0a2b4c6d8e0f1a", "Authorization: Bearer 8d2f4e6a1b3c5d7e9f0a2b4c6d8e0f1a".into()),
        ("basic auth", "dXNlcjpwYXNzd29yZDEyMzQ1Ng==", "curl -H \"Authorization: Basic dXNlcjpwYXNzd29yZDEyMzQ1Ng==\" https://ci".into()),
        ("high entropy (unlabelled)", "V7G5IfQHeVVEqZe2qpUWnoVPDF2yeE6R", "signing salt V7G5IfQHeVVEqZe2qpUWnoVPDF2yeE6R rotated".into()),
        ("openai key", "sk-proj-IqfEouHgxzNNAL5wIScGebcy8F5n3-YNBDRzrZSgqbjG3uhk", "llm key sk-proj-IqfEouHgxzNNAL5wIScGebcy8F5n3-YNBDRzrZSgqbjG3uhk".into()),
    ];
    let in_diff: Vec<(&str, &str, String)> = vec![
        ("aws access key", "AKIAUJZDE8GXD6NCF10E", "+aws_access_key_id: AKIAUJZDE8GXD6NCF10E".into()),
        ("aws secret key", "spNxnyVmihA+2O76UMFxFkM+R5Kjp1vRt/1fjORS", "+aws_secret_access_key: spNxnyVmihA+2O76UMFxFkM+R5Kjp1vRt/1fjORS".into()),
        ("github ghs", "ghs_NyjOq9wMxEhh2FDEEtfjgVvVqE1SkHbn88Hx", "+  token: ghs_NyjOq9wMxEhh2FDEEtfjgVvVqE1SkHbn88Hx".into()),
        (
            "github fine-grained pat",
            "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",
            "+GH_CLONE=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".into(),
        ),
        ("gitlab token", "glpat-wZPf1Qh6yYTWmE4lBYOv", "+  remote: https://gitlab.example.com (glpat-wZPf1Qh6yYTWmE4lBYOv)".into()),
        ("google api key", "AIzaCmY_uCu3ZR1zTOlUcR64cXQLioDnkHIfxIq", "+const MAPS = \"AIzaCmY_uCu3ZR1zTOlUcR64cXQLioDnkHIfxIq\";".into()),
        ("stripe live key", "sk_live_0B26R08qzjI6GKFSufrdZSlB", "+stripe.api_key(\"sk_live_0B26R08qzjI6GKFSufrdZSlB\")".into()),
        ("stripe restricted key", "rk_test_5er8bOfZqfM2oeq3hDavJA76", "+  restricted: rk_test_5er8bOfZqfM2oeq3hDavJA76".into()),
        ("url password (postgres)", "S3cr3t-Pa55word", "+database_url: postgres://deploy:S3cr3t-Pa55word@db.internal:5432/app".into()),
        ("url password (https)", "Tr0ub4dor-and-3", "+registry: https://admin:Tr0ub4dor-and-3@registry.example.com/v2".into()),
        ("url password (redis, no user)", "p4ssw0rd-redis-9", "+cache: redis://:p4ssw0rd-redis-9@cache.internal:6379/0".into()),
        ("password assignment", "correct-horse-battery-staple", "+password = \"correct-horse-battery-staple\"".into()),
        ("password env assignment", "Winter2024!", "+DB_PASSWORD=Winter2024!".into()),
        ("client secret (json)", "8Q~fakeSecretValue.1234", "+  \"client_secret\": \"8Q~fakeSecretValue.1234\",".into()),
        ("npm token", "npm_TxoF54Fzbka8FRCztUjAwyuh1vauWv1zh87m", "+//registry.npmjs.org/:_authToken=npm_TxoF54Fzbka8FRCztUjAwyuh1vauWv1zh87m".into()),
        (
            "azure storage key",
            "BpSBviHJxye424wYjzQakkx/iN+hYb/bDsxoKRnS5kaS+BlBV/HUr5CYgoXPepr3yT1VUiZq/nDnqubaR2J8Lg==",
            "+conn = \"DefaultEndpointsProtocol=https;AccountName=cairn;AccountKey=BpSBviHJxye424wYjzQakkx/iN+hYb/bDsxoKRnS5kaS+BlBV/HUr5CYgoXPepr3yT1VUiZq/nDnqubaR2J8Lg==;\"".into(),
        ),
        (
            "slack webhook",
            "TY6SPSC3L/BKR2AQXV9/upc94tnwlavyfErGPmpGXafq",
            "+webhook: https://hooks.slack.com/services/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".into(),
        ),
        ("high entropy (unlabelled, base64)", "KfzjsQGMrb9h+ImB+LK777pzNk8cL6j5IXAAjlsHUqJo", "+  salt: [KfzjsQGMrb9h+ImB+LK777pzNk8cL6j5IXAAjlsHUqJo]".into()),
    ];
    let env_file: Vec<(&str, &str, &str)> = vec![
        (
            ".env value (low entropy)",
            "plainsecretvalue",
            "+SESSION_KEY=plainsecretvalue\n",
        ),
        (
            ".env value (short)",
            "letmein123",
            "+ADMIN_PASS=letmein123\n",
        ),
        (
            ".env url password",
            "mailpass-77",
            "+SMTP_URL=smtp://mailer:mailpass-77@smtp.internal:587\n",
        ),
    ];
    let mut secrets: Vec<(&'static str, &'static str)> = Vec::new();
    let mut input = String::from("Commit subject: rotate credentials after the incident\nNotes:\n");
    for (kind, secret, line) in &in_input {
        secrets.push((*kind, *secret));
        input.push_str(line);
        input.push('\n');
    }
    let mut diff = String::from(
        "diff --git a/config/deploy.yaml b/config/deploy.yaml\n--- a/config/deploy.yaml\n+++ b/config/deploy.yaml\n@@ -1,2 +1,20 @@\n region: eu-west-1\n",
    );
    for (kind, secret, line) in &in_diff {
        secrets.push((*kind, *secret));
        diff.push_str(line);
        diff.push('\n');
    }
    diff.push_str("diff --git a/.env.production b/.env.production\nnew file mode 100644\n--- /dev/null\n+++ b/.env.production\n@@ -0,0 +1,3 @@\n");
    for (kind, secret, line) in &env_file {
        secrets.push((*kind, *secret));
        diff.push_str(line);
    }
    let pems = [
        ("rsa private key", "RSA PRIVATE KEY", RSA_LINES.as_slice()),
        (
            "ec private key",
            "EC PRIVATE KEY",
            std::slice::from_ref(&EC_LINE),
        ),
        (
            "openssh private key",
            "OPENSSH PRIVATE KEY",
            std::slice::from_ref(&OPENSSH_LINE),
        ),
    ];
    for (kind, label, lines) in pems {
        let file = kind.replace(' ', "_");
        diff.push_str(&format!(
            "diff --git a/keys/{file} b/keys/{file}\nnew file mode 100600\n--- /dev/null\n+++ b/keys/{file}\n@@ -0,0 +1,{} @@\n+-----BEGIN {label}-----\n",
            lines.len() + 2
        ));
        for line in lines {
            secrets.push((kind, *line));
            diff.push_str(&format!("+{line}\n"));
        }
        diff.push_str(&format!("+-----END {label}-----\n"));
    }
    (secrets, input, diff)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_seeded_secret_ever_reaches_the_server() {
    let (secrets, input, diff) = seeded_secrets();
    assert!(secrets.len() >= 30, "only {} secrets seeded", secrets.len());
    let server = FakeOpenAi::start().await;
    // Two requests: the first answer breaks the schema, so the repair request (which carries the
    // conversation again plus the answer) is checked too.
    server.script([Reply::BreaksSchema]);
    let h = harness(&server, FAILOVER, Some(StandInModel::new(false)));
    let request = Request {
        task: Task::AssessRisk,
        instruction: INSTRUCTION.into(),
        input: input.clone(),
        diff: Some(diff.clone()),
    };
    let answer = h.router.ask(None, request, rules_answer).await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    let received = server.received();
    assert_eq!(received.len(), 2);

    let mut leaked = Vec::new();
    for (kind, secret) in &secrets {
        for (index, request) in received.iter().enumerate() {
            let body = &request.body[..];
            if body
                .windows(secret.len())
                .any(|window| window == secret.as_bytes())
            {
                leaked.push(format!("{kind} `{secret}` in request {index}"));
            }
        }
    }
    let placeholders = String::from_utf8_lossy(&received[0].body)
        .matches("[REDACTED:")
        .count();
    let mut kinds: Vec<&str> = redact(&input).unwrap().found;
    kinds.extend(redact(&diff).unwrap().found);
    let mut histogram = std::collections::BTreeMap::new();
    for kind in &kinds {
        *histogram.entry(*kind).or_insert(0) += 1;
    }
    println!(
        "redaction: {} secrets seeded, {} replacements in the first request body, by kind {histogram:?}; leaked: {}",
        secrets.len(),
        placeholders,
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "secrets reached the server:\n{}",
        leaked.join("\n")
    );
    // The surrounding context survives: the remote still sees what changed.
    let sent = String::from_utf8_lossy(&received[0].body);
    assert!(
        sent.contains("rotate credentials after the incident")
            && sent.contains("config/deploy.yaml")
    );
    assert!(placeholders >= 30, "{placeholders} placeholders");
}

// ---------------------------------------------------------------------------------------------
// 5. Durable replay

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_attempt_replays_the_recorded_answers_without_paying() {
    let server = FakeOpenAi::start().await;
    let h = harness(&server, FAILOVER, Some(StandInModel::new(false)));
    let summary = || Request {
        task: Task::SummarizeDiff,
        instruction: "Summarize the change in one sentence.".into(),
        input: "File: src/auth.rs".into(),
        diff: Some(SMALL_DIFF.into()),
    };
    // The recorded sequence: a remote answer, a local summary, then a remote failure that fell
    // back to the local tier.
    let attempt = |mode: Reply| {
        let server = &server;
        let h = &h;
        async move {
            let scope = CallScope::new(h.run_id, "analyze");
            server.set_mode(Reply::Normal);
            let a = h
                .router
                .ask(
                    Some(&scope),
                    risk("Commit subject: first question"),
                    rules_answer,
                )
                .await;
            let b = h
                .router
                .ask(Some(&scope), summary(), || json!("rules summary"))
                .await;
            server.set_mode(mode);
            let c = h
                .router
                .ask(
                    Some(&scope),
                    risk("Commit subject: second question"),
                    rules_answer,
                )
                .await;
            vec![a, b, c]
        }
    };
    let first = attempt(Reply::ServerError).await;
    assert_eq!(
        first.iter().map(|a| a.tier).collect::<Vec<_>>(),
        [Tier::Remote, Tier::Local, Tier::Local]
    );
    assert!(first[2].fallbacks[0].contains("HTTP 500"));
    assert!(first.iter().all(|a| !a.replayed));
    let requests = server.request_count();
    let (ledger, _) = h.store.spent_today("remote").unwrap();

    // The same step again (a re-run after a crash). The server would now answer differently;
    // the recorded answers win and nothing is sent.
    let again = attempt(Reply::Content(
        json!({ "level": "low", "score": 5, "reasons": ["different"], "strategy": "rolling" })
            .to_string(),
    ))
    .await;
    for (old, new) in first.iter().zip(&again) {
        assert!(new.replayed, "{new:?}");
        assert_eq!(
            (&new.text, &new.value, new.tier, &new.fallbacks),
            (&old.text, &old.value, old.tier, &old.fallbacks)
        );
        assert_eq!(
            (new.prompt_tokens, new.completion_tokens, new.cost_micros),
            (0, 0, 0)
        );
    }
    assert_eq!(server.request_count(), requests, "the re-run sent nothing");
    assert_eq!(
        h.store.spent_today("remote").unwrap().0,
        ledger,
        "the re-run spent nothing"
    );
    assert_eq!(
        h.store.calls(h.run_id).unwrap().len(),
        3,
        "one record per call, not per attempt"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Circuit breaker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_and_closes_after_the_cool_down() {
    let server = FakeOpenAi::start().await;
    server.set_mode(Reply::ServerError);
    let yaml = FAILOVER.replace("retries: 1", "retries: 0").replace(
        "{ failures: 100, cool_down: 1s }",
        "{ failures: 2, cool_down: 2s }",
    );
    let h = harness(&server, &yaml, Some(StandInModel::new(false)));
    for call in 0..2 {
        let answer = h
            .router
            .ask(
                None,
                risk(&format!("Commit subject: failing {call}")),
                rules_answer,
            )
            .await;
        assert_fell_back_to_local(&answer, "HTTP 500");
    }
    assert_eq!(server.request_count(), 2);
    let connections = server.connection_count();
    let started = Instant::now();
    let answer = h
        .router
        .ask(None, risk("Commit subject: while open"), rules_answer)
        .await;
    assert_fell_back_to_local(&answer, "circuit open");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not fast: {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.request_count(),
        2,
        "an open circuit does not touch the server"
    );
    assert_eq!(server.connection_count(), connections);

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    server.set_mode(Reply::Normal);
    let answer = h
        .router
        .ask(
            None,
            risk("Commit subject: after the cool-down"),
            rules_answer,
        )
        .await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    assert!(answer.fallbacks.is_empty());
    assert_eq!(server.request_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// 7. No remote configured

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_remote_nothing_is_sent_anywhere() {
    let server = FakeOpenAi::start().await;
    let yaml = "llm:\n  tasks:\n    assess_risk: remote\n    summarize_diff: remote\n";
    // The stand-in answers locally.
    let h = harness(&server, yaml, Some(StandInModel::new(false)));
    let answer = h
        .router
        .ask(None, risk("Commit subject: offline"), rules_answer)
        .await;
    assert_eq!(answer.tier, Tier::Local, "{answer:?}");
    assert!(answer.fallbacks.is_empty(), "{:?}", answer.fallbacks);
    // The real loading path with no model file: the rules answer.
    let missing = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{yaml}  local:\n    model: {}\n",
        missing.path().join("absent.gguf").display()
    );
    let h = harness(&server, &yaml, None);
    let answer = h
        .router
        .ask(
            None,
            risk("Commit subject: offline, no model"),
            rules_answer,
        )
        .await;
    assert_eq!(answer.tier, Tier::Rules, "{answer:?}");
    assert_eq!(answer.value, Some(rules_answer()));
    assert_eq!(answer.fallbacks.len(), 1, "{:?}", answer.fallbacks);
    assert!(
        answer.fallbacks[0].starts_with("local: "),
        "{:?}",
        answer.fallbacks
    );
    assert_eq!(server.connection_count(), 0);
    assert_eq!(server.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. The API key

const KEY_VARIABLE: &str = "CAIRN_LLM_ROUTER_TEST_API_KEY";
const KEY: &str = "cairn-test-key-9fK2mQ7xLp4Rz8Tw3Vn6Bc1Yd5Hs0Ju";

#[test]
fn the_api_key_is_sent_as_a_bearer_token_and_never_shown() {
    if std::env::var(KEY_VARIABLE).is_err() {
        // Setting a variable in this multi-threaded test process would need `unsafe`; run this
        // one test again in a child process that has it.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_api_key_is_sent_as_a_bearer_token_and_never_shown",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KEY_VARIABLE, KEY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "the child test failed");
        assert!(stdout.contains("1 passed"), "the child ran no test");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let server = FakeOpenAi::start().await;
            let yaml = FAILOVER.replace(
                "model: fake-gpt",
                &format!("model: fake-gpt\n    api_key_env: {KEY_VARIABLE}"),
            );
            let h = harness(&server, &yaml, Some(StandInModel::new(false)));
            let scope = CallScope::new(h.run_id, "analyze");
            let answer = h
                .router
                .ask(
                    Some(&scope),
                    risk("Commit subject: with a key"),
                    rules_answer,
                )
                .await;
            assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
            let received = server.received();
            assert_eq!(received[0].path, "/v1/chat/completions");
            assert_eq!(
                received[0].authorization.as_deref(),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert!(
                !String::from_utf8_lossy(&received[0].body).contains(KEY),
                "the key is in the body"
            );

            // A 200 whose answer quotes the key (a proxy echoing the request, an injected
            // model): scrubbed before it is returned, recorded, cached or logged.
            server.set_mode(Reply::EchoesKey);
            let echoed = h
                .router
                .ask(Some(&scope), risk("Commit subject: echo"), rules_answer)
                .await;
            assert_eq!(echoed.tier, Tier::Remote, "{echoed:?}");
            assert!(
                echoed.text.contains("[REDACTED:api_key]"),
                "{}",
                echoed.text
            );
            assert!(
                !format!("{echoed:?}").contains(KEY),
                "the key is in the answer"
            );
            // The same question again comes from the cache, scrubbed too.
            let cached = h
                .router
                .ask(None, risk("Commit subject: echo"), rules_answer)
                .await;
            assert!(cached.cache_hit && !cached.text.contains(KEY), "{cached:?}");
            let home = h._home.path();
            for file in ["cairn.db", "cairn.db-wal"] {
                let bytes = std::fs::read(home.join(file)).unwrap_or_default();
                assert!(
                    !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                    "the key is in {file}"
                );
            }
            let requests = server.request_count();

            // A provider that rejects the key and quotes it back in its error message.
            server.set_mode(Reply::Unauthorized);
            let answer = h
                .router
                .ask(
                    Some(&scope),
                    risk("Commit subject: rejected key"),
                    rules_answer,
                )
                .await;
            assert_fell_back_to_local(&answer, "HTTP 401");
            assert_eq!(server.request_count(), requests + 1, "a 401 is not retried");
            let history = serde_json::to_string(&h.store.calls(h.run_id).unwrap()).unwrap();
            assert!(
                !answer.fallbacks.join("\n").contains(KEY),
                "the key leaked into the fallback: {:?}",
                answer.fallbacks
            );
            assert!(
                !history.contains(KEY),
                "the key leaked into the run's history"
            );

            // A variable that is not set: nothing is sent and the reason names the variable only.
            let yaml = FAILOVER.replace(
                "model: fake-gpt",
                "model: fake-gpt\n    api_key_env: CAIRN_LLM_ROUTER_TEST_UNSET_KEY",
            );
            let h = harness(&server, &yaml, Some(StandInModel::new(false)));
            let answer = h
                .router
                .ask(None, risk("Commit subject: no key"), rules_answer)
                .await;
            assert_fell_back_to_local(
                &answer,
                "the API key variable `CAIRN_LLM_ROUTER_TEST_UNSET_KEY` is not set",
            );
            assert_eq!(server.request_count(), requests + 1);
        });
}

// ---------------------------------------------------------------------------------------------
// 9. A step's `llm:` turns tiers off

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_a_step_turned_off_is_never_asked() {
    use cairn_engine::pipeline::ModelUse;
    let server = FakeOpenAi::start().await;
    let local = StandInModel::new(false);
    let h = harness(&server, FAILOVER, Some(Arc::clone(&local)));
    let ask = |models: ModelUse, subject: &'static str| {
        let h = &h;
        async move {
            let scope = CallScope::new(h.run_id, "analyze").with_models(models);
            h.router
                .ask(Some(&scope), risk(subject), rules_answer)
                .await
        }
    };

    // `llm: { local: off }`: the remote still answers.
    let local_off = ModelUse {
        local: Some(false),
        remote: None,
    };
    let answer = ask(local_off, "Commit subject: one").await;
    assert_eq!(answer.tier, Tier::Remote, "{answer:?}");
    assert_eq!(server.request_count(), 1);

    // `llm: { remote: off }`: nothing is sent; the local model answers.
    let remote_off = ModelUse {
        local: None,
        remote: Some(false),
    };
    let answer = ask(remote_off, "Commit subject: two").await;
    assert_eq!(answer.tier, Tier::Local, "{answer:?}");
    assert_eq!(server.request_count(), 1, "a request reached the remote");
    assert!(
        answer
            .fallbacks
            .iter()
            .any(|f| f.contains("llm: remote: off")),
        "{:?}",
        answer.fallbacks
    );
    let local_calls = local.calls.load(Ordering::SeqCst);
    assert_eq!(local_calls, 1);

    // Both off: the rules decide, and neither model is asked.
    let both_off = ModelUse {
        local: Some(false),
        remote: Some(false),
    };
    let answer = ask(both_off, "Commit subject: three").await;
    assert_eq!(answer.tier, Tier::Rules, "{answer:?}");
    assert_eq!(answer.value, Some(rules_answer()));
    assert_eq!(server.request_count(), 1, "a request reached the remote");
    assert_eq!(
        local.calls.load(Ordering::SeqCst),
        local_calls,
        "the local model was asked"
    );
    assert_eq!(answer.fallbacks.len(), 2, "{:?}", answer.fallbacks);
}
