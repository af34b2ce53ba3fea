#!/usr/bin/env bash
# Creates a sample repository for the AI pipeline: Cairn's demo HTTP service (demo/service:
# std-only Rust, /healthz and Prometheus /metrics, a FROM-scratch image) with a history whose
# commits take every route of workflows/ai-pipeline.yaml:
#   1. the service (first deploy)                      5. hotfix: 404 text      -> hotfix
#   2-3. a README typo and its fix    -> low, rolling  6. a database migration  -> high, canary (good)
#   4. a /version endpoint            -> medium, blue-green
#   7. a release that changes the image (Dockerfile) and sheds 5% of requests
#                                                      -> high, canary, rolled back on its own
#
# Usage: scripts/sample-repo.sh DIR   (DIR is replaced)
set -euo pipefail
service=$(cd "$(dirname "$0")/../demo/service" && pwd)
dir=${1:?usage: sample-repo.sh DIR}
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
git init -q -b main
git config user.email demo@cairn.invalid
git config user.name "Cairn demo"

cp -r "$service/src" "$service/Cargo.toml" "$service/Cargo.lock" "$service/Dockerfile" "$service/README.md" .
printf 'target/\n' > .gitignore
# Only the static binary goes into the image's build context.
printf '*\n!target/x86_64-unknown-linux-gnu/release/demo-service\n' > .dockerignore
cat > Makefile <<'TXT'
# Targets workflows/ai-pipeline.yaml calls. CARGO_TARGET_DIR is pinned so the Dockerfile finds
# the binary whatever the caller's environment says.
TARGET := x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR := target
.PHONY: build test test-extra
build:
	RUSTFLAGS='-C target-feature=+crt-static' cargo build --offline --release --target $(TARGET)
	@if [ -n "$$CAIRN_OUTPUT" ]; then echo "binary=target/$(TARGET)/release/demo-service" >> "$$CAIRN_OUTPUT"; fi
test:
	cargo test --offline
test-extra:
	cargo test --offline --release
TXT
git add -A && git commit -qm "demo-service: hello, /healthz and /metrics"

sed -i 's/ship in tests and demos/ship in tests and demso/' README.md
git commit -qam "Describe the service"
sed -i 's/ship in tests and demso/ship in tests and demos/' README.md
git commit -qam "Fix typo in README"

sed -i 's|        "/healthz" => (200, "text/plain", "ok\\n".to_string()),|        "/version" => (200, "text/plain", format!("{}\\n", state.config.version)),\n&|' src/main.rs
grep -q '"/version"' src/main.rs
git commit -qam "Add a /version endpoint"

sed -i 's|"not found\\n".to_string()|"not found: try /, /version, /healthz or /metrics\\n".to_string()|' src/main.rs
grep -q 'try /, /version' src/main.rs
git commit -qam "hotfix: name the routes in 404 answers"

mkdir -p db/migrations
cat > db/migrations/0001_create_greetings.sql <<'TXT'
CREATE TABLE greetings (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at TIMESTAMP NOT NULL);
CREATE INDEX greetings_by_name ON greetings(name);
TXT
git add -A && git commit -qm "Record greetings"

# The bad release: it changes how the image is built (infrastructure: high risk, so a canary),
# and its code answers 5% of requests with errors. Its unit tests pass: only the canary
# analysis can catch it. (A version bump alone is low risk.)
sed -i 's/^version = "0.1.0"/version = "0.2.0"/' Cargo.toml
sed -i '/^name = "demo-service"/{n;s/^version = "0.1.0"/version = "0.2.0"/}' Cargo.lock
sed -i 's|if state.metrics.roll() < state.config.error_rate {|if state.metrics.roll() < state.config.error_rate.max(0.05) {|' src/main.rs
grep -q 'error_rate.max(0.05)' src/main.rs
sed -i 's|^EXPOSE 8080|LABEL org.opencontainers.image.version="0.2.0"\nEXPOSE 8080|' Dockerfile
grep -q 'image.version="0.2.0"' Dockerfile
git commit -qam "Release 0.2.0: shed load early when the error budget is spent"
echo "$dir"
