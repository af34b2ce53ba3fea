#!/usr/bin/env bash
# Measures bounded disk: runs of the AI pipeline's shape (workflows/ai-pipeline.yaml's DAG and
# `when:` routing, with shell steps in place of the agents so no model or Docker is needed) on
# the sample repository (scripts/sample-repo.sh), `cairn gc` every 100 runs, and after each
# hundred: disk used by $CAIRN_HOME, the database size, and how long `cairn runs` takes.
#
# Usage: scripts/measure-retention.sh HOME COUNT   (resumable: run it again with the same HOME
# to add COUNT more runs; CAIRN_BIN selects the binary, default target/debug/cairn)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=${1:?usage: measure-retention.sh HOME COUNT}
count=${2:?usage: measure-retention.sh HOME COUNT}
cairn=${CAIRN_BIN:-$root/target/debug/cairn}
export CAIRN_HOME=$home
mkdir -p "$home"
if [ ! -d "$home/repo" ]; then
    "$root/scripts/sample-repo.sh" "$home/repo" >/dev/null
fi
cat > "$home/cairn.yaml" <<'YAML'
retention:
  runs: 1s
  logs: 1s
  keep_runs: 100
YAML
cat > "$home/pipeline.yaml" <<'YAML'
name: ai-pipeline-shape
steps:
  - id: analyze
    run: |
      git log -1 --format=%s
      git diff-tree --no-commit-id --name-only -r HEAD
      echo risk=medium >> "$CAIRN_OUTPUT"
  - id: test
    depends_on: analyze
    when: risk >= medium
    run: for i in $(seq 1 200); do echo "test $i ok"; done
  - id: test-extra
    depends_on: analyze
    when: risk == high
    run: echo extra
  - id: build
    depends_on: [test, test-extra]
    run: ls -la; wc -l src/*.rs
  - id: image
    depends_on: build
    run: echo "image app:$(git rev-parse --short HEAD)"
  - id: deploy
    depends_on: image
    run: echo deploy rolling
  - id: monitor
    depends_on: deploy
    run: echo healthy
YAML
# `runs: 1s` so a burst of runs is old enough at once; `keep_runs: 100` keeps the newest 100:
# disk and database should stay flat at about 100 runs' worth however many run.
# Read-only, and only when the database exists: opening a missing file read-write would leave
# an empty cairn.db behind, which Cairn rightly refuses.
done=0
if [ -f "$home/cairn.db" ]; then
    done=$(python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0])' "$home/cairn.db")
fi
for n in $(seq $((done + 1)) $((done + count))); do
    "$cairn" run "$home/pipeline.yaml" --repo "$home/repo" -q >/dev/null 2>"$home/last.err" \
        || { echo "run $n failed:"; cat "$home/last.err"; exit 1; }
    if [ $((n % 100)) -eq 0 ]; then
        "$cairn" gc >/dev/null
        start=$(date +%s%N)
        "$cairn" runs --limit 20 >/dev/null
        runs_ms=$(( ($(date +%s%N) - start) / 1000000 ))
        start=$(date +%s%N)
        "$cairn" runs --limit 1000 --json >/dev/null
        runs_all_ms=$(( ($(date +%s%N) - start) / 1000000 ))
        printf 'runs=%d home_kb=%d db_bytes=%d work_kb=%d runs_ms=%d runs_1000_json_ms=%d\n' \
            "$n" "$(du -sk "$home" --exclude=repo | cut -f1)" "$(stat -c %s "$home/cairn.db")" \
            "$(du -sk "$home/work" | cut -f1)" "$runs_ms" "$runs_all_ms"
    fi
done
