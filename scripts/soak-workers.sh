#!/usr/bin/env bash
# soak-workers.sh URL [RUNS] — many runs through three `cairn worker` processes while one of
# them is killed (SIGKILL) every few seconds and replaced, all on the PostgreSQL store at URL
# (an empty database). Then checks, in the store: every run succeeded, every step's task
# succeeded exactly once and was recorded once, no task is left leased or queued.
# Uses target/debug/cairn (build it first) and psql.
set -euo pipefail
url=${1:?usage: soak-workers.sh postgres://… [RUNS]}
runs=${2:-100}
cd "$(dirname "$0")/.."
cairn=$PWD/target/debug/cairn
work=$(mktemp -d)
tag="soak-$$"
trap 'kill $(jobs -p) 2>/dev/null; pkill -f -- "--name $tag-" 2>/dev/null; rm -rf "$work"' EXIT
home=$work/home; mkdir -p "$home"; echo "store: $url" > "$home/cairn.yaml"
export CAIRN_HOME=$home CAIRN_SANDBOX=off
cat > "$work/wf.yaml" <<'YAML'
name: soak
steps:
  - id: a
    runs_on: [linux]
    run: sleep 0.4; echo "a=$CAIRN_WORKER" >> "$CAIRN_OUTPUT"
  - id: b
    runs_on: [linux]
    run: sleep 0.4
  - id: c
    depends_on: [a, b]
    runs_on: [linux]
    run: sleep 0.2
YAML
# Worker pids are kept in a file: matching command lines would also hit a worker's child
# between fork and exec (it still shows the worker's command line) and kill a step instead.
start_worker() {
    ("$cairn" worker --labels linux --name "$tag-w$1" --lease 1500ms 2>/dev/null &
     echo $! >> "$work/pids")
}
for i in 1 2 3; do start_worker "$i"; done
# Every 2 s one worker, chosen at random, is killed and a new one takes its place.
killer() {
    local next=4
    while sleep 2; do
        victim=$(shuf -n 1 "$work/pids")
        kill -9 "$victim" 2>/dev/null || true
        grep -vx "$victim" "$work/pids" > "$work/pids.next" || true
        mv "$work/pids.next" "$work/pids"
        start_worker "$next"; next=$((next + 1))
    done
}
killer &
started=$(date +%s)
seq 1 "$runs" | xargs -P 4 -I{} "$cairn" run "$work/wf.yaml" -q >/dev/null 2>"$work/errors" || true
elapsed=$(( $(date +%s) - started ))
q() { psql "$url" -tAc "$1"; }
echo "runs: $(q "SELECT count(*) FROM runs") in ${elapsed}s, by state: $(q "SELECT string_agg(state || '=' || n, ' ') FROM (SELECT state, count(*) n FROM runs GROUP BY state) s")"
echo "tasks: $(q "SELECT string_agg(state || '=' || n, ' ') FROM (SELECT state, count(*) n FROM tasks GROUP BY state) s")"
echo "tasks taken over from a killed worker: $(q "SELECT count(*) FROM events WHERE kind = 'task_reclaimed'")"
echo "steps completed more than once: $(q "SELECT count(*) FROM (SELECT run_id, step_id FROM events WHERE kind = 'step_succeeded' GROUP BY run_id, step_id HAVING count(*) > 1) d")"
echo "tasks with more than one result: $(q "SELECT count(*) FROM (SELECT run_id, step_id FROM events WHERE kind IN ('task_succeeded', 'task_failed') GROUP BY run_id, step_id HAVING count(*) > 1) d")"
echo "tasks left queued or leased: $(q "SELECT count(*) FROM tasks WHERE state IN ('queued', 'leased')")"
