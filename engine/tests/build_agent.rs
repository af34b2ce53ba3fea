//! The build agent against the real Docker engine: FROM-scratch images around static binaries
//! compiled here, driven through real workflow runs with a real git repository as the
//! workspace. Every image a test makes is removed when it ends.

mod build_support;

use std::process::Command;

use build_support::{Images, ServiceRepo, TestEngine, compile_static, hello_c};
use cairn_engine::agents::build::{Severity, review_dockerfile};
use cairn_engine::store::{RunState, StepState};
use serde_json::json;

/// Full build, then a cached rebuild after an application-only change, then a full rebuild
/// after a dependency change: one repository, one history, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_cached_then_dependency_change() {
    let images = Images::new("cycle");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ServiceRepo::create(&dir.path().join("service"));
    let engine = TestEngine::new();
    let with = json!({ "image": images.repository, "max_image_size": "50MB" });

    // 1. First build: nothing to reuse, so full.
    let first_commit = git_head(&repo);
    let full = engine.build(&repo.path, &first_commit, with.clone()).await;
    assert_eq!(
        full.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        full.step.error,
        full.logs.join("\n")
    );
    let out = full.outputs();
    assert_eq!(out["decision"], "full", "{out:#}");
    assert!(
        out["reason"].as_str().unwrap_or("").contains("first build"),
        "{}",
        out["reason"]
    );
    let sha_tag = format!("{}:{}", images.repository, &first_commit[..12]);
    let branch_tag = format!("{}:main", images.repository);
    assert_eq!(out["tags"], json!([sha_tag, branch_tag]));
    let id = out["id"].as_str().unwrap_or("").to_string();
    assert!(id.starts_with("sha256:"), "{out:#}");
    assert_eq!(
        Images::id_of(&sha_tag).as_deref(),
        Some(id.as_str()),
        "the sha tag exists"
    );
    assert_eq!(
        Images::id_of(&branch_tag).as_deref(),
        Some(id.as_str()),
        "the branch tag exists"
    );
    assert!(
        out["size"].as_u64().unwrap_or(0) > 500_000,
        "two static binaries: {}",
        out["size"]
    );
    assert!(
        out["layers"].as_array().is_some_and(|l| l.len() >= 3),
        "{}",
        out["layers"]
    );
    assert_eq!(
        out["context"]["excluded"], 1,
        ".dockerignore left notes/ out: {}",
        out["context"]
    );
    assert_eq!(
        out["review"]["findings"],
        json!([]),
        "the fixture Dockerfile is clean"
    );
    assert_eq!(out["review"]["proposal"]["status"], "none");
    assert!(
        full.logs
            .iter()
            .any(|l| l.starts_with("Step 4/") && l.ends_with(": RUN [\"/install\"]")),
        "build log streamed:\n{}",
        full.logs.join("\n")
    );
    assert!(
        !full.logs.iter().any(|l| l.contains("Using cache")),
        "a full build uses no cache"
    );
    let output = Command::new("docker")
        .args(["run", "--rm", &sha_tag])
        .output()
        .expect("docker run");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello v1");
    let full_ms = out["duration_ms"].as_u64().unwrap_or(0);

    // 2. Application-only change: the dependency layers come from the cache.
    compile_static(&hello_c("hello v2"), &repo.path.join("app"));
    let second_commit = repo.commit("app: say v2");
    let cached = engine.build(&repo.path, &second_commit, with.clone()).await;
    assert_eq!(
        cached.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        cached.step.error,
        cached.logs.join("\n")
    );
    let out = cached.outputs();
    assert_eq!(out["decision"], "cached", "{out:#}");
    assert!(
        out["reason"].as_str().unwrap_or("").contains("app"),
        "{}",
        out["reason"]
    );
    let log = cached.logs.join("\n");
    assert!(
        step_used_cache(
            &cached.logs,
            ": COPY requirements.txt /deps/requirements.txt"
        ),
        "the deps layer came from the cache:\n{log}"
    );
    assert!(
        step_used_cache(&cached.logs, ": RUN [\"/install\"]"),
        "the install step came from the cache:\n{log}"
    );
    assert!(
        !step_used_cache(&cached.logs, ": COPY app /app"),
        "the app layer was rebuilt:\n{log}"
    );
    assert!(
        !log.contains("dependencies installed"),
        "the installer did not run again:\n{log}"
    );
    assert_eq!(out["cache"]["cache_hits"], 3, "{}", out["cache"]);
    let cached_ms = out["duration_ms"].as_u64().unwrap_or(0);
    println!("full build {full_ms} ms, cached rebuild {cached_ms} ms");
    assert!(
        cached_ms < full_ms,
        "cached {cached_ms} ms should beat full {full_ms} ms (the 1.5 s install is skipped)"
    );
    assert_eq!(out["last_full_build_ms"], full_ms);
    assert_eq!(
        out["time_saved_ms"],
        json!(full_ms as i64 - cached_ms as i64)
    );
    assert_eq!(
        out["previous"]["id"], id,
        "compared against the branch's previous image"
    );
    assert!(out["size_change"].is_i64(), "{}", out["size_change"]);
    let second_id = out["id"].as_str().unwrap_or("").to_string();
    assert_eq!(
        Images::id_of(&branch_tag).as_deref(),
        Some(second_id.as_str()),
        "the branch tag moved"
    );
    assert_eq!(
        Images::id_of(&sha_tag).as_deref(),
        Some(id.as_str()),
        "the old sha tag stays"
    );

    // 3. Dependency change: a full rebuild, naming the file.
    std::fs::write(repo.path.join("requirements.txt"), "flask==3.1.0\n").expect("bump");
    let third_commit = repo.commit("deps: bump flask");
    let rebuilt = engine.build(&repo.path, &third_commit, with.clone()).await;
    assert_eq!(
        rebuilt.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        rebuilt.step.error,
        rebuilt.logs.join("\n")
    );
    let out = rebuilt.outputs();
    assert_eq!(out["decision"], "full", "{out:#}");
    assert!(
        out["reason"]
            .as_str()
            .unwrap_or("")
            .contains("requirements.txt"),
        "{}",
        out["reason"]
    );
    assert_eq!(out["cache"]["triggers"], json!(["requirements.txt"]));
    assert!(
        !rebuilt.logs.iter().any(|l| l.contains("Using cache")),
        "no cache on a full build"
    );
    assert!(
        rebuilt
            .logs
            .iter()
            .any(|l| l.contains("dependencies installed")),
        "the installer ran again"
    );
    println!("dependency rebuild {} ms", out["duration_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_over_the_size_limit_fails_the_step() {
    let images = Images::new("limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ServiceRepo::create(&dir.path().join("service"));
    let engine = TestEngine::new();
    let commit = git_head(&repo);
    let run = engine
        .build(
            &repo.path,
            &commit,
            json!({ "image": images.repository, "max_image_size": "1KB" }),
        )
        .await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.step.state, StepState::Failed);
    let error = run.step.error.clone().unwrap_or_default();
    assert!(
        error.contains("over the limit max_image_size 1KB"),
        "{error}"
    );
    assert!(
        error.contains(&format!("{}:{}", images.repository, &commit[..12])),
        "names the image: {error}"
    );
    assert!(
        Images::id_of(&format!("{}:main", images.repository)).is_none(),
        "the branch tag is not moved to an oversized image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ServiceRepo::create(&dir.path().join("service"));
    let engine = TestEngine::new();
    let commit = git_head(&repo);
    let run = engine
        .build(
            &repo.path,
            &commit,
            json!({ "docker_host": "unix:///nonexistent.sock" }),
        )
        .await;
    assert_eq!(run.state, RunState::Failed);
    let error = run.step.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("cannot reach the Docker engine at unix:///nonexistent.sock: "),
        "{error}"
    );
}

/// Review findings reach the build report end to end, and the real local model (through the
/// router, recorded in the run's call history) explains them; secret values never appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_findings_are_reported_and_explained_by_the_local_model() {
    let images = Images::new("review");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ServiceRepo::create(&dir.path().join("service"));
    // No USER, a secret in ENV, and no .dockerignore: still buildable FROM scratch.
    std::fs::write(
        repo.path.join("Dockerfile"),
        "FROM scratch\nENV API_TOKEN=tok-abc123\nCOPY app /app\nENTRYPOINT [\"/app\"]\n",
    )
    .expect("Dockerfile");
    std::fs::remove_file(repo.path.join(".dockerignore")).expect("remove .dockerignore");
    let commit = repo.commit("a Dockerfile with problems");
    let engine = TestEngine::with_local_model();
    let run = engine
        .build(&repo.path, &commit, json!({ "image": images.repository }))
        .await;
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        run.step.error,
        run.logs.join("\n")
    );
    let review = &run.outputs()["review"];
    let rules: Vec<(&str, Option<u64>)> = review["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| (f["rule"].as_str().unwrap_or(""), f["line"].as_u64()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        rules,
        vec![
            ("missing-dockerignore", None),
            ("runs-as-root", Some(1)),
            ("secret-in-build-config", Some(2))
        ],
        "{review:#}"
    );
    // The local model answered; its text is reported unless it looped, in which case the
    // findings' own text stands and the note says why (never a silent substitution).
    let explanation = review["explanation"].as_str().unwrap_or("");
    assert!(!explanation.trim().is_empty(), "{review:#}");
    match review["explained_by"].as_str() {
        Some("local") => assert!(review["explanation_note"].is_null()),
        Some("rules") => assert!(
            review["explanation_note"]
                .as_str()
                .is_some_and(|n| n.starts_with("the local tier's explanation was discarded")),
            "{review:#}"
        ),
        other => panic!("unexpected tier {other:?}: {review:#}"),
    }
    println!(
        "explained by {}: {explanation}\nnote: {}",
        review["explained_by"], review["explanation_note"]
    );
    assert!(
        !review["findings"].to_string().contains("tok-abc123"),
        "the secret's value is not repeated"
    );
    let calls = engine.engine.store().calls(run.run_id).expect("calls");
    assert!(
        calls
            .iter()
            .any(|c| c.task == "review_dockerfile" && c.tier == "local" && c.step_id == "build"),
        "{calls:?}"
    );
}

/// The demo service the deploy agent ships: built through the agent (full, then cached after
/// a source change), reviewed clean, and serving `/`, `/healthz` and `/metrics`; with
/// `DEMO_ERROR_RATE=1` it is the "bad version" a monitor must catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_service_builds_and_serves() {
    let images = Images::new("demo");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = build_support::demo_service_repo(&dir.path().join("demo-service"));
    let engine = TestEngine::new();
    let with = json!({ "image": images.repository, "max_image_size": "20MB" });
    let full = engine
        .build(&repo.path, &git_head(&repo), with.clone())
        .await;
    assert_eq!(
        full.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        full.step.error,
        full.logs.join("\n")
    );
    let out = full.outputs();
    assert_eq!(out["decision"], "full");
    assert_eq!(
        out["review"]["findings"],
        json!([]),
        "the demo Dockerfile is clean"
    );
    assert_eq!(
        out["context"]["files"], 3,
        "only the binary, the Dockerfile and .dockerignore are sent: {}",
        out["context"]
    );
    let full_ms = out["duration_ms"].as_u64().unwrap_or(0);

    let main_rs = repo.path.join("src/main.rs");
    let text = std::fs::read_to_string(&main_rs).expect("read main.rs");
    std::fs::write(
        &main_rs,
        text.replace("hello from demo-service", "hello again from demo-service"),
    )
    .expect("edit");
    repo.build_demo_binary();
    let commit = repo.commit("demo: new greeting");
    let cached = engine.build(&repo.path, &commit, with).await;
    assert_eq!(
        cached.state,
        RunState::Succeeded,
        "error: {:?}\n{}",
        cached.step.error,
        cached.logs.join("\n")
    );
    let out = cached.outputs();
    assert_eq!(out["decision"], "cached", "{}", out["reason"]);
    println!(
        "demo service: full build {full_ms} ms, cached rebuild {} ms",
        out["duration_ms"]
    );
    let image = out["image"].as_str().unwrap_or("").to_string();

    let good = build_support::Container::start(&image, &[("DEMO_VERSION", "v2")]);
    assert_eq!(good.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(
        good.get("/"),
        (200, "hello again from demo-service v2\n".to_string())
    );
    let (status, metrics) = good.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("demo_http_requests_total{path=\"/\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("demo_http_request_duration_seconds_bucket{le=\"+Inf\"}"),
        "{metrics}"
    );

    let bad = build_support::Container::start(
        &image,
        &[("DEMO_ERROR_RATE", "1"), ("DEMO_EXTRA_LATENCY_MS", "300")],
    );
    assert_eq!(
        bad.get("/healthz").0,
        200,
        "a bad version still passes its health check"
    );
    let started = std::time::Instant::now();
    assert_eq!(bad.get("/").0, 500);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "extra latency applied"
    );
    let (_, metrics) = bad.get("/metrics");
    assert!(
        metrics.contains("demo_http_requests_total{path=\"/\",status=\"500\"} 1"),
        "{metrics}"
    );
}

/// Each review rule on a Dockerfile crafted to break it, with the line it must point at.
#[test]
fn review_rules_fire_on_crafted_dockerfiles() {
    let cases: &[(&str, &str, Option<usize>, Severity)] = &[
        (
            "base-image-unpinned",
            "FROM ubuntu\nUSER 1000\n",
            Some(1),
            Severity::Warning,
        ),
        (
            "base-image-unpinned",
            "FROM node:latest\nUSER node\n",
            Some(1),
            Severity::Warning,
        ),
        (
            "runs-as-root",
            "FROM alpine:3.20\nRUN echo hi\n",
            Some(1),
            Severity::Warning,
        ),
        (
            "runs-as-root",
            "FROM alpine:3.20\nUSER root\n",
            Some(2),
            Severity::Warning,
        ),
        (
            "secret-in-build-config",
            "FROM alpine:3.20\nENV API_TOKEN=abc123\nUSER 1\n",
            Some(2),
            Severity::Error,
        ),
        (
            "secret-in-build-config",
            "FROM alpine:3.20\nARG DB_PASSWORD=hunter2\nUSER 1\n",
            Some(2),
            Severity::Error,
        ),
        (
            "secret-in-build-config",
            "FROM alpine:3.20\nENV AWS_SECRET_ACCESS_KEY wJalr\nUSER 1\n",
            Some(2),
            Severity::Error,
        ),
        (
            "copy-all-before-dependencies",
            "FROM node:20 AS build\nWORKDIR /app\nCOPY . .\nRUN npm ci\nFROM node:20-slim\nCOPY --from=build /app /app\nUSER node\n",
            Some(3),
            Severity::Warning,
        ),
        (
            "single-stage-compiled",
            "FROM golang:1.22\nCOPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\nRUN go build -o /app\nUSER 1\n",
            Some(5),
            Severity::Warning,
        ),
        (
            "add-from-url",
            "FROM alpine:3.20\nADD https://example.invalid/tool.tgz /opt/\nUSER 1\n",
            Some(2),
            Severity::Warning,
        ),
        (
            "package-cache-in-layer",
            "FROM debian:12\nRUN apt-get update && apt-get install -y curl\nUSER 1\n",
            Some(2),
            Severity::Warning,
        ),
        (
            "package-cache-in-layer",
            "FROM python:3.12\nRUN pip install flask\nUSER 1\n",
            Some(2),
            Severity::Warning,
        ),
        (
            "package-cache-in-layer",
            "FROM alpine:3.20\nRUN apk add curl\nUSER 1\n",
            Some(2),
            Severity::Warning,
        ),
    ];
    for (rule, text, line, severity) in cases {
        let findings = review_dockerfile(text, true);
        let found = findings.iter().find(|f| f.rule == *rule);
        let found = found
            .unwrap_or_else(|| panic!("{rule} not found in:\n{text}\nfindings: {findings:#?}"));
        assert_eq!(
            (found.line, found.severity),
            (*line, *severity),
            "{rule} in:\n{text}"
        );
        assert!(
            !found.message.contains("abc123")
                && !found.message.contains("hunter2")
                && !found.message.contains("wJalr"),
            "secret values are never repeated: {}",
            found.message
        );
    }
    let missing = review_dockerfile("FROM scratch\nUSER 1\n", false);
    assert_eq!(
        missing.iter().map(|f| (f.rule, f.line)).collect::<Vec<_>>(),
        vec![("missing-dockerignore", None)]
    );

    // The fixed versions of the same problems are clean.
    let clean = [
        "FROM ubuntu:24.04\nUSER 1000\n",
        "FROM alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nUSER 1\n",
        "FROM alpine:3.20\nARG API_TOKEN\nENV MODE=prod\nUSER 1\n",
        "FROM node:20 AS build\nCOPY package.json package-lock.json ./\nRUN npm ci\nCOPY . .\nRUN npm run build\nFROM node:20-slim\nCOPY --from=build /app /app\nUSER node\n",
        "FROM debian:12\nRUN apt-get update && apt-get install -y curl \\\n && rm -rf /var/lib/apt/lists/*\nRUN pip install --no-cache-dir flask && apk add --no-cache curl\nUSER 1\n",
        "FROM alpine:3.20\nADD --checksum=sha256:abc https://example.invalid/tool.tgz /opt/\nUSER 1\n",
    ];
    for text in clean {
        let findings = review_dockerfile(text, true);
        assert!(
            findings.is_empty(),
            "expected no findings in:\n{text}\n{findings:#?}"
        );
    }
}

/// Whether the build step whose line ends with `instruction` was answered from the cache (the
/// classic builder prints " ---> Using cache" right after the step line).
fn step_used_cache(logs: &[String], instruction: &str) -> bool {
    logs.iter()
        .position(|l| l.starts_with("Step ") && l.ends_with(instruction))
        .and_then(|at| logs.get(at + 1))
        .is_some_and(|next| next.contains("Using cache"))
}

fn git_head(repo: &ServiceRepo) -> String {
    build_support::git(&repo.path, &["rev-parse", "HEAD"])
}
