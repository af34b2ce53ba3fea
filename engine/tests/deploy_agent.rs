//! The deploy agent against real parts: the demo service image (FROM scratch, static binary)
//! in Docker, a real HAProxy process driven through its runtime API, real workflow runs, and a
//! load generator sending requests through the proxy on 127.0.0.1 for the whole time. Each
//! phase reports its failed-request count; the bad canary reports its rollback time.
//!
//! Needs Docker and `haproxy` (Debian package `haproxy`, 2.6+) on the PATH.

mod deploy_support;

use std::time::Duration;

use cairn_engine::agents::deploy::{Alert, Destination, Notifier, NotifyConfig, Route, Severity};
use cairn_engine::store::RunState;
use deploy_support::{
    Containers, DemoImage, Haproxy, Load, PagerDuty, Prometheus, Receiver, TestEngine, summarize,
};
use serde_json::{Value, json};

fn with(service: &str, image: &str, proxy: &Haproxy, version: &str, extra: Value) -> Value {
    let mut with = json!({
        "service": service,
        "image": image,
        "version": version,
        "replicas": 2,
        "env": { "DEMO_VERSION": version },
        "proxy_socket": proxy.socket,
        "backend": proxy.backend,
        "health_timeout": "10s",
        "keep_previous": "10m",
    });
    if let (Some(target), Value::Object(more)) = (with.as_object_mut(), extra) {
        for (key, value) in more {
            if key == "env" {
                if let (Some(env), Value::Object(vars)) =
                    (target.get_mut("env").and_then(Value::as_object_mut), value)
                {
                    env.extend(vars);
                }
            } else {
                target.insert(key, value);
            }
        }
    }
    with
}

fn canary_settings() -> Value {
    json!({ "strategy": "canary", "canary_steps": [10, 50, 100], "monitor_window": "9s", "analysis_interval": "500ms", "min_samples": 20 })
}

/// One service through every strategy, under constant load: rolling v2 over v1, a crashing
/// version rolled back, blue-green v3, a bad canary rolled back on its own, a good canary
/// promoted. Zero failed requests wherever no bad version took traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_under_load() {
    let image = DemoImage::build("strategies");
    let service = format!("shop{}", std::process::id());
    let containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let hook = Receiver::start().await;
    let img = image.image();

    // v1: the first release (rolling onto an empty backend).
    let first = engine
        .deploy("low", with(&service, &img, &proxy, "v1", json!({})))
        .await;
    assert_eq!(
        first.state,
        RunState::Succeeded,
        "{}\n{}",
        first.error(),
        first.logs.join("\n")
    );
    assert_eq!(first.outputs()["strategy"], "rolling", "low risk → rolling");

    let load = Load::start(proxy.port, 6, Duration::from_secs(240));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut report = Vec::new();

    // Rolling v2 over v1.
    let mark = load.len();
    let rolling = engine
        .deploy("medium", with(&service, &img, &proxy, "v2", json!({})))
        .await;
    assert_eq!(
        rolling.state,
        RunState::Succeeded,
        "{}\n{}",
        rolling.error(),
        rolling.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    println!(
        "rolling v1→v2: {failed} failed requests, answers by version {versions:?}, {} ms",
        rolling.outputs()["duration_ms"]
    );
    report.push(("rolling", failed));
    assert_eq!(failed, 0, "a rolling deploy drops no request: {versions:?}");
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v2"),
        "v2 serves all traffic"
    );

    // A version that crashes at start (invalid setting): rolled back, traffic untouched.
    let mark = load.len();
    let crashing = engine
        .deploy(
            "medium",
            with(
                &service,
                &img,
                &proxy,
                "v-crash",
                json!({ "env": { "DEMO_ERROR_RATE": "2" } }),
            ),
        )
        .await;
    assert_eq!(crashing.state, RunState::Failed);
    assert!(
        crashing.error().contains("rolled back") && crashing.error().contains("crash"),
        "{}",
        crashing.error()
    );
    let (failed, versions) = summarize(&load.since(mark));
    println!("rolling of a crashing version: rolled back; {failed} failed requests, {versions:?}");
    assert_eq!(failed, 0);
    assert_eq!(
        versions.keys().collect::<Vec<_>>(),
        vec!["v2"],
        "only v2 answered"
    );

    // Blue-green v3.
    let mark = load.len();
    let blue_green = engine
        .deploy(
            "medium",
            with(
                &service,
                &img,
                &proxy,
                "v3",
                json!({ "strategy": "blue_green" }),
            ),
        )
        .await;
    assert_eq!(
        blue_green.state,
        RunState::Succeeded,
        "{}\n{}",
        blue_green.error(),
        blue_green.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    println!(
        "blue-green v2→v3: {failed} failed requests, answers by version {versions:?}, {} ms",
        blue_green.outputs()["duration_ms"]
    );
    report.push(("blue_green", failed));
    assert_eq!(failed, 0, "{versions:?}");
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v3")
    );

    // Hotfix v3.1: the whole set at once, still health-checked.
    let mark = load.len();
    let hotfix = engine
        .deploy(
            "medium",
            with(
                &service,
                &img,
                &proxy,
                "v3.1",
                json!({ "strategy": "hotfix" }),
            ),
        )
        .await;
    assert_eq!(
        hotfix.state,
        RunState::Succeeded,
        "{}\n{}",
        hotfix.error(),
        hotfix.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    println!(
        "hotfix v3→v3.1: {failed} failed requests, answers by version {versions:?}, {} ms",
        hotfix.outputs()["duration_ms"]
    );
    report.push(("hotfix", failed));
    assert_eq!(failed, 0, "{versions:?}");
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v3.1")
    );

    // A bad canary (5% errors, +200 ms): detected and rolled back without anyone asking.
    let mark = load.len();
    let mut settings = canary_settings();
    settings["env"] = json!({ "DEMO_ERROR_RATE": "0.05", "DEMO_EXTRA_LATENCY_MS": "200" });
    settings["notify"] = json!({ "webhook": hook.url, "window": "60s" });
    // Longer steps than the good canary's: detection must not depend on a fast machine.
    settings["monitor_window"] = json!("15s");
    let bad = engine
        .deploy("high", with(&service, &img, &proxy, "v4-bad", settings))
        .await;
    assert_eq!(bad.state, RunState::Failed, "{}", bad.logs.join("\n"));
    assert!(
        bad.error().contains("canary analysis failed"),
        "{}\n{}",
        bad.error(),
        bad.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.since(mark);
    let bad_answers: Vec<_> = answers
        .iter()
        .filter(|a| a.version == "v4-bad" || !a.ok)
        .collect();
    let first = bad_answers
        .first()
        .map(|a| a.at - a.latency)
        .unwrap_or_default();
    let last = bad_answers
        .last()
        .map(|a| a.at - a.latency)
        .unwrap_or_default();
    let external = last.saturating_sub(first);
    let record = engine
        .history(&service)
        .last()
        .cloned()
        .unwrap_or(Value::Null);
    let (failed, versions) = summarize(&answers);
    println!(
        "bad canary: rolled back; agent-measured {} ms from the first anomalous sample to v3.1 serving all traffic; \
         load generator saw v4-bad from {:.2} s to {:.2} s = {} ms of exposure; {failed} failed requests (the canary's injected 500s), {versions:?}",
        record["rollback_ms"],
        first.as_secs_f64(),
        last.as_secs_f64(),
        external.as_millis()
    );
    println!("verdicts: {}", record["details"]["verdicts"]);
    report.push(("canary_bad", failed));
    assert_eq!(record["outcome"], "rolled_back");
    assert!(
        record["rollback_ms"].as_u64().is_some_and(|ms| ms < 10_000),
        "{record:#}"
    );
    assert!(external < Duration::from_secs(10), "exposure {external:?}");
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v3.1"),
        "v3.1 serves all traffic again"
    );
    let verdict = &record["details"]["verdicts"][0]["verdict"];
    assert_eq!(verdict["outcome"], "fail", "{verdict:#}");
    // A full verdict has its 20 requests; an earlier one stands only on errors already
    // significant at the analysis' alpha (waiting would only send more requests to it).
    let full = verdict["canary"]["requests"]
        .as_u64()
        .is_some_and(|n| n >= 20);
    let early_on_errors = verdict["error_rate_test"]["p_value"]
        .as_f64()
        .is_some_and(|p| p < 0.01)
        && verdict["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("error rate"));
    assert!(full || early_on_errors, "{verdict:#}");
    let messages = hook.received();
    assert_eq!(
        messages.len(),
        1,
        "one message: the rollback, at once: {messages:#?}"
    );
    assert_eq!(messages[0]["alerts"][0]["severity"], "critical");
    assert!(
        messages[0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("rolled back"),
        "{messages:#?}"
    );

    // A canary that only errs (5% of requests answered 500, no extra latency): caught by the
    // error-rate test alone.
    let mark = load.len();
    let mut settings = canary_settings();
    settings["env"] = json!({ "DEMO_ERROR_RATE": "0.05" });
    settings["monitor_window"] = json!("15s");
    let erring = engine
        .deploy("high", with(&service, &img, &proxy, "v4-erring", settings))
        .await;
    assert_eq!(erring.state, RunState::Failed, "{}", erring.logs.join("\n"));
    assert!(
        erring.error().contains("canary analysis failed") && erring.error().contains("error rate"),
        "{}\n{}",
        erring.error(),
        erring.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.since(mark);
    let exposed: Vec<_> = answers
        .iter()
        .filter(|a| a.version == "v4-erring" || !a.ok)
        .collect();
    let exposure = match (exposed.first(), exposed.last()) {
        (Some(first), Some(last)) => {
            (last.at - last.latency).saturating_sub(first.at - first.latency)
        }
        _ => Duration::ZERO,
    };
    let record = engine
        .history(&service)
        .last()
        .cloned()
        .unwrap_or(Value::Null);
    let (failed, versions) = summarize(&answers);
    println!(
        "erring canary: rolled back; agent-measured {} ms from the first anomalous sample; canary exposure {} ms; {failed} failed requests, {versions:?}; verdict: {}",
        record["rollback_ms"],
        exposure.as_millis(),
        record["details"]["verdicts"]
            .as_array()
            .and_then(|v| v.last())
            .map(|v| v["verdict"]["reasons"].to_string())
            .unwrap_or_default()
    );
    report.push(("canary_erring", failed));
    assert!(
        record["rollback_ms"].as_u64().is_some_and(|ms| ms < 10_000),
        "{record:#}"
    );
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v3.1")
    );

    // A good canary: promoted after passing every step.
    let mark = load.len();
    let good = engine
        .deploy(
            "high",
            with(&service, &img, &proxy, "v5", canary_settings()),
        )
        .await;
    assert_eq!(
        good.state,
        RunState::Succeeded,
        "{}\n{}",
        good.error(),
        good.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    let out = good.outputs();
    println!(
        "good canary v3.1→v5: promoted; {failed} failed requests, {versions:?}; {} ms",
        out["duration_ms"]
    );
    for step in out["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  step {} at {}%: {}",
            step["step"], step["share"], step["verdict"]["outcome"]
        );
    }
    report.push(("canary_good", failed));
    assert_eq!(failed, 0, "{versions:?}");
    assert_eq!(out["verdicts"].as_array().map(Vec::len), Some(3));
    assert!(
        out["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["verdict"]["outcome"] == "pass"),
        "{:#}",
        out["verdicts"]
    );
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v5")
    );

    // Manual rollback (`cairn rollback RUN`): v3.1 was kept running out of rotation.
    let mark = load.len();
    let reports = cairn_engine::agents::deploy::rollback_run(
        engine.engine.store(),
        good.run_id,
        "manual test",
    )
    .await
    .expect("rollback");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    println!("manual rollback v5→v3.1: {reports:?}; {failed} failed requests, {versions:?}");
    report.push(("manual_rollback", failed));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["to"], "v3.1");
    assert_eq!(failed, 0);
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.version == "v3.1")
    );

    let all = load.stop().await;
    println!(
        "failed requests per strategy: {report:?}; {} requests in all",
        all.len()
    );
    let history: Vec<String> = engine
        .history(&service)
        .iter()
        .map(|r| format!("{} {} {}", r["version"], r["strategy"], r["outcome"]))
        .collect();
    println!("history: {history:?}");
    assert!(containers.count() > 0);
    drop(containers);
    drop(proxy);
}

/// Aggregation against a real receiver: duplicates within the window are sent once, info is
/// batched into one message, routine success is suppressed, and the per-run cap holds — also
/// across the steps of a run and across runs, through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_dedupe_batch_and_cap() {
    let hook = Receiver::start().await;
    let slack = Receiver::start().await;
    let config = NotifyConfig {
        slack: Some(slack.url.clone()),
        webhook: Some(hook.url.clone()),
        window: Duration::from_secs(60),
        success: false,
        max_per_run: 3,
        ..NotifyConfig::default()
    };
    let home = tempfile::tempdir().expect("home");
    let store = cairn_engine::store::Store::open(&home.path().join("cairn.db")).expect("store");
    let mut notifier = Notifier::new(config.clone(), 7, "shop", Some(store.clone()));
    let alert = |severity, key: &str, success| Alert {
        severity,
        key: key.into(),
        title: key.into(),
        text: format!("{key} happened"),
        success,
    };
    for _ in 0..3 {
        notifier
            .notify(alert(Severity::Critical, "rollback", false))
            .await;
    }
    assert_eq!(
        hook.received().len(),
        1,
        "a critical alert goes out at once, duplicates are dropped"
    );
    for key in ["step-1", "step-2", "step-3"] {
        notifier.notify(alert(Severity::Info, key, false)).await;
    }
    notifier
        .notify(alert(Severity::Info, "deployed", true))
        .await;
    assert_eq!(hook.received().len(), 1, "info waits for the batch");
    notifier.flush().await;
    let received = hook.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[1]["alerts"].as_array().map(Vec::len),
        Some(3),
        "three info alerts in one message: {:#}",
        received[1]
    );
    for key in ["a", "b", "c"] {
        notifier.notify(alert(Severity::Critical, key, false)).await;
    }
    assert_eq!(hook.received().len(), 3, "capped at max_per_run");
    let slack_messages = slack.received();
    assert_eq!(
        slack_messages.len(),
        3,
        "the Slack hook gets the same messages"
    );
    assert!(
        slack_messages[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("[Critical] rollback: rollback happened")),
        "{slack_messages:#?}"
    );
    let report = serde_json::to_value(notifier.report()).expect("report");
    println!("notification report: {report}");
    assert_eq!(report["deduplicated"], 2);
    assert_eq!(report["success_suppressed"], 1);
    assert_eq!(report["over_cap"], 2);

    // Another step of run 7 (the monitor): the same alert is a duplicate, and the run's cap is spent.
    let mut monitor = Notifier::new(config.clone(), 7, "shop", Some(store.clone()));
    monitor
        .notify(alert(Severity::Critical, "rollback", false))
        .await;
    monitor
        .notify(alert(Severity::Critical, "crash-loop", false))
        .await;
    let report = serde_json::to_value(monitor.report()).expect("report");
    assert_eq!(
        (
            report["deduplicated"].as_u64(),
            report["over_cap"].as_u64(),
            report["sent"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{report}"
    );
    // Run 8 has its own cap, but the window's duplicates are still duplicates.
    let mut next = Notifier::new(config, 8, "shop", Some(store));
    next.notify(alert(Severity::Critical, "rollback", false))
        .await;
    next.notify(alert(Severity::Critical, "new-problem", false))
        .await;
    let report = serde_json::to_value(next.report()).expect("report");
    assert_eq!(
        (report["deduplicated"].as_u64(), report["sent"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(hook.received().len(), 4, "one more message, from run 8");
}

/// Routing by severity against real HTTP receivers on 127.0.0.1: PagerDuty's Events API v2
/// (a stand-in that checks each event as PagerDuty does and answers 202), an Alertmanager
/// webhook receiver and a Slack-compatible one. Critical alerts page at once with a dedup key,
/// warnings reach Alertmanager and Slack in one batch, info only Slack; success is suppressed;
/// and the service's daily noise budget, counted in the store across runs, holds back
/// non-critical messages but never a critical one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_routed_by_severity_within_a_daily_budget() {
    let pagerduty = PagerDuty::start().await;
    let alertmanager = Receiver::start().await;
    let slack = Receiver::start().await;
    let config = NotifyConfig {
        routes: vec![
            Route {
                min_severity: Severity::Critical,
                destination: Destination::PagerDuty {
                    url: pagerduty.url.clone(),
                    routing_key: PagerDuty::ROUTING_KEY.into(),
                },
            },
            Route {
                min_severity: Severity::Warning,
                destination: Destination::Alertmanager(alertmanager.url.clone()),
            },
            Route {
                min_severity: Severity::Info,
                destination: Destination::Slack(slack.url.clone()),
            },
        ],
        window: Duration::from_secs(60),
        max_per_run: 20,
        daily_budget: Some(2),
        ..NotifyConfig::default()
    };
    let home = tempfile::tempdir().expect("home");
    let store = cairn_engine::store::Store::open(&home.path().join("cairn.db")).expect("store");
    let alert = |severity, key: &str, success| Alert {
        severity,
        key: key.into(),
        title: format!("shop {key}"),
        text: format!("{key} happened"),
        success,
    };
    let mut notifier = Notifier::new(config.clone(), 11, "shop", Some(store.clone()));
    notifier
        .notify(alert(Severity::Critical, "rollback:shop", false))
        .await;
    notifier
        .notify(alert(Severity::Critical, "rollback:shop", false))
        .await;
    let events = pagerduty.received();
    assert_eq!(events.len(), 1, "paged once: {events:#?}");
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["dedup_key"], "cairn/shop/rollback:shop");
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert_eq!(alertmanager.received().len(), 1);
    assert_eq!(
        alertmanager.received()[0]["alerts"][0]["labels"]["severity"],
        "critical"
    );

    notifier
        .notify(alert(Severity::Warning, "slow:shop", false))
        .await;
    notifier
        .notify(alert(Severity::Info, "step:shop", false))
        .await;
    notifier
        .notify(alert(Severity::Info, "deployed:shop", true))
        .await;
    assert_eq!(
        slack.received().len(),
        1,
        "warnings and info wait for the batch"
    );
    notifier.flush().await;
    let am = alertmanager.received();
    assert_eq!(am.len(), 2);
    assert_eq!(am[1]["version"], "4");
    assert_eq!(
        am[1]["alerts"].as_array().map(Vec::len),
        Some(1),
        "only the warning reaches Alertmanager: {:#}",
        am[1]
    );
    assert_eq!(
        am[1]["alerts"][0]["labels"]["alertname"],
        "cairn/shop/slow:shop"
    );
    let text = slack.received()[1]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.contains("slow:shop happened") && text.contains("step:shop happened"),
        "Slack gets the whole batch: {text}"
    );
    assert_eq!(
        pagerduty.received().len(),
        1,
        "nothing below critical pages"
    );

    // The budget (2 messages a day) is spent: another run's warning is held back, its
    // critical alert still pages.
    let mut next = Notifier::new(config, 12, "shop", Some(store));
    next.notify(alert(Severity::Warning, "slow-again:shop", false))
        .await;
    next.flush().await;
    next.notify(alert(Severity::Critical, "crash:shop", false))
        .await;
    let report = serde_json::to_value(next.report()).expect("report");
    let first = serde_json::to_value(notifier.report()).expect("report");
    println!("routing reports: {first} then {report}");
    assert_eq!(first["deduplicated"], 1);
    assert_eq!(first["success_suppressed"], 1);
    assert_eq!(first["failed_deliveries"], 0, "{first}");
    assert_eq!(report["over_budget"], 1, "{report}");
    assert_eq!(report["sent"], 1, "{report}");
    assert_eq!(pagerduty.received().len(), 2);
    assert_eq!(
        pagerduty.received()[1]["dedup_key"],
        "cairn/shop/crash:shop"
    );
    assert_eq!(
        pagerduty.rejected(),
        0,
        "every event was valid for PagerDuty"
    );
}

/// `cairn rollback --drill SERVICE` under load: back to the release kept out of rotation and
/// forward again, through the real binary; no request fails (its own clients' and this test's),
/// the times to full traffic are reported, and the service ends on the release it started on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_drill_under_load() {
    let image = DemoImage::build("drill");
    let service = format!("drill{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    for version in ["v1", "v2"] {
        let deployed = engine
            .deploy(
                "low",
                with(&service, &image.image(), &proxy, version, json!({})),
            )
            .await;
        assert_eq!(deployed.state, RunState::Succeeded, "{}", deployed.error());
    }
    let load = Load::start(proxy.port, 2, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_HOME", engine.home.path())
        .args(["rollback", "--drill", &service, "--url"])
        .arg(format!("http://127.0.0.1:{}/", proxy.port))
        .output()
        .await
        .expect("cairn rollback --drill");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.stop().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("drill report ({e}): {stderr}"));
    println!("{report:#}");
    let ways = report["ways"].as_array().cloned().unwrap_or_default();
    assert_eq!(ways.len(), 2, "{report:#}");
    assert_eq!(
        (ways[0]["from"].as_str(), ways[0]["to"].as_str()),
        (Some("v2"), Some("v1"))
    );
    assert_eq!(
        (ways[1]["from"].as_str(), ways[1]["to"].as_str()),
        (Some("v1"), Some("v2"))
    );
    assert!(
        ways.iter().all(|w| w["full_traffic_ms"].is_u64()),
        "{report:#}"
    );
    assert_eq!(report["failed_requests"], 0, "{report:#}");
    assert!(
        report["requests"].as_u64().is_some_and(|n| n > 50),
        "{report:#}"
    );
    assert_eq!(
        output.status.success(),
        report["met"] == true,
        "the exit code says whether the goal was met"
    );
    let (failed, versions) = summarize(&answers);
    println!("the test's own clients during the drill: {failed} failed, {versions:?}");
    assert_eq!(failed, 0, "{versions:?}");
    assert!(
        versions.contains_key("v1"),
        "v1 served during the drill: {versions:?}"
    );
    assert!(
        answers[answers.len().saturating_sub(10)..]
            .iter()
            .all(|a| a.version == "v2"),
        "v2 serves again after the drill"
    );
    let history = engine.history(&service);
    assert!(
        history
            .iter()
            .rev()
            .take(2)
            .all(|r| r["reason"].as_str().is_some_and(|t| t.contains("drill"))),
        "both switches are recorded: {history:#?}"
    );
}

/// `kill -9` of the engine in the middle of a canary leaves traffic split between v1 and the
/// canary; `cairn resume` re-attempts the step with the same idempotency key, which first
/// removes the interrupted canary and restores v1, then deploys again to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_canary_is_recovered_on_resume() {
    let image = DemoImage::build("kill9");
    let service = format!("kill{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let home = tempfile::tempdir().expect("home");
    let cairn = env!("CARGO_BIN_EXE_cairn");
    let workflow = |name: &str, with: Value| {
        let path = home.path().join(format!("{name}.yaml"));
        std::fs::write(&path, format!("name: {name}\nsteps:\n  - id: deploy\n    agent: deploy_agent\n    timeout: 5m\n    with: {with}\n")).expect("workflow");
        path
    };
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(cairn)
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .expect("run cairn")
    };

    let v1 = workflow(
        "v1",
        with(&service, &image.image(), &proxy, "v1", json!({})),
    );
    let output = run(&["run".as_ref(), "--quiet".as_ref(), v1.as_os_str()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let load = Load::start(proxy.port, 6, Duration::from_secs(120));
    let mut settings = canary_settings();
    settings["monitor_window"] = json!("6s");
    let v2 = workflow("v2", with(&service, &image.image(), &proxy, "v2", settings));
    let mut child = std::process::Command::new(cairn)
        .arg("--home")
        .arg(home.path())
        .args(["run", "--quiet"])
        .arg(&v2)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cairn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !load.since(0).iter().any(|a| a.version == "v2") {
        assert!(
            std::time::Instant::now() < deadline,
            "the canary never took traffic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("kill -9"); // SIGKILL
    let _ = child.wait();
    let killed_at = load.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let split = load
        .since(killed_at)
        .iter()
        .filter(|a| a.version == "v2")
        .count();
    println!("after kill -9: {split} answers from the orphaned canary in 1 s (traffic left split)");
    assert!(split > 0, "the canary kept its share after the engine died");

    let started = std::time::Instant::now();
    let output = run(&["resume".as_ref(), "--quiet".as_ref()]);
    assert!(
        output.status.success(),
        "resume: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.stop().await;
    let (failed, versions) = summarize(&answers);
    let state = cairn_engine::store::Store::open(&home.path().join("cairn.db"))
        .expect("store")
        .deployment(&service)
        .expect("deployment state")
        .unwrap_or_default();
    let history = state["history"].as_array().cloned().unwrap_or_default();
    let outcomes: Vec<&str> = history
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    println!(
        "resume took {} ms; history {outcomes:?}; recovery restored v1 in {} ms; {failed} failed requests over the whole test, {versions:?}",
        started.elapsed().as_millis(),
        history
            .get(1)
            .map(|r| r["rollback_ms"].clone())
            .unwrap_or(Value::Null)
    );
    assert_eq!(outcomes, vec!["deployed", "recovered", "deployed"]);
    assert_eq!(failed, 0, "{versions:?}");
    assert!(
        answers[answers.len().saturating_sub(20)..]
            .iter()
            .all(|a| a.version == "v2"),
        "v2 serves all traffic"
    );
    assert!(state["in_progress"].is_null());
}

/// No traffic, no verdict: a canary that saw too few requests is rolled back as
/// "inconclusive", naming the counts, never promoted silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_without_traffic_is_inconclusive() {
    let image = DemoImage::build("quiet");
    let service = format!("quiet{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let first = engine
        .deploy(
            "low",
            with(
                &service,
                &image.image(),
                &proxy,
                "v1",
                json!({ "replicas": 1 }),
            ),
        )
        .await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.error());
    let mut settings = canary_settings();
    settings["monitor_window"] = json!("2s");
    settings["max_wait"] = json!("1s");
    let quiet = engine
        .deploy(
            "high",
            with(&service, &image.image(), &proxy, "v2", settings),
        )
        .await;
    assert_eq!(quiet.state, RunState::Failed);
    let error = quiet.error();
    println!("{error}");
    assert!(
        error.contains("inconclusive")
            && error.contains("canary 0 and baseline 0 requests, 20 needed"),
        "{error}"
    );
    let servers = cairn_engine::agents::deploy::Proxy::new(&proxy.socket, &proxy.backend)
        .servers()
        .await
        .expect("servers");
    assert_eq!(
        servers.iter().filter(|s| !s.in_maintenance).count(),
        1,
        "only v1 in rotation: {servers:?}"
    );
    assert!(
        quiet
            .logs
            .iter()
            .any(|l| l.contains("waiting for traffic (at most")),
        "a thin step waits before it is inconclusive: {}",
        quiet.logs.join("\n")
    );

    // `inconclusive: hold`: the split stays, `cairn status` shows it, a person answers.
    for (version, command) in [("v2-held", "promote"), ("v2-refused", "rollback")] {
        let mut settings = canary_settings();
        settings["monitor_window"] = json!("1s");
        settings["max_wait"] = json!("1s");
        settings["inconclusive"] = json!("hold");
        let deploy = engine.deploy(
            "high",
            with(&service, &image.image(), &proxy, version, settings),
        );
        let person = answer_held_canary(&engine, &service, command);
        let (held, status) = tokio::join!(deploy, person);
        println!("{command}: {status}");
        assert!(
            status.contains("waiting for a person")
                && status.contains(&format!("{service} {version} canary held at 10%")),
            "{status}"
        );
        let history = engine.history(&service);
        let record = history.last().cloned().unwrap_or(Value::Null);
        if command == "promote" {
            assert_eq!(
                held.state,
                RunState::Succeeded,
                "{}\n{}",
                held.error(),
                held.logs.join("\n")
            );
            assert!(
                record["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("promoted by a person")),
                "{record:#}"
            );
        } else {
            assert_eq!(held.state, RunState::Failed, "{}", held.logs.join("\n"));
            assert!(
                held.error().contains("rolled back by a person"),
                "{}",
                held.error()
            );
            assert_eq!(record["outcome"], "rolled_back", "{record:#}");
        }
        let state = engine
            .engine
            .store()
            .deployment(&service)
            .expect("state")
            .unwrap_or(Value::Null);
        assert!(state["held"].is_null(), "answered: {state:#}");
        assert_eq!(state["active"]["version"], "v2-held");
    }

    // `keep_previous: 0s`: the replaced release is removed at once, containers and servers.
    let next = engine
        .deploy(
            "low",
            with(
                &service,
                &image.image(),
                &proxy,
                "v3",
                json!({ "replicas": 1, "keep_previous": "0s" }),
            ),
        )
        .await;
    assert_eq!(next.state, RunState::Succeeded, "{}", next.error());
    assert_eq!(_containers.count(), 1, "only v3's container is left");
    let servers = cairn_engine::agents::deploy::Proxy::new(&proxy.socket, &proxy.backend)
        .servers()
        .await
        .expect("servers");
    assert_eq!(servers.len(), 1, "{servers:?}");
}

/// Waits until `service` has a canary held for a person (`promote`, `rollback`) or a deploy
/// waiting for its window (`approve`), then answers with `cairn <command> RUN` as a person
/// would. Returns what `cairn status` showed meanwhile.
async fn answer_held_canary(engine: &TestEngine, service: &str, command: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let run = loop {
        let states =
            cairn_engine::agents::deploy::service_states(engine.engine.store()).expect("states");
        let state = states
            .into_iter()
            .find(|(name, _)| name == service)
            .map(|(_, state)| state)
            .unwrap_or_default();
        let key = if command == "approve" {
            state.waiting.first().map(|w| w.key.clone())
        } else {
            state.held.map(|h| h.key)
        };
        if let Some(key) = key {
            break key.split('/').next().unwrap_or("0").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing waited for a person"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cairn = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env("CAIRN_HOME", engine.home.path())
            .args(args)
            .output()
    };
    let status = cairn(vec!["status".into()]).await.expect("cairn status");
    // The same, for scripts: `cairn status --json` names the run under what it waits for.
    let listed = cairn(vec!["status".into(), "--json".into()])
        .await
        .expect("cairn status --json");
    let document: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("status --json is JSON");
    let list = if command == "approve" {
        "deploys_waiting_for_a_window"
    } else {
        "canaries_waiting_for_a_person"
    };
    assert!(
        document[list]
            .as_array()
            .is_some_and(|items| items
                .iter()
                .any(
                    |i| i["run"].as_i64().map(|r| r.to_string()) == Some(run.clone())
                        && i["service"] == service
                )),
        "{list}: {document:#}"
    );
    let answered = cairn(vec![
        command.into(),
        run,
        "--reason".into(),
        "tested".into(),
    ])
    .await
    .expect("cairn answer");
    assert!(
        answered.status.success(),
        "cairn {command}: {}",
        String::from_utf8_lossy(&answered.stderr)
    );
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// Deploy windows and freezes with real deploys: a high-risk deploy outside its window waits,
/// shown by `cairn status`, until `cairn approve`; a low-risk one goes; in a freeze a hotfix
/// goes only when the workflow allows it, otherwise it waits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_windows_and_freezes() {
    use chrono::Datelike;
    let image = DemoImage::build("windows");
    let service = format!("win{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    // Three days from today (UTC): never now, whenever the test runs.
    let elsewhen = days[(chrono::Utc::now().weekday().num_days_from_monday() as usize + 3) % 7];
    let windowed = |version: &str| {
        with(
            &service,
            &image.image(),
            &proxy,
            version,
            json!({ "replicas": 1, "strategy": "rolling", "timezone": "utc",
                    "windows": [{ "days": [elsewhen], "hours": "09:00-16:00" }] }),
        )
    };
    let low = engine.deploy("low", windowed("v1")).await;
    assert_eq!(low.state, RunState::Succeeded, "{}", low.error());
    assert!(
        low.outputs()["window"]["waited_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 5_000),
        "low risk needs no window: {}",
        low.outputs()["window"]
    );

    let (high, status) = tokio::join!(
        engine.deploy("high", windowed("v2")),
        answer_held_canary(&engine, &service, "approve")
    );
    println!("{status}");
    assert!(
        status.contains("deploys waiting for a window")
            && status.contains(&format!("{service} v2"))
            && status.contains(&format!("{elsewhen} 09:00-16:00")),
        "{status}"
    );
    assert_eq!(high.state, RunState::Succeeded, "{}", high.error());
    assert!(
        high.outputs()["window"]["passed"]
            .as_str()
            .is_some_and(|p| p.contains("approved by a person: tested")),
        "{}",
        high.outputs()["window"]
    );
    assert!(
        high.logs
            .iter()
            .any(|l| l.contains("waiting: high-risk deploys only inside")),
        "{}",
        high.logs.join("\n")
    );

    let today = chrono::Utc::now().date_naive();
    let frozen = |version: &str, bypass: bool| {
        with(
            &service,
            &image.image(),
            &proxy,
            version,
            json!({ "replicas": 1, "strategy": "rolling", "timezone": "utc",
                    "freeze": [{ "from": (today - chrono::Days::new(1)).to_string(),
                                 "to": (today + chrono::Days::new(1)).to_string(),
                                 "reason": "test freeze" }],
                    "hotfix_bypasses_freeze": bypass }),
        )
    };
    let hotfix = json!({ "trigger": "manual", "risk": "low", "branch": "hotfix/urgent" });
    let allowed = engine.deploy_in(hotfix.clone(), frozen("v3", true)).await;
    assert_eq!(allowed.state, RunState::Succeeded, "{}", allowed.error());
    assert!(
        allowed.outputs()["window"]["passed"]
            .as_str()
            .is_some_and(|p| p.contains("hotfix_bypasses_freeze")),
        "{}",
        allowed.outputs()["window"]
    );
    let (refused, status) = tokio::join!(
        engine.deploy_in(hotfix, frozen("v4", false)),
        answer_held_canary(&engine, &service, "approve")
    );
    assert!(status.contains("deploy freeze: test freeze"), "{status}");
    assert_eq!(refused.state, RunState::Succeeded, "{}", refused.error());
    assert!(
        refused
            .logs
            .iter()
            .any(|l| l.contains("does not set `hotfix_bypasses_freeze`")),
        "{}",
        refused.logs.join("\n")
    );
    let state = engine
        .engine
        .store()
        .deployment(&service)
        .expect("state")
        .unwrap_or(Value::Null);
    assert_eq!(state["waiting"], json!([]), "{state:#}");
    assert_eq!(state["active"]["version"], "v4");
}

/// After a deploy that passed its health checks, the monitor watches the new release against
/// the previous one (kept running out of rotation) and rolls back on its own: a release that
/// answers 5% errors, then a release whose replica crashes during the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_rolls_back_a_bad_or_crashing_release() {
    let image = DemoImage::build("monitor");
    let service = format!("mon{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let img = image.image();
    let watch = json!({ "window": "20s", "interval": "300ms", "min_samples": 20 });

    let first = engine
        .deploy("low", with(&service, &img, &proxy, "v1", json!({})))
        .await;
    assert_eq!(
        first.state,
        RunState::Succeeded,
        "{}\n{}",
        first.error(),
        first.logs.join("\n")
    );
    let load = Load::start(proxy.port, 6, Duration::from_secs(240));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // v2 answers 5% errors: its health checks pass, so the rolling deploy succeeds; the monitor
    // compares it with v1 and rolls back.
    let mark = load.len();
    let (deploy, monitor) = engine
        .deploy_and_monitor(
            "medium",
            with(
                &service,
                &img,
                &proxy,
                "v2",
                json!({ "env": { "DEMO_ERROR_RATE": "0.05" } }),
            ),
            watch.clone(),
        )
        .await;
    assert_eq!(
        deploy.step.state.as_str(),
        "succeeded",
        "{}\n{}",
        deploy.error(),
        deploy.logs.join("\n")
    );
    assert_eq!(
        monitor.state,
        RunState::Failed,
        "{}",
        monitor.logs.join("\n")
    );
    let error = monitor.error();
    println!("monitor of v2 (5% errors): {error}");
    assert!(
        error.contains("rolled back to v1") && error.contains("error"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failed, versions) = summarize(&load.since(mark));
    println!("v2 under the monitor: {failed} failed requests, answers by version {versions:?}");
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.ok && a.version == "v1"),
        "v1 serves all traffic again"
    );
    let record = engine.history(&service).last().cloned().expect("history");
    assert_eq!(
        (record["outcome"].as_str(), record["strategy"].as_str()),
        (Some("rolled_back"), Some("manual")),
        "{record}"
    );
    assert!(
        record["reason"].as_str().unwrap_or("").contains("monitor:"),
        "{record}"
    );

    // v3 is good, but one of its replicas dies during the window.
    let engine_ref = &engine;
    let monitored = engine_ref.deploy_and_monitor(
        "medium",
        with(&service, &img, &proxy, "v3", json!({})),
        watch,
    );
    let killer = async {
        let mut killed = None;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let output = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=cairn.deploy.service={service}"),
                    "--filter",
                    "label=cairn.deploy.version=v3",
                ])
                .output()
                .expect("docker ps");
            let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if ids.len() == 2
                && load
                    .since(load.len().saturating_sub(10))
                    .iter()
                    .all(|a| a.version == "v3")
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = std::process::Command::new("docker")
                    .args(["kill", &ids[0]])
                    .output();
                killed = Some(ids[0].clone());
                break;
            }
        }
        killed
    };
    let ((deploy, monitor), killed) = tokio::join!(monitored, killer);
    assert!(killed.is_some(), "v3's replicas never served all traffic");
    assert_eq!(
        deploy.step.state.as_str(),
        "succeeded",
        "{}",
        deploy.error()
    );
    let error = monitor.error();
    println!("monitor of v3 with a killed replica: {error}");
    assert!(
        error.contains("crashed") && error.contains("rolled back to v1"),
        "{error}\n{}",
        monitor.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.ok && a.version == "v1"),
        "v1 serves all traffic again"
    );
    drop(load);
}

/// The canary analysis reading a real Prometheus server's HTTP API instead of the replicas'
/// endpoints: Cairn lists the replicas in the server's `file_sd_configs` file, Prometheus
/// scrapes them, and a canary answering 5% errors is still caught and rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_analysis_through_a_prometheus_server() {
    let image = DemoImage::build("prometheus");
    let service = format!("prom{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let prometheus = Prometheus::start();
    let engine = TestEngine::new();
    let img = image.image();
    let source =
        json!({ "prometheus": { "url": prometheus.url, "targets_file": prometheus.targets_file } });

    let first = engine
        .deploy("low", with(&service, &img, &proxy, "v1", source.clone()))
        .await;
    assert_eq!(
        first.state,
        RunState::Succeeded,
        "{}\n{}",
        first.error(),
        first.logs.join("\n")
    );
    let targets = std::fs::read_to_string(&prometheus.targets_file).expect("targets file");
    assert_eq!(
        targets.matches("cairn_replica").count(),
        2,
        "v1's replicas are listed for Prometheus: {targets}"
    );
    let load = Load::start(proxy.port, 6, Duration::from_secs(240));
    // Prometheus batches discovery updates (5 s) before it scrapes new targets.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut settings = canary_settings();
    settings["monitor_window"] = json!("30s");
    settings["analysis_interval"] = json!("1s");
    if let (Some(target), Some(more)) = (settings.as_object_mut(), source.as_object()) {
        target.extend(more.clone());
    }
    let bad = engine
        .deploy(
            "high",
            with(&service, &img, &proxy, "v2", {
                let mut extra = settings;
                extra["env"] = json!({ "DEMO_ERROR_RATE": "0.05" });
                extra
            }),
        )
        .await;
    assert_eq!(bad.state, RunState::Failed, "{}", bad.logs.join("\n"));
    let error = bad.error();
    println!("canary through Prometheus: {error}");
    assert!(
        error.contains("canary analysis failed") && error.contains("error rate"),
        "{error}\n{}",
        bad.logs.join("\n")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        load.since(load.len().saturating_sub(20))
            .iter()
            .all(|a| a.ok && a.version == "v1"),
        "v1 serves all traffic again"
    );
    drop(load);
}

/// A canary deploy with its monitor, and `cairn rollback` of the release it replaces, race on
/// one service: the service lock lets one traffic change through at a time, the rollback that
/// finds the service busy is refused with the holder named, and at the end the history agrees
/// with the active release and the proxy serves exactly that one release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_monitor_and_rollback_racing_leave_one_release() {
    let image = DemoImage::build("race");
    let service = format!("race{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let img = image.image();
    for version in ["v1", "v2"] {
        let run = engine
            .deploy("low", with(&service, &img, &proxy, version, json!({})))
            .await;
        assert_eq!(run.state, RunState::Succeeded, "{}", run.error());
    }
    assert_eq!(engine.history(&service).len(), 2);
    let v2_run_id = 2;
    let load = Load::start(proxy.port, 4, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut settings = canary_settings();
    settings["monitor_window"] = json!("3s");
    let deploying = engine.deploy_and_monitor(
        "high",
        with(&service, &img, &proxy, "v3", settings),
        json!({ "window": "3s", "interval": "500ms", "min_samples": 20 }),
    );
    let rolling_back = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cairn_engine::agents::deploy::rollback_run(engine.engine.store(), v2_run_id, "race").await
    };
    let ((deploy, monitor), rollback) = tokio::join!(deploying, rolling_back);
    let busy = rollback.expect_err("the rollback meets the canary's lock");
    assert!(
        busy.to_string().contains("busy") && busy.to_string().contains("deploy run"),
        "the refusal names the holder: {busy}"
    );
    assert_eq!(deploy.state, RunState::Succeeded, "{}", deploy.error());
    assert_eq!(
        monitor.step.state.as_str(),
        "succeeded",
        "{}",
        monitor.error()
    );

    // Now the monitor is done: a manual rollback and a second one at once.
    let store = engine.engine.store();
    let v3_run_id = deploy.run_id;
    let (first, second) = tokio::join!(
        cairn_engine::agents::deploy::rollback_run(store, v3_run_id, "first"),
        cairn_engine::agents::deploy::rollback_run(store, v3_run_id, "second"),
    );
    // One rolls back; the other finds the service busy, or v3 no longer active.
    let succeeded = [&first, &second]
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|reports| !reports.is_empty()))
        .count();
    assert_eq!(succeeded, 1, "{first:?} {second:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mark = load.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recent = load.since(mark);
    let answers = load.stop().await;
    let (failed, _) = summarize(&answers);
    let state = store
        .deployment(&service)
        .expect("state")
        .expect("deployed");
    let active = state["active"]["version"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!recent.is_empty());
    assert!(
        recent.iter().all(|a| a.ok && a.version == active),
        "the proxy serves exactly the active release {active}: {:?}",
        summarize(&recent)
    );
    let history = engine.history(&service);
    let outcomes: Vec<String> = history
        .iter()
        .map(|r| format!("{} {}", r["version"], r["outcome"]))
        .collect();
    assert!(state["in_progress"].is_null(), "{state:#}");
    assert_eq!(
        history
            .iter()
            .filter(|r| r["outcome"] == "rolled_back" && r["strategy"] == "manual")
            .count(),
        succeeded,
        "one record per rollback that happened: {outcomes:?}"
    );
    println!("race: history {outcomes:?}; {failed} failed requests; active {active}");
}
