//! The build agent's Dockerfile optimisation against the real Docker engine: a Dockerfile with
//! the review's two mechanical findings (`COPY . .` before the dependency install, pip's cache
//! left in the layer) is rewritten, the rewrite is built and measured, and it is delivered as
//! a patch only because it is smaller, rebuilds faster after an application change, runs the
//! same entrypoint and passes the service's health check. A proposal whose container fails
//! the health check is rejected with that reason.
//!
//! No image can be pulled here, so the base image is built `FROM scratch` from the host's
//! static busybox (a shell and `httpd`) and a stand-in `pip` that installs slowly and, like
//! pip, leaves a download cache unless given `--no-cache-dir`.

mod build_support;

use std::path::Path;
use std::process::Command;

use build_support::{Images, ServiceRepo, TestEngine, git, init_repo};
use cairn_engine::store::RunState;
use serde_json::{Value, json};

const FAKE_PIP: &str = r#"#!/bin/sh
# A stand-in for pip (no package index is reachable): "installs" the requirements slowly and
# keeps 6 MB of download cache unless told --no-cache-dir.
req=""
cache=1
while [ $# -gt 0 ]; do
    case "$1" in
        -r) req="$2"; shift ;;
        --no-cache-dir) cache=0 ;;
    esac
    shift
done
sleep 2
mkdir -p /opt/deps && cp "$req" /opt/deps/installed.txt
if [ "$cache" = 1 ]; then
    mkdir -p /root/.cache/pip && head -c 6000000 /dev/urandom > /root/.cache/pip/http.bin
fi
"#;

/// Builds the base image `tag` from the host's static busybox and the stand-in pip.
fn base_image(tag: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("a static busybox (scripts/setup.sh installs busybox-static)");
    std::fs::copy(busybox, dir.path().join("busybox")).expect("copy busybox");
    std::fs::write(dir.path().join("pip"), FAKE_PIP).expect("pip");
    // COPY keeps the mode (`--chmod` would need BuildKit).
    std::fs::set_permissions(
        dir.path().join("pip"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod pip");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY pip /usr/local/bin/pip\nENV PATH=/usr/local/bin:/bin\n",
    )
    .expect("Dockerfile");
    let out = Command::new("docker")
        .args(["build", "--quiet", "-t", tag])
        .arg(dir.path())
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "base image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The service: static files served by busybox httpd, dependencies "installed" by pip.
fn service_repo(path: &Path, base: &str, port: u16) -> String {
    std::fs::create_dir_all(path.join("www")).expect("mkdir");
    let dockerfile = format!(
        "FROM {base}\nWORKDIR /srv\n# the whole checkout\nCOPY . .\nRUN pip install -r requirements.txt\nEXPOSE {port}\nUSER 65534\nENTRYPOINT [\"/bin/httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/srv/www\"]\n"
    );
    for (file, text) in [
        ("Dockerfile", dockerfile.as_str()),
        (".dockerignore", ".git\n"),
        ("requirements.txt", "flask==3.0.3\n"),
        ("www/healthz", "ok\n"),
        ("www/index.html", "<h1>shop</h1>\n"),
    ] {
        std::fs::write(path.join(file), text).expect("write");
    }
    init_repo(path);
    ServiceRepo {
        path: path.to_path_buf(),
    }
    .commit("service")
}

fn leftovers(repository: &str) -> String {
    let images = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker image ls");
    let containers = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    let needle = format!("{repository}-optimize");
    String::from_utf8_lossy(&images.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&containers.stdout).lines())
        .filter(|l| l.contains(&needle))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_dockerfile_is_proposed_only_when_proven() {
    let images = Images::new("optimize");
    let base = format!("{}-base:1", images.repository);
    base_image(&base);
    let _base_cleanup = Images {
        repository: format!("{}-base", images.repository),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("service");
    std::fs::create_dir_all(&repo).expect("mkdir");
    let commit = service_repo(&repo, &base, 8080);
    let original = std::fs::read_to_string(repo.join("Dockerfile")).expect("Dockerfile");
    let engine = TestEngine::new();

    let run = engine
        .build(
            &repo,
            &commit,
            json!({ "image": images.repository, "optimize": { "port": 8080, "health_path": "/healthz" } }),
        )
        .await;
    assert_eq!(
        run.state,
        RunState::Succeeded,
        "{:?}\n{}",
        run.step.error,
        run.logs.join("\n")
    );
    let review = &run.outputs()["review"];
    let rules: Vec<&str> = review["findings"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["rule"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        rules.contains(&"copy-all-before-dependencies")
            && rules.contains(&"package-cache-in-layer"),
        "{review:#}"
    );
    let proposal = &review["proposal"];
    println!("{proposal:#}");
    assert_eq!(proposal["status"], "accepted", "{proposal:#}");
    let changed: Vec<&str> = proposal["changes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["rule"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        changed,
        ["copy-all-before-dependencies", "package-cache-in-layer"],
        "{proposal:#}"
    );
    // Measured, not asserted from the rules: the cache is gone and the install layer is reused.
    let size = |key: &str| proposal[key].as_u64().unwrap_or(0);
    assert!(
        size("size_after") + 5_000_000 < size("size_before"),
        "{proposal:#}"
    );
    let fastest = |key: &str| {
        proposal[key]
            .as_array()
            .and_then(|r| r.iter().filter_map(Value::as_u64).min())
            .unwrap_or(0)
    };
    assert_eq!(
        proposal["rebuild_ms_before"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        fastest("rebuild_ms_before") >= 2_000,
        "the original re-runs the 2 s install after an app change: {proposal:#}"
    );
    assert!(
        fastest("rebuild_ms_after") + 1_000 < fastest("rebuild_ms_before"),
        "{proposal:#}"
    );
    assert!(
        proposal["health"]
            .as_str()
            .is_some_and(|h| h.starts_with("/healthz answered 2xx")),
        "{proposal:#}"
    );
    // The patch applies to the checkout and gives the proposed Dockerfile; the checkout
    // itself was never touched.
    let patch = proposal["patch"].as_str().unwrap_or_default();
    assert!(
        patch.contains("+COPY requirements.txt ./")
            && patch.contains("+RUN pip install --no-cache-dir -r requirements.txt"),
        "{patch}"
    );
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "",
        "checkout untouched"
    );
    std::fs::write(dir.path().join("optimize.patch"), patch).expect("write patch");
    git(&repo, &["apply", "../optimize.patch"]);
    let applied = std::fs::read_to_string(repo.join("Dockerfile")).expect("Dockerfile");
    assert_ne!(applied, original);
    assert!(
        applied.find("COPY requirements.txt ./") < applied.find("COPY . ."),
        "{applied}"
    );
    git(&repo, &["checkout", "--", "Dockerfile"]);
    assert_eq!(
        leftovers(&images.repository),
        "",
        "probe images and containers removed"
    );

    // The same rewrite for a service whose health check cannot pass (it listens on 8080,
    // the configuration says 9090): rejected, with the reason.
    let run = engine
        .build(
            &repo,
            &commit,
            json!({ "image": images.repository, "optimize": { "port": 9090, "health_path": "/healthz", "health_timeout": "3s" } }),
        )
        .await;
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.step.error);
    let proposal = &run.outputs()["review"]["proposal"];
    assert_eq!(proposal["status"], "rejected", "{proposal:#}");
    assert!(
        proposal["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed its health check")),
        "{proposal:#}"
    );
    assert_eq!(
        leftovers(&images.repository),
        "",
        "probe images and containers removed"
    );

    // Without `optimize:` nothing is proposed.
    let run = engine
        .build(&repo, &commit, json!({ "image": images.repository }))
        .await;
    assert_eq!(run.outputs()["review"]["proposal"]["status"], "none");
}
