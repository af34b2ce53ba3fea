#!/usr/bin/env bash
# Cairn's main job on its embedded defaults: SQLite state under $CAIRN_HOME, the local model,
# no remote API. Builds cairn, fetches the default model, creates a sample repository (Cairn's
# demo HTTP service with a commit for every route, scripts/sample-repo.sh) and runs the AI
# pipeline (workflows/ai-pipeline.yaml) for each commit: test what the change can affect, build
# a FROM-scratch image, deploy it behind an HAProxy that Cairn runs on 127.0.0.1:18080 (rolling,
# blue-green, hotfix, canary by risk), monitor it — and roll the last, bad release back on its
# own. A load generator sends requests through the proxy the whole time.
#
# The demo shortens the monitor windows (10 and 30 minutes in the pipeline) to seconds.
# Usage: scripts/demo.sh [SAMPLE_DIR]      (default: $CAIRN_HOME/sample-repo)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CAIRN_HOME=${CAIRN_HOME:-$root/.cairn-home}
sample=${1:-$CAIRN_HOME/sample-repo}
port=18080

echo "==> setting up (packages, Docker, the local model)" >&2
scripts/setup.sh

echo "==> building cairn (release)" >&2
cargo build --release -p cairn-engine --bin cairn >&2
cairn=$root/target/release/cairn

echo "==> creating the sample repository in $sample" >&2
"$root/scripts/sample-repo.sh" "$sample" >&2

# A fresh start for the demo service: an earlier demo's proxy, replicas and deploy state go.
[ -f "$CAIRN_HOME/work/proxies/app/haproxy.pid" ] && kill $(cat "$CAIRN_HOME/work/proxies/app/haproxy.pid") 2>/dev/null || true
old=$(docker ps -aq --filter label=cairn.deploy.service=app)
[ -n "$old" ] && docker rm -f $old >/dev/null
# The service's deploy state lives in the store (table `deployments`); it named the replicas
# just removed, so it goes too.
python3 - "$CAIRN_HOME/cairn.db" <<'PY'
import os, sqlite3, sys
if os.path.exists(sys.argv[1]):
    db = sqlite3.connect(sys.argv[1], timeout=30)
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'deployments'").fetchone():
        db.execute("DELETE FROM deployments WHERE service = 'app'")
        db.commit()
PY

workflow=$CAIRN_HOME/ai-pipeline-demo.yaml
sed -e 's|^      strategies: \(.*\)$|      strategies: \1\n      canary_steps: [10, 50, 100]\n      monitor_window: 30s\n      analysis_interval: 1s\n      min_samples: 50|' \
    -e 's|^    agent: monitor_agent\(.*\)$|    agent: monitor_agent\1\n    with: { window: 10s, interval: 1s, min_samples: 50 }|' \
    workflows/ai-pipeline.yaml > "$workflow"

load=
trap '[ -n "$load" ] && kill $load 2>/dev/null' EXIT
for commit in $(git -C "$sample" rev-list --reverse HEAD); do
    echo >&2
    echo "==> $(git -C "$sample" log -1 --format='%h %s' "$commit")" >&2
    "$cairn" analyze --repo "$sample" --commit "$commit" >&2
    "$cairn" run "$workflow" --repo "$sample" --commit "$commit" || true
    if [ -z "$load" ]; then
        echo "==> load generator: GET http://127.0.0.1:$port/ in a loop until the demo ends" >&2
        (while :; do curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/" || true; done) &
        load=$!
    fi
done
echo >&2
"$cairn" runs
echo >&2
echo "deploys and rollbacks (newest last):" >&2
story=0
python3 - "$CAIRN_HOME/cairn.db" >&2 <<'PY' || story=$?
import json, sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=30)
(state,) = db.execute("SELECT state FROM deployments WHERE service = 'app'").fetchone()
history = json.loads(state)["history"]
for record in history:
    print("  %12s %-10s %-11s %s" % (record["version"], record["strategy"], record["outcome"], record["reason"]))
# The story: the migration (a good canary) promoted, 0.2.0 (5% errors) rolled back for its
# error rate, not for thin traffic.
canaries = [r for r in history if r["strategy"] == "canary"]
told = (len(canaries) >= 2 and canaries[-2]["outcome"] == "deployed"
        and canaries[-1]["outcome"] == "rolled_back" and "error rate" in canaries[-1]["reason"])
print()
print("story %s: migration %s; 0.2.0 %s" % (
    "holds" if told else "does NOT hold",
    canaries[-2]["outcome"] if len(canaries) >= 2 else "missing",
    (canaries[-1]["outcome"] + ": " + canaries[-1]["reason"][:160]) if canaries else "missing"))
sys.exit(0 if told else 1)
PY
echo >&2
echo "the service answers on http://127.0.0.1:$port/ (state: $CAIRN_HOME/cairn.db)." >&2
echo "stop it: kill \$(cat $CAIRN_HOME/work/proxies/app/haproxy.pid); docker rm -f \$(docker ps -aq --filter label=cairn.deploy.service=app)" >&2

# The dashboard: `cairn serve --listen` over the same home shows the runs above. Reading is
# public on 127.0.0.1 for the demo; a token signs in to cancel runs.
dashboard=${CAIRN_DASHBOARD:-127.0.0.1:8700}
[ -f "$CAIRN_HOME/serve.pid" ] && kill "$(cat "$CAIRN_HOME/serve.pid")" 2>/dev/null && sleep 1 || true
# The dashboard serves the demo's runs; its copy of the workflow watches no repository (the
# placeholder `url: .` would poll this checkout), so serving starts no run of its own.
served=$CAIRN_HOME/served
mkdir -p "$served"
awk '/^trigger:/ { skip = 1; next } skip && /^[a-z]/ { skip = 0 } !skip' "$workflow" >"$served/ai-pipeline.yaml"
nohup "$cairn" serve "$served" --listen "$dashboard" --public-read -q \
    >"$CAIRN_HOME/serve.log" 2>&1 </dev/null &
echo $! >"$CAIRN_HOME/serve.pid"
for _ in $(seq 1 100); do grep -q '^listening on ' "$CAIRN_HOME/serve.log" && break; sleep 0.1; done
if grep -q '^listening on ' "$CAIRN_HOME/serve.log"; then
    token=$("$cairn" token create --scope write --name demo 2>/dev/null)
    echo >&2
    echo "dashboard: $(sed -n 's/^listening on //p' "$CAIRN_HOME/serve.log" | head -1)/ (sign in with $token to cancel runs)" >&2
    echo "stop it: kill \$(cat $CAIRN_HOME/serve.pid)" >&2
else
    echo "the dashboard did not start: $(tail -3 "$CAIRN_HOME/serve.log")" >&2
fi

exit "$story"
