#!/usr/bin/env bash
# measure-agreement.sh — how often the orchestrator's rule floor agrees with hand judgments.
#
# Usage: scripts/measure-agreement.sh JUDGMENTS.tsv CLONE_DIR [CAIRN_BINARY]
#
# JUDGMENTS.tsv lines are `commit<TAB>level<TAB>why` (# starts a comment); CLONE_DIR is a clone
# of the repository the file names (scripts/agreement/*.tsv say which, and up to which commit).
# Each commit is analysed with `cairn analyze --no-model --json`; the script prints every
# disagreement (UNDER when the rules scored below the judgment: the case that must not happen)
# and the agreement rate.
set -euo pipefail

judgments="${1:?usage: measure-agreement.sh JUDGMENTS.tsv CLONE_DIR [CAIRN_BINARY]}"
clone="${2:?usage: measure-agreement.sh JUDGMENTS.tsv CLONE_DIR [CAIRN_BINARY]}"
cairn="${3:-$(dirname "$0")/../target/debug/cairn}"
[[ -f "$judgments" ]] || { echo "error: no judgments file $judgments" >&2; exit 2; }
[[ -d "$clone" ]] || { echo "error: no clone at $clone" >&2; exit 2; }
[[ -x "$cairn" ]] || { echo "error: no cairn binary at $cairn (cargo build -p cairn-engine --bin cairn)" >&2; exit 2; }

rank() { case "$1" in low) echo 0 ;; medium) echo 1 ;; high) echo 2 ;; *) echo "?" ;; esac; }

total=0 agree=0 under=0
while IFS=$'\t' read -r commit expected why; do
    [[ -z "$commit" || "$commit" == \#* ]] && continue
    report="$("$cairn" analyze --no-model --json --repo "$clone" --commit "$commit")"
    got="$(printf '%s' "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["risk"]["level"])')"
    total=$((total + 1))
    if [[ "$got" == "$expected" ]]; then
        agree=$((agree + 1))
        continue
    fi
    kind=OVER
    if (( $(rank "$got") < $(rank "$expected") )); then
        kind=UNDER
        under=$((under + 1))
    fi
    rules="$(printf '%s' "$report" | python3 -c 'import json,sys; r=json.load(sys.stdin)["risk"]; print("; ".join(x["rule"] + ": " + x["detail"] for x in r["reasons"]))')"
    printf '%-5s %s judged %-6s got %-6s (%s)\n      %s\n' "$kind" "$commit" "$expected" "$got" "$why" "$rules"
done <"$judgments"

python3 -c "import sys; t,a,u=map(int,sys.argv[1:]); print(f'{a}/{t} agree ({100*a/t:.1f}%), {u} under-scored')" "$total" "$agree" "$under"
