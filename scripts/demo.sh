#!/usr/bin/env bash
# Cairn's main job on its embedded defaults: SQLite state under $CAIRN_HOME, the local model,
# no remote API. Builds cairn, fetches the default model, creates a sample git repository with
# commits of different risk, and runs the AI pipeline (workflows/ai-pipeline.yaml) for each.
#
# Usage: scripts/demo.sh [SAMPLE_DIR]      (default: $CAIRN_HOME/sample-repo)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CAIRN_HOME=${CAIRN_HOME:-$root/.cairn-home}
sample=${1:-$CAIRN_HOME/sample-repo}
export DEPLOY_ROOT=$CAIRN_HOME/sample-deploy

echo "==> setting up (packages, Docker, the local model)" >&2
scripts/setup.sh

echo "==> building cairn (release)" >&2
cargo build --release -p cairn-engine --bin cairn >&2
cairn=$root/target/release/cairn

echo "==> creating the sample repository in $sample" >&2
"$root/scripts/sample-repo.sh" "$sample" >&2

for commit in $(git -C "$sample" rev-list --reverse HEAD~3..HEAD); do
    echo >&2
    echo "==> $(git -C "$sample" log -1 --format='%h %s' "$commit")" >&2
    "$cairn" analyze --repo "$sample" --commit "$commit" >&2
    "$cairn" run ai-pipeline --repo "$sample" --commit "$commit" || true
done
echo >&2
"$cairn" runs
echo >&2
echo "state: $CAIRN_HOME/cairn.db · deployed: $(readlink "$DEPLOY_ROOT/current" || echo none)" >&2
