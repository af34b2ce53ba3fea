//! The web dashboard in a real browser: headless Chromium (Debian's `chromium`) driven through
//! `chromedriver` (Debian's `chromium-driver`) with the fantoccini WebDriver client, against
//! `cairn serve --listen` on 127.0.0.1. Both are installed by `scripts/setup.sh`.
//!
//! What it proves: the dashboard asks for a token and signs in with it (a cookie); the runs page
//! shows runs with their state; a run's page draws its DAG as SVG and its log lines arrive live
//! (lines written after the page loaded appear without a reload) and the step states follow;
//! the deployments page plots a canary analysis and names the decision; the costs page shows
//! tokens by tier; the flaky-tests page lists a flaky test; the test-proposals page shows each
//! proposal's decision and reason; a form without the CSRF token is
//! refused; the runs page fits a phone's width. A screenshot of each page is saved under
//! `target/tmp/dashboard-screenshots/`.

mod common_api;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use cairn_tests::Sandbox;
use common_api::{serve, token};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_chromedriver() -> (Driver, String) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed by scripts/setup.sh (Debian's chromium-driver)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900"
        ] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .expect("failed to start a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn snap(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
}

/// The page's visible text.
async fn text(client: &Client) -> String {
    client
        .find(Locator::Css("body"))
        .await
        .expect("a body")
        .text()
        .await
        .expect("its text")
}

/// Waits until the text of `css` contains `needle`.
async fn wait_for_text(client: &Client, css: &str, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(found) = element.text().await
            && found.contains(needle)
        {
            return found;
        }
        if Instant::now() > deadline {
            let page = text(client).await;
            panic!("`{needle}` did not appear in {css} within {limit:?}; the page shows:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deployments, model calls and test results as the agents would have stored them.
fn seed(sandbox: &Sandbox) {
    let conn = sandbox.db();
    let verdict = |outcome: &str, canary_p95: f64, canary_err: f64| {
        json!({
            "outcome": outcome, "reasons": [],
            "canary": { "error_rate": canary_err, "latency_p95_ms": canary_p95 },
            "baseline": { "error_rate": 0.01, "latency_p95_ms": 120.0 },
        })
    };
    let state = json!({
        "active": { "key": "k1", "version": "v41", "image": "shop:v41", "replicas": [], "since_ms": 1 },
        "retired": [], "in_progress": null,
        "history": [{
            "key": "k2", "version": "v42", "strategy": "canary", "outcome": "rolled_back",
            "reason": "canary latency p95 3.1x the baseline's", "rollback_ms": 800,
            "at_ms": 1_764_000_000_000_i64,
            "details": { "verdicts": [verdict("pass", 125.0, 0.01), verdict("inconclusive", 240.0, 0.02), verdict("fail", 380.0, 0.09)], "events": [] }
        }]
    });
    conn.execute(
        "INSERT INTO deployments (service, state, updated_at) VALUES ('shop', ?1, 1764000000000)",
        [state.to_string()],
    )
    .expect("seed deployment");
    for (index, tier, tokens) in [(0, "local", 900), (1, "remote", 400)] {
        conn.execute(
            "INSERT INTO llm_calls (run_id, step_id, call_index, task, tier, cache_hit, prompt_tokens,
                 completion_tokens, cost_micros, saved_micros, latency_ms, result, fallbacks, at)
             VALUES (1, 'analyze', ?1, 'assess_risk', ?2, 0, ?3, 50, 1200, 0, 300, 'ok', '[]', 1764000000000)",
            rusqlite::params![index, tier, tokens],
        )
        .expect("seed model call");
    }
    for outcome in ["passed", "failed", "passed", "flaky"] {
        conn.execute(
            "INSERT INTO test_results (run_id, step_id, repo, commit_id, test_id, outcome, at)
             VALUES (1, 'test', '/srv/app', 'abc', 'tests::checkout_total', ?1, 1764000000000)",
            [outcome],
        )
        .expect("seed test result");
    }
    for (function, status, reason) in [
        ("total", "accepted", "accepted"),
        ("discount", "rejected", "passes_on_parent"),
    ] {
        conn.execute(
            "INSERT INTO test_proposals (run_id, step_id, repo, commit_id, source_path, function,
                 test_path, status, reason, detail, code, tier, at)
             VALUES (1, 'test', '/srv/app', 'abcdef0123456789', 'src/cart.py', ?1,
                 'tests/test_cart_generated.py', ?2, ?3, '', 'def test_it(): assert True', 'local',
                 1764000000000)",
            rusqlite::params![function, status, reason],
        )
        .expect("seed test proposal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_runs_live_logs_deployments_costs_and_flaky_tests() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path("flows")).expect("create flows/");
    sandbox.write(
        "flows/drip.yaml",
        "name: drip\nsteps:\n  - id: first\n    run: echo 'first step done'\n  - id: drip\n    \
         depends_on: first\n    run: |\n      for i in 1 2 3 4 5 6; do echo \"drip line $i\"; sleep 1; done\n",
    );
    let flows = sandbox.path("flows").display().to_string();
    let writer = token(&sandbox, "write");
    let service = tokio::task::block_in_place(|| serve(&sandbox, &[&flows, "-q"], &[]));
    seed(&sandbox);
    let (_driver, webdriver) = tokio::task::block_in_place(start_chromedriver);
    let client = browser(&webdriver).await;
    let base = service.base.clone();

    // Not signed in: the sign-in page.
    client.goto(&format!("{base}/")).await.expect("open");
    let url = client.current_url().await.expect("url");
    assert!(url.as_str().ends_with("/login"), "{url}");
    assert!(text(&client).await.contains("API token"));
    snap(&client, "login").await;
    let field = client
        .find(Locator::Css("#token"))
        .await
        .expect("token field");
    field.send_keys("cairn_wrong").await.expect("type");
    client
        .find(Locator::Css("form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    wait_for_text(&client, "main", "not known", Duration::from_secs(10)).await;
    let field = client
        .find(Locator::Css("#token"))
        .await
        .expect("token field");
    field.send_keys(&writer).await.expect("type");
    client
        .find(Locator::Css("main form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    wait_for_text(&client, "main", "Runs", Duration::from_secs(10)).await;

    // Start a run, open its page while it is still at its first lines.
    let started = tokio::task::block_in_place(|| {
        service.post(
            "/api/v1/runs",
            Some(&writer),
            &json!({ "workflow": "drip" }),
        )
    });
    assert_eq!(started.status().as_u16(), 201);
    let run_id = tokio::task::block_in_place(|| started.json::<serde_json::Value>()).expect("JSON")
        ["run_id"]
        .as_i64()
        .expect("run id");
    client
        .goto(&format!("{base}/runs/{run_id}"))
        .await
        .expect("open run");
    let at_load = client
        .find(Locator::Css("#logs"))
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert!(
        !at_load.contains("drip line 6"),
        "the run was already over: {at_load}"
    );
    let svg = client
        .find(Locator::Css("svg.dag"))
        .await
        .expect("the DAG is drawn");
    let nodes = svg.find_all(Locator::Css("g.node")).await.expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(
        svg.find_all(Locator::Css("line.edge"))
            .await
            .expect("edges")
            .len(),
        1
    );
    wait_for_text(&client, "#logs", "drip line 2", Duration::from_secs(60)).await;
    snap(&client, "run-live").await;
    let logs = wait_for_text(&client, "#logs", "drip line 6", Duration::from_secs(60)).await;
    assert!(logs.contains("first | first step done"), "{logs}");
    wait_for_text(
        &client,
        "#logs-status",
        "succeeded",
        Duration::from_secs(60),
    )
    .await;
    wait_for_text(&client, "#run-state", "succeeded", Duration::from_secs(30)).await;
    let node = client
        .find(Locator::Css("g.node[data-step=drip]"))
        .await
        .expect("drip node");
    let class = node.attr("class").await.expect("class").unwrap_or_default();
    assert!(class.contains("state-succeeded"), "{class}");
    snap(&client, "run-done").await;

    // The runs list.
    client.goto(&format!("{base}/")).await.expect("open runs");
    let page = text(&client).await;
    assert!(
        page.contains(&format!("#{run_id}")) && page.contains("drip"),
        "{page}"
    );
    assert!(page.contains("succeeded"), "{page}");
    snap(&client, "runs").await;

    // Deployments: the canary analysis plotted, the decision named.
    client
        .goto(&format!("{base}/deployments"))
        .await
        .expect("open deployments");
    let page = text(&client).await;
    assert!(
        page.contains("shop") && page.contains("v42") && page.contains("rolled_back"),
        "{page}"
    );
    assert!(
        page.contains("Latency p95") && page.contains("Error rate"),
        "{page}"
    );
    let lines = client
        .find_all(Locator::Css("figure.chart polyline"))
        .await
        .expect("charts");
    assert_eq!(lines.len(), 4, "two charts, canary and baseline each");
    snap(&client, "deployments").await;

    // Costs and flaky tests.
    client
        .goto(&format!("{base}/costs"))
        .await
        .expect("open costs");
    let page = text(&client).await;
    assert!(
        page.contains("local") && page.contains("remote") && page.contains("assess_risk"),
        "{page}"
    );
    snap(&client, "costs").await;
    client
        .goto(&format!("{base}/flaky"))
        .await
        .expect("open flaky");
    let page = text(&client).await;
    assert!(page.contains("tests::checkout_total"), "{page}");
    snap(&client, "flaky").await;
    client
        .find(Locator::LinkText("Test proposals"))
        .await
        .expect("the navigation links the test proposals")
        .click()
        .await
        .expect("open test proposals");
    let page = wait_for_text(
        &client,
        "main",
        "src/cart.py:discount",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        page.contains("src/cart.py:total")
            && page.contains("accepted")
            && page.contains("passes on parent"),
        "{page}"
    );
    snap(&client, "test-proposals").await;

    // A phone: the runs page fits its width.
    client.set_window_size(390, 844).await.expect("resize");
    client.goto(&format!("{base}/")).await.expect("open runs");
    let overflow = client
        .execute(
            "return document.body.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("measure");
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than the phone: {overflow}"
    );
    snap(&client, "runs-phone").await;

    // A form posted without the session's CSRF token is refused.
    let forged = tokio::task::block_in_place(|| {
        service
            .client
            .post(service.url(&format!("/runs/{run_id}/cancel")))
            .header("cookie", format!("cairn_session={writer}"))
            .form(&[("csrf", "forged")])
            .send()
            .expect("POST")
    });
    assert_eq!(forged.status().as_u16(), 403);
    client.close().await.expect("close the browser");
}
