//! The demo's story (`scripts/demo.sh`) under the conditions that broke it: thin traffic (one
//! client pausing between requests, about the demo's curl loop) on a machine busy with other
//! processes (a CPU burner per core, as a parallel `cargo build` would be). The demo's canary
//! settings: steps 10 → 50 → 100 %, a 30 s window, 1 s analysis, 50 samples per side.
//!
//! The story: a good release (the demo's migration) is promoted — its thin first step waits
//! for traffic instead of ending inconclusive — and a release answering 5% of requests with
//! errors (the demo's 0.2.0) is rolled back *for its error rate*.
//!
//! Needs Docker and `haproxy` on the PATH.

mod deploy_support;

use std::time::Duration;

use cairn_engine::store::RunState;
use deploy_support::{Containers, CpuBurner, DemoImage, Haproxy, Load, TestEngine, summarize};
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
        "health_timeout": "20s",
        "keep_previous": "10m",
    });
    if let (Some(target), Value::Object(more)) = (with.as_object_mut(), extra) {
        target.extend(more);
    }
    with
}

/// The demo's canary (`scripts/demo.sh` rewrites the AI pipeline's deploy step to this).
fn demo_canary(env: Value) -> Value {
    json!({
        "strategy": "canary",
        "canary_steps": [10, 50, 100],
        "monitor_window": "30s",
        "analysis_interval": "1s",
        "min_samples": 50,
        "env": env,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_story_holds_on_a_busy_machine_with_thin_traffic() {
    let image = DemoImage::build("story");
    let service = format!("story{}", std::process::id());
    let _containers = Containers {
        service: service.clone(),
    };
    let proxy = Haproxy::start();
    let engine = TestEngine::new();
    let img = image.image();

    let first = engine
        .deploy(
            "low",
            with(
                &service,
                &img,
                &proxy,
                "v1",
                json!({ "env": { "DEMO_VERSION": "v1" } }),
            ),
        )
        .await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.error());

    let burner = CpuBurner::start();
    // One client, 25 ms between requests: at most ~40 requests/s, the demo's order.
    let load = Load::paced(
        proxy.port,
        1,
        Duration::from_millis(25),
        Duration::from_secs(600),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The migration: a good release, promoted.
    let mark = load.len();
    let good = engine
        .deploy(
            "high",
            with(
                &service,
                &img,
                &proxy,
                "v2",
                demo_canary(json!({ "DEMO_VERSION": "v2" })),
            ),
        )
        .await;
    let (failed, versions) = summarize(&load.since(mark));
    let seconds = load.started.elapsed().as_secs_f64();
    println!(
        "good release: {:?} in {} ms; {failed} failed requests, {versions:?}; {:.1} requests/s overall",
        good.state,
        good.outputs()["duration_ms"],
        load.len() as f64 / seconds
    );
    for step in good.outputs()["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  step {} at {}% after {} s: {} (canary {} / baseline {} requests)",
            step["step"],
            step["share"],
            step["seconds"],
            step["verdict"]["outcome"],
            step["verdict"]["canary"]["requests"],
            step["verdict"]["baseline"]["requests"]
        );
    }
    assert_eq!(
        good.state,
        RunState::Succeeded,
        "the good release must be promoted: {}\n{}",
        good.error(),
        good.logs.join("\n")
    );
    let verdicts = good.outputs()["verdicts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(verdicts.len(), 3, "{verdicts:#?}");
    assert!(
        verdicts.iter().all(|v| v["verdict"]["outcome"] == "pass"),
        "{verdicts:#?}"
    );
    assert_eq!(failed, 0, "{versions:?}");

    // The bad release: 5% of requests answered 500. Rolled back for its error rate.
    let mark = load.len();
    let bad = engine
        .deploy(
            "high",
            with(
                &service,
                &img,
                &proxy,
                "v3",
                demo_canary(json!({ "DEMO_VERSION": "v3", "DEMO_ERROR_RATE": "0.05" })),
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (failed, versions) = summarize(&load.since(mark));
    let record = engine
        .history(&service)
        .last()
        .cloned()
        .unwrap_or(Value::Null);
    let last_verdict = record["details"]["verdicts"]
        .as_array()
        .and_then(|v| v.last())
        .cloned()
        .unwrap_or(Value::Null);
    println!(
        "bad release: {:?}; {}; rollback {} ms after the first anomalous sample; verdict at canary {} / baseline {} requests; {failed} failed requests (its 500s), {versions:?}",
        bad.state,
        bad.error(),
        record["rollback_ms"],
        last_verdict["verdict"]["canary"]["requests"],
        last_verdict["verdict"]["baseline"]["requests"],
    );
    assert_eq!(bad.state, RunState::Failed, "{}", bad.logs.join("\n"));
    assert_eq!(record["outcome"], "rolled_back", "{record:#}");
    let error = bad.error();
    assert!(
        error.contains("canary analysis failed")
            && error.contains("error rate")
            && !error.contains("inconclusive"),
        "rolled back for its error rate, not for thin traffic: {error}\n{}",
        bad.logs.join("\n")
    );
    assert!(
        load.since(load.len().saturating_sub(10))
            .iter()
            .all(|a| a.ok && a.version == "v2"),
        "v2 serves all traffic again"
    );
    drop(burner);
    load.stop().await;
}
