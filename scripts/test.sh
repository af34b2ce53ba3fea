#!/usr/bin/env bash
# The whole test suite, as CI runs it: fetches the default model (idempotent), builds the
# `cairn` binary the end-to-end tests drive, then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
cargo build -p cairn-engine --bin cairn
cargo test --workspace "$@"
