"""``observe()`` and the scrape of two revisions of the package, measured in one run.

    .venv/bin/python benchmarks/compare_revisions.py BEFORE [AFTER] [--rounds N]

``BEFORE`` and ``AFTER`` (default: the working tree) are git revisions; each is checked out in a
temporary worktree. The measurements are this checkout's ``bench_monitor.bench_observe`` and
``bench_scrape``, run against each revision's ``exporter`` package in its own process, the two
revisions alternating round by round so that a machine that gets busier or quieter during the
run weighs on both alike. Prints the median of the rounds and the after/before ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

_PROBE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import exporter
assert exporter.__file__.startswith(sys.argv[1]), exporter.__file__
import bench_monitor as b
observe = b.bench_observe(20_000, 5)
scrape = b.bench_scrape(100_000, 5)
print(json.dumps({"observe_us": observe["observe_us"],
                  "histogram_observe_us": observe["histogram_observe_us"],
                  "scrape_fresh_ms": scrape["fresh_ms_no_created"],
                  "scrape_cached_ms": scrape["cached_ms_no_created"]}))
"""


def measure(tree: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tree), str(HERE)],
        check=True, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(into), rev],
                   check=True)  # fmt: skip
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default=None, help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": worktree(args.before, Path(tmp) / "before")}
        trees["after"] = worktree(args.after, Path(tmp) / "after") if args.after else REPO
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    runs[name].append(measure(tree))
        finally:
            for tree in trees.values():
                if tree != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(tree)], check=False)  # fmt: skip
    label = args.after or "working tree"
    print(f"before: {args.before}, after: {label}, {args.rounds} rounds, medians")
    print("| measurement | before | after | after / before |")
    print("|---|---|---|---|")
    for key in runs["before"][0]:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        print(f"| {key} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
