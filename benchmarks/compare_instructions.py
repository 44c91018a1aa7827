"""Instructions per ``observe()`` and per scrape of two revisions, counted by valgrind.

    .venv/bin/python benchmarks/compare_instructions.py BEFORE [AFTER]

Timings on a shared or virtual machine swing by tens of percent from one minute to the next
(`compare_revisions.py` saw the same scrape take 12 and 32 ms); valgrind's callgrind counts the
instructions a run executes, which do not depend on what else the machine does. With the hash
seed and the monitor's clock fixed, repeated runs of one revision still differ by up to about 5%
(the garbage collector's timing, allocation addresses): compare several runs. Each revision
(``AFTER`` defaults to the working tree) runs the same script four times under callgrind: the
set-up alone (imports, a 10-feature profile, a monitor, one warm-up observe), then with 3,000
``observe()`` calls, with those and a flush, and with those, a flush and 5 scrapes that
recompute the drift. Differences give instructions per observe and per scrape. Python runs
about 50 times slower under callgrind: a revision takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from compare_revisions import REPO, worktree

CALLS, SCRAPES = 3_000, 5

_WORKLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd, prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
import exporter
from exporter import ModelMonitor, ReferenceProfile
assert exporter.__file__.startswith(sys.argv[1]), exporter.__file__
prometheus_client.disable_created_metrics()
rng = np.random.default_rng(0)
cols = [f"f{i}" for i in range(10)]
frame = pd.DataFrame(rng.normal(size=(2000, 10)), columns=cols)
profile = ReferenceProfile.from_frame(frame, cols, [])
registry = CollectorRegistry()
timer = "flush_interval" in ModelMonitor.__init__.__code__.co_varnames
# A clock that stands still: the windows' ticks follow time, and a run under callgrind lasts
# long enough to cross a tick at a different point each time, which moved the counts by 5%.
monitor = ModelMonitor("m", reference=profile, registry=registry, clock=lambda: 1.8e9,
                       **({"flush_interval": None} if timer else {}))
rows = [dict(zip(cols, r)) for r in rng.normal(0.2, 1, size=(CALLS, 10)).tolist()]
labels = rng.choice(["a", "b"], CALLS).tolist()
monitor.observe(rows[0], "a", 0.9)
stage = sys.argv[2]
if stage != "setup":
    for row, label in zip(rows, labels):
        monitor.observe(row, label, 0.9)
if stage in ("flush", "scrape"):
    monitor.flush()
if stage == "scrape":
    monitor.drift_cache_seconds = 0
    for _ in range(SCRAPES):
        generate_latest(registry)
""".replace("CALLS", str(CALLS)).replace("SCRAPES", str(SCRAPES))

STAGES = ("setup", "observe", "flush", "scrape")


def instructions(tree: Path, stage: str, scratch: Path) -> int:
    out = scratch / f"callgrind.{stage}.out"
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
         _WORKLOAD, str(tree), stage],
        capture_output=True, text=True, check=True, cwd=scratch,
        # A fixed hash seed: with Python's random one, dict and set layouts change between runs.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind: {run.stderr[-500:]}")
    return int(found.group(1))


def per_unit(counts: dict[str, int]) -> dict[str, float]:
    return {
        "observe": (counts["observe"] - counts["setup"]) / CALLS,
        "scrape": (counts["scrape"] - counts["flush"]) / SCRAPES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default=None, help="default: the working tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        trees = {"before": worktree(args.before, scratch / "before")}
        trees["after"] = worktree(args.after, scratch / "after") if args.after else REPO
        try:
            results = {
                name: per_unit({stage: instructions(tree, stage, scratch) for stage in STAGES})
                for name, tree in trees.items()
            }
        finally:
            for tree in trees.values():
                if tree != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(tree)], check=False)  # fmt: skip
    print(f"before: {args.before}, after: {args.after or 'working tree'} (instructions, callgrind)")
    print("| per | before | after | after / before |")
    print("|---|---|---|---|")
    for unit in ("observe", "scrape"):
        before, after = results["before"][unit], results["after"][unit]
        print(f"| {unit} | {before:,.0f} | {after:,.0f} | {after / before:.3f} |")


if __name__ == "__main__":
    main()
