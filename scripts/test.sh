#!/usr/bin/env bash
# The whole test suite, as CI runs it: sets the machine up (scripts/setup.sh: packages, Docker,
# the model), checks formatting and lints (warnings are errors), builds the `cairn` binary the
# end-to-end tests drive, then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build -p cairn-engine --bin cairn
cargo test --workspace --no-fail-fast "$@"
