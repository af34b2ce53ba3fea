#!/usr/bin/env bash
# Installs what Cairn's demo and tests need on a fresh Debian machine (idempotent): git, make,
# gcc (static test binaries), haproxy (the deploy agent's proxy), prometheus (the deploy
# agent's metrics through a Prometheus server, in tests), a running Docker engine (the
# build and deploy agents; nothing is pulled), a git identity for the commits tests make, and
# the default local model, a static busybox (a shell inside test images), bubblewrap (`bwrap`,
# the step sandbox; its tests need it), Go (`go test` selection and measurement are tested on a
# tiny module), headless Chromium with chromium-driver (the dashboard's browser tests) and
# PostgreSQL's server (the store's tests on its second backend).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in git make gcc haproxy prometheus; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
command -v bwrap >/dev/null || need+=(bubblewrap)
# A static busybox: the shell and httpd of the FROM-scratch base image the build agent's
# Dockerfile-optimisation test builds (no image can be pulled).
# (Debian's plain `busybox` is dynamically linked and cannot run FROM scratch: ask for the
# static package itself.)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v go >/dev/null || need+=(golang-go)
# Headless Chromium and its WebDriver: the dashboard's browser tests (tests/tests/dashboard.rs).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# PostgreSQL's server: the store's shared tests run every case against a private server too
# (engine/src/store/test_postgres.rs starts it; the packaged service is not used).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
    || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}" >&2
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
    # The packages start system services; the tests run their own instances.
    for service in haproxy prometheus postgresql; do
        (systemctl disable --now "$service" || service "$service" stop) >/dev/null 2>&1 || true
    done
fi
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
    echo "setup: starting the Docker engine" >&2
    (service docker start || (nohup dockerd >/tmp/dockerd.log 2>&1 &)) >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || echo "setup: warning: no Docker engine is reachable; the build and deploy agents need one" >&2
# coverage.py and pytest: the test agent's coverage gaps and pytest narrowing (tests use them).
if ! python3 -c 'import coverage, pytest' >/dev/null 2>&1; then
    echo "setup: installing coverage and pytest for python3" >&2
    python3 -m pip install -q coverage pytest >&2 2>/dev/null \
        || python3 -m pip install -q --break-system-packages coverage pytest >&2 \
        || echo "setup: warning: could not install coverage/pytest; coverage gaps are reported as unavailable" >&2
fi
git config --global user.email >/dev/null || git config --global user.email cairn@localhost.invalid
git config --global user.name >/dev/null || git config --global user.name "Cairn"
# rustfmt and clippy: scripts/test.sh checks formatting and lints before testing.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy >&2
fi
# llvm-profdata and llvm-cov matching rustc's LLVM: per-test coverage of Cargo suites
# (`cairn tests measure --per-test-coverage`; engine/tests/measure.rs uses it).
if [ ! -x "$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-cov" ]; then
    rustup component add llvm-tools-preview >&2
fi
scripts/fetch-model.sh >/dev/null
