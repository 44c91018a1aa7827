"""Detection benchmark: false alerts per stable day and delay from fault to alert, by traffic.

Every case is a ``model-exporter backtest`` of a simulated log (``exporter.backtest.simulate``)
of one of the two examples, with the project's rules (prometheus/rules) and the example's own
config, evaluated by the real Prometheus and promtool:

* ``stable`` days (several seeds) and a ``realistic`` day (traffic following the hourly demand
  curve, the fare's ``hour`` from the clock): every alert that fires is a false alert;
* faults injected after a stable hour and stopped hours later: the delay from the injection (for
  ``mae``/``degrade``, from the first corrupted ground truth's arrival) to the first firing alert
  that names it, at the severity the goal names, and the time from recovery until the last alert
  it raised has resolved; an alert that fires before the injection, or goes pending after the
  recovery, is a false alert.

at 0.05, 1 and 20 predictions per second. Usage::

    python benchmarks/bench_detection.py                 # everything (about 2 hours on 2 cores)
    python benchmarks/bench_detection.py --quick        # fare only, one seed, 1 and 20/s
    python benchmarks/bench_detection.py --only fare:drift:1

The table goes to stdout and benchmarks/results/detection.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.backtest.engine import run_backtest  # noqa: E402
from exporter.backtest.log import PredictionLog  # noqa: E402
from exporter.backtest.rules import load_rules  # noqa: E402
from exporter.backtest.simulate import fault_psi, scenarios, simulate  # noqa: E402
from exporter.config import load_config  # noqa: E402

RATES = (0.05, 1.0, 20.0)
EXAMPLES = ("fare", "intent")
STABLE_SEEDS = (1, 2, 3)
#: Faults too run with several seeds: at low traffic the delay depends on where the few values
#: fall, and one run would report luck.
FAULT_SEEDS = (1, 2, 3)
#: A day starts at midnight UTC, so the realistic day's demand curve is the clock's.
DAY_START = 1_764_547_200.0  # 2025-12-01T00:00:00Z
WARMUP_HOURS = 1.0
FAULT_HOURS = 6.0
AFTER_HOURS = 1.0
#: Alerts that name each fault, and the severity the goal asks for.
EXPECTED: dict[str, tuple[tuple[str, ...], str]] = {
    "drift": (("ModelFeatureDriftPSI", "ModelFeatureMeanShift", "ModelOutputDrift"), "critical"),
    "moderate-drift": (
        ("ModelFeatureDriftPSI", "ModelFeatureMeanShift", "ModelOutputDrift"),
        "warning",
    ),  # fmt: skip
    "mae": (("ModelMAEHigh",), "critical"),
    "degrade": (("ModelAccuracyLow", "ModelAccuracyDrop"), "warning"),
    "errors": (("ModelHighErrorRatio",), "critical"),
    "latency": (("ModelHighLatencyP95",), "critical"),
}
#: Goals, seconds: critical within 5 minutes at 1 and 20/s, a moderate drift's warning within an
#: hour, every alert resolved within 15 minutes of recovery.
GOAL_CRITICAL_SECONDS = 300
GOAL_MODERATE_SECONDS = 3600
GOAL_RESOLVE_SECONDS = 900


@dataclass(frozen=True)
class Case:
    example: str
    scenario: str
    rate: float
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.example}:{self.scenario}:{self.rate:g}:{self.seed}"

    @property
    def baseline(self) -> bool:
        return self.scenario in ("stable", "realistic")


@dataclass
class Outcome:
    case: Case
    hours: float
    calls: int
    seconds: float
    false_alerts: list[str] = field(default_factory=list)
    detected_after: float | None = None
    detected_by: str | None = None
    first_any_after: float | None = None
    resolved_after: float | None = None
    fault_psi: float | None = None
    note: str = ""


def _fired(result: Any) -> list[tuple[Any, Any]]:
    return [(rule, episode) for rule, episode in result.episodes() if episode.fired]


def run_case(case: Case, work_root: str) -> Outcome:
    began = time.monotonic()
    if case.baseline:
        hours, inject, recover = 24.0, None, None
    else:
        hours = WARMUP_HOURS + FAULT_HOURS + AFTER_HOURS
        inject = WARMUP_HOURS * 3600
        recover = (WARMUP_HOURS + FAULT_HOURS) * 3600
    example: Any = case.example  # "fare" or "intent", checked by simulate
    log = simulate(example, case.scenario, rate=case.rate, hours=hours, start=DAY_START,
                   inject_after=inject, recover_after=recover, seed=case.seed)  # fmt: skip
    config = load_config(log.config)
    features = None if config.model.derive_features else config.features
    derive = None
    if config.model.derive_features:
        from exporter.server import import_callable

        derive = import_callable(config.model.derive_features, "model.derive_features")
    rules = load_rules(sorted((ROOT / "prometheus" / "rules").glob("*.yml")))
    work = Path(tempfile.mkdtemp(prefix=f"detect-{case.name.replace(':', '-')}-", dir=work_root))
    try:
        result = run_backtest(PredictionLog.from_frame(log.frame, features=features), config,
                              rules, work, derive=derive, plots=False)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    outcome = Outcome(case, hours, len(log.frame), 0.0)
    fired = _fired(result)
    if case.baseline:
        outcome.false_alerts = [_name(rule, episode) for rule, episode in fired]
    else:
        assert log.injected_at is not None and log.recovered_at is not None
        start = log.injected_at
        if case.scenario in ("mae", "degrade"):
            start = _first_corrupted_truth(log) or start
        names, severity = EXPECTED[case.scenario]
        # Alerts that fire while traffic is stable: before the fault, or raised after it ended.
        before = [(r, e) for r, e in fired if e.fired_at < log.injected_at]
        after_recovery = [(r, e) for r, e in fired if e.active_at >= log.recovered_at]
        outcome.false_alerts = [_name(r, e) for r, e in before + after_recovery]
        after = [(r, e) for r, e in fired if e.fired_at >= log.injected_at]
        named = [(r, e) for r, e in after if r.alert in names]
        ranked = [(r, e) for r, e in named if severity == "warning" or r.severity == "critical"]
        if ranked:
            rule, episode = min(ranked, key=lambda pair: pair[1].fired_at)
            outcome.detected_after = episode.fired_at - start
            outcome.detected_by = _name(rule, episode)
        if named:
            outcome.first_any_after = min(e.fired_at for _, e in named) - start
        ends = [e.ended_at for _, e in after if e.active_at < log.recovered_at]
        if ends:
            if any(end is None for end in ends):
                outcome.resolved_after = math.inf
            else:
                outcome.resolved_after = max(
                    0.0, max(e for e in ends if e is not None) - log.recovered_at
                )
        drift = "drift" in case.scenario
        psi = fault_psi(example, case.scenario) if drift else {}
        outcome.fault_psi = max(psi.values()) if psi else None
    outcome.seconds = time.monotonic() - began
    return outcome


def _first_corrupted_truth(log: Any) -> float | None:
    """The simulated fault corrupts the ground truth arriving from the injection on."""
    frame = log.frame
    arriving = frame["actual"].notna() & (frame["actual_time"] >= log.injected_at)
    if not arriving.any():
        return None
    return float(frame.loc[arriving, "actual_time"].min())


def _name(rule: Any, episode: Any) -> str:
    feature = episode.labels.get("feature")
    return f"{rule.alert}/{rule.severity}" + (f"({feature})" if feature else "")


def cases(quick: bool, only: str | None) -> list[Case]:
    if only:
        example, scenario, rate_text, *seed = only.split(":")
        return [Case(example, scenario, float(rate_text), int(seed[0]) if seed else 0)]
    examples = ("fare",) if quick else EXAMPLES
    rates = (1.0, 20.0) if quick else RATES
    seeds = STABLE_SEEDS[:1] if quick else STABLE_SEEDS
    seeds_for_faults = FAULT_SEEDS[:1] if quick else FAULT_SEEDS
    found = []
    for example in examples:
        for rate in rates:
            found += [Case(example, "stable", rate, seed) for seed in seeds]
            found.append(Case(example, "realistic", rate))
            # For the regressor `degrade` is `mae` again.
            skip = {"stable", "realistic", *({"degrade"} if example == "fare" else set())}
            found += [Case(example, s, rate, seed) for s in scenarios(example)  # type: ignore[arg-type]
                      if s not in skip for seed in seeds_for_faults]  # fmt: skip
    return found


def _median(values: list[float | None]) -> float | None:
    """The median delay; a seed that never alerted counts as the longest."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    return ordered[len(ordered) // 2]


def _worst(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else max(v for v in values if v is not None)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "not fired"
    if math.isinf(seconds):
        return "still firing"
    return f"{seconds / 60:.1f} min"


def table(outcomes: list[Outcome]) -> str:
    lines = []
    baseline = [o for o in outcomes if o.case.baseline]
    if baseline:
        lines.append("False alerts per simulated day (worst of the seeds):")
        lines.append(
            f"  {'example':<8} {'scenario':<10} {'rate/s':>7} {'seeds':>5} "
            f"{'false alerts':>12}  which"
        )
        groups: dict[tuple[str, str, float], list[Outcome]] = {}
        for o in baseline:
            groups.setdefault((o.case.example, o.case.scenario, o.case.rate), []).append(o)
        for (example, scenario, rate), found in sorted(groups.items()):
            worst = max(found, key=lambda o: len(o.false_alerts))
            which = ", ".join(sorted(set(worst.false_alerts))) or "-"
            lines.append(f"  {example:<8} {scenario:<10} {rate:>7g} {len(found):>5} "
                         f"{len(worst.false_alerts):>12}  {which}")  # fmt: skip
    faults = [o for o in outcomes if not o.case.baseline]
    if faults:
        lines.append("")
        lines.append(
            "Delay from fault to alert (goal severity; median and worst of the seeds), and from "
            "recovery to the last alert resolved (worst):"
        )
        lines.append(
            f"  {'example':<8} {'fault':<15} {'rate/s':>7} {'PSI':>5} {'seeds':>5} "
            f"{'detected':>11} {'worst':>11} {'any sev.':>10} {'resolved':>12} {'false':>5}"
        )
        by_fault: dict[tuple[str, str, float], list[Outcome]] = {}
        for o in faults:
            by_fault.setdefault((o.case.example, o.case.scenario, o.case.rate), []).append(o)
        for (example, scenario, rate), found in sorted(by_fault.items()):
            psi = found[0].fault_psi
            delays = [o.detected_after for o in found]
            anys = [o.first_any_after for o in found]
            resolved = [o.resolved_after for o in found if o.resolved_after is not None]
            lines.append(
                f"  {example:<8} {scenario:<15} {rate:>7g} "
                f"{(f'{psi:.2f}' if psi is not None else '-'):>5} {len(found):>5} "
                f"{_minutes(_median(delays)):>11} {_minutes(_worst(delays)):>11} "
                f"{_minutes(_median(anys)):>10} "
                f"{_minutes(max(resolved) if resolved else None):>12} "
                f"{sum(len(o.false_alerts) for o in found):>5}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fare only, one seed, 1 and 20/s")
    parser.add_argument("--only", help="one case, example:scenario:rate[:seed]")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "detection.json"
    )
    args = parser.parse_args()
    todo = cases(args.quick, args.only)
    print(f"{len(todo)} backtests, {args.jobs} at a time", flush=True)
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as work_root:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_case, case, work_root): case for case in todo}
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                detected = _minutes(outcome.detected_after)
                print(f"  {outcome.case.name}: {outcome.calls:,} calls in {outcome.seconds:.0f} s; "
                      f"false {outcome.false_alerts or '-'}; detected {detected} by "
                      f"{outcome.detected_by}; resolved {_minutes(outcome.resolved_after)}",
                      flush=True)  # fmt: skip
    print()
    print(table(outcomes))
    elapsed = time.monotonic() - began
    print(f"\n{len(todo)} backtests in {elapsed / 60:.1f} min on {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": {"arch": platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version()},
            "elapsed_minutes": round(elapsed / 60, 1),
            "cases": [{**asdict(o), "case": asdict(o.case)} for o in outcomes],
        }  # fmt: skip
        args.out.write_text(json.dumps(_finite(document), indent=1, allow_nan=False))
    return 0


def _finite(value: Any) -> Any:
    """JSON has no infinity: an alert still firing at the end of the run is written "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
