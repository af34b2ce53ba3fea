#!/usr/bin/env python3
"""measure-faithfulness.py — how often the local model's per-file summaries are faithful.

Usage: scripts/measure-faithfulness.py CLONE_DIR COMMITS [CAIRN_BINARY] [-- PATHSPEC...]

Analyses the newest COMMITS first-parent commits of CLONE_DIR (those touching PATHSPEC when
given, e.g. `-- src` to leave out CI and documentation bumps) with `cairn analyze --json`
(the model is CAIRN_MODEL, or the default model of the cache) and counts, over the file
summaries the local model wrote, those Cairn withheld because they named something absent from
the diff (identifiers, file names, versions) and those withheld because they said nothing about
the change (a fragment, or no word the changed lines hold): `agents/orchestrator/faithful.rs`.
Prints one line per commit, the faithful rate and the rate of summaries shown (faithful and
saying something). Set CAIRN_HOME to a scratch directory (so the
answer cache of an earlier run is not reused); the script turns local summaries on there
(`llm.tasks.summarize_diff: local`) when it has no cairn.yaml.
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    args, pathspec = sys.argv[1:], []
    if "--" in args:
        pathspec = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    clone, count = args[0], int(args[1])
    here = os.path.dirname(os.path.abspath(__file__))
    cairn = args[2] if len(args) > 2 else os.path.join(here, "..", "target", "debug", "cairn")
    home = os.environ.get("CAIRN_HOME")
    if home and not os.path.exists(os.path.join(home, "cairn.yaml")):
        os.makedirs(home, exist_ok=True)
        with open(os.path.join(home, "cairn.yaml"), "w") as config:
            config.write("llm:\n  tasks:\n    summarize_diff: local\n")
    commits = subprocess.run(
        ["git", "rev-list", "--first-parent", "-n", str(count), "HEAD", "--", *pathspec],
        cwd=clone, check=True, capture_output=True, text=True,
    ).stdout.split()
    written = invented = empty = 0
    for commit in commits:
        started = time.monotonic()
        out = subprocess.run(
            [cairn, "analyze", "--json", "--repo", clone, "--commit", commit],
            capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        if out.returncode != 0:
            print(f"{commit[:10]} failed: {out.stderr.strip()[:200]}")
            continue
        models = json.loads(out.stdout).get("models") or {}
        local = sum(1 for c in models.get("calls", []) if c.startswith("summarize_diff: local"))
        bad = [n for n in models.get("not_summarised", []) if "summary withheld" in n]
        written += local
        invented += sum(1 for n in bad if "it named" in n)
        empty += sum(1 for n in bad if "it named" not in n)
        print(f"{commit[:10]} {seconds:6.1f} s  {local} summaries, {len(bad)} withheld  {'; '.join(bad)[:300]}")
        for summary in models.get("file_summaries", []):
            print(f"           {summary[:200]}")
    if written:
        faithful, shown = written - invented, written - invented - empty
        print(
            f"{faithful}/{written} summaries faithful ({100 * faithful / written:.1f}%), "
            f"{shown}/{written} faithful and saying something ({100 * shown / written:.1f}%): shown"
        )
    else:
        print("no summaries written by a local model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
