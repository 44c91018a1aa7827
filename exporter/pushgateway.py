"""A monitor's series pushed to a Prometheus Pushgateway, for batch jobs that end before a scrape.

The Pushgateway keeps what was pushed last and Prometheus scrapes it from there. Neither of its
methods adds: a PUT replaces the whole group, a POST replaces the series it names. Pushing each
run's own counts would make the counters jump down and up (every run a "reset"), or, with a group
per run, make every series appear at its final value, which ``increase()`` cannot see (it needs
two samples) and which piles up groups forever. So a push here keeps one group per job, model and
version (plus the caller's grouping key) and makes its counters real counters across runs:

1. read the group's current totals from the gateway (``GET /api/v1/metrics``);
2. add this run's counts to them (counters, histogram buckets, sums and counts); gauges, which
   say how things are now, are this run's alone;
3. replace the group with the totals in one PUT, so a run that fails before it pushes nothing,
   and a push is never half-written.

A series new to the group (the first run, or a class or an error kind seen for the first time)
is first pushed at 0, and the totals follow one scrape interval later, so Prometheus has a sample
at 0 to count the run's increase from (Prometheus before 3.x gives a new counter no zero of its
own). A batch command announces its series at the start of its run (:meth:`GatewayPush.announce`),
so that wait overlaps the scoring instead of adding to it.

Two runs pushing to the same group at the same moment would each add to the totals the other has
not written yet (the Pushgateway has no compare-and-set): give concurrent jobs (shards) their own
``instance`` in the grouping key. A run pushed twice counts twice, as a run scored twice would:
push once per run. A Pushgateway restarted without its persistence file starts the group again
from the next run's counts, which Prometheus reads as a counter reset, as it does a restarted
service's.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import push_to_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.errors import ExporterError

#: Sample name suffixes of the series that only grow, by family type; the rest are gauges.
CUMULATIVE = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
              "summary": ("_count", "_sum")}  # fmt: skip
#: Added to the scrape interval before the totals follow series pushed at 0: the scrape itself
#: and the rule evaluation that reads it take a moment.
SCRAPE_MARGIN_SECONDS = 1.0
DEFAULT_JOB = "model-exporter-batch"
#: Prometheus's label names (ASCII only; ``__`` is reserved for its own).
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: The Pushgateway's own series in every group, never pushed by us.
GATEWAY_SERIES = frozenset({"push_time_seconds", "push_failure_time_seconds"})

#: A sample: its name and its labels (the group's own left out; ``le`` written as the client
#: writes it, since the gateway answers ``1`` where the client wrote ``1.0``).
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class PushError(ExporterError):
    """The Pushgateway could not be read or refused a push; nothing of this run was counted."""


@dataclass(frozen=True)
class PushReport:
    """What one push did."""

    #: The group's labels: ``job`` and the grouping key (``model``, ``version``, ...).
    group: Mapping[str, str]
    #: Series in the group after the push.
    series: int
    #: Series the group did not have before this run (pushed at 0 first).
    new_series: int
    #: True when the group did not exist: the first run of this job, model and version.
    first_run: bool
    #: Seconds waited so that Prometheus saw the new series at 0.
    waited_seconds: float


def group_labels(job: str, model_labels: tuple[str, str],
                 grouping_key: Mapping[str, str] | None) -> dict[str, str]:  # fmt: skip
    """``job``, ``model``, ``version`` and the caller's grouping key; ValueError for a label
    the gateway would refuse or merge with another group's."""
    model, version = model_labels
    labels = {"job": job, "model": model, "version": version}
    for name, value in (grouping_key or {}).items():
        if name in labels:
            raise ValueError(
                f"grouping key {name!r}: the group always has job, model and version; give the "
                "job as job=... and leave model and version to the monitor"
            )
        labels[str(name)] = str(value)
    for name, value in labels.items():
        if not value:
            # The gateway gives every group instance="" when it has none: a key with an empty
            # value is another name for the group without it, and it refuses both.
            raise ValueError(f"grouping key {name!r} is empty; give it a value or leave it out")
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"grouping key {name!r} is not a Prometheus label name")
    return labels


def _key(name: str, labels: Mapping[str, str], dropped: Iterable[str]) -> SampleKey:
    skip = set(dropped)
    kept = []
    for label, value in labels.items():
        if label in skip:
            continue
        if label == "le":
            value = floatToGoString(float(value))  # type: ignore[no-untyped-call]
        kept.append((label, value))
    return name, tuple(sorted(kept))


def _is_cumulative(family_type: str, sample_name: str) -> bool:
    return sample_name.endswith(CUMULATIVE.get(family_type, ()))


def _base_url(gateway: str) -> str:
    """A gateway given as ``host:port`` is reached over http, as prometheus_client does."""
    url = gateway if "://" in gateway else f"http://{gateway}"
    return url.rstrip("/")


def read_group(
    gateway: str, group: Mapping[str, str], timeout: float
) -> dict[SampleKey, float] | None:
    """The group's cumulative samples as the gateway holds them, or None when it has no such group.

    Gauges are left out: a push replaces them with the run's own."""
    url = f"{_base_url(gateway)}/api/v1/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (the user's URL)
            document = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise PushError(f"{url}: the Pushgateway answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PushError(f"cannot reach the Pushgateway at {gateway}: {reason}") from None
    except ValueError:
        raise PushError(f"{url}: the answer is not the Pushgateway's JSON") from None
    try:
        groups = document["data"]
        for entry in groups:
            if {k: v for k, v in entry["labels"].items() if v} == dict(group):
                return _flatten(entry, group)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise PushError(f"{url}: the answer is not the Pushgateway's JSON (version 1.x)") from None
    return None


def _flatten(entry: Mapping[str, Any], group: Mapping[str, str]) -> dict[SampleKey, float]:
    """One group of ``/api/v1/metrics`` as cumulative samples."""
    dropped = {*group, "instance"}
    samples: dict[SampleKey, float] = {}
    for name, family in entry.items():
        if name in GATEWAY_SERIES or not isinstance(family, dict) or "metrics" not in family:
            continue
        kind = str(family.get("type", "")).lower()
        for metric in family["metrics"]:
            labels = metric.get("labels", {})
            if kind == "counter":
                samples[_key(name, labels, dropped)] = float(metric["value"])
            elif kind in ("histogram", "summary"):
                samples[_key(f"{name}_count", labels, dropped)] = float(metric["count"])
                samples[_key(f"{name}_sum", labels, dropped)] = float(metric["sum"])
                for le, value in (metric.get("buckets") or {}).items():
                    bucket = {**labels, "le": le}
                    samples[_key(f"{name}_bucket", bucket, dropped)] = float(value)
    return samples


@dataclass
class _Series:
    family: Metric
    name: str
    labels: dict[str, str]
    value: float
    cumulative: bool


@dataclass
class RunSeries:
    """This run's series by key, and every family of the registry (a family with no series this
    run, such as errors on a clean night, still takes the previous runs' series)."""

    series: dict[SampleKey, _Series]
    families: list[Metric]


def run_series(registry: CollectorRegistry, model_labels: tuple[str, str],
               group: Mapping[str, str]) -> RunSeries:  # fmt: skip
    """This monitor's series on the registry (another model's on a shared registry are not
    this push's), without the ``*_created`` ones: a creation time per run means nothing once
    the counts are totals over runs."""
    model, version = model_labels
    series: dict[SampleKey, _Series] = {}
    families = []
    for family in registry.collect():
        out = Metric(family.name, family.documentation, family.type, family.unit)
        families.append(out)
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("version") != version:
                continue
            if sample.name.endswith("_created"):
                continue
            # Written without the group's labels: the gateway adds them to every series.
            own = {k: v for k, v in labels.items() if k not in group}
            key = _key(sample.name, own, ())
            series[key] = _Series(out, sample.name, own, float(sample.value),
                                  _is_cumulative(family.type, sample.name))  # fmt: skip
    return RunSeries(series, families)


def totals(previous: Mapping[SampleKey, float] | None,
           run: RunSeries) -> tuple[list[Metric], set[SampleKey]]:  # fmt: skip
    """The group after this run: previous + run for what only grows, the run's gauges, and the
    previous series this run did not touch (an error kind of an earlier night) kept; and the
    keys the group did not hold before."""
    previous = previous or {}
    new: set[SampleKey] = set()
    for key, item in run.series.items():
        value = item.value
        if item.cumulative:
            if key in previous:
                value += previous[key]
            else:
                new.add(key)
        item.family.add_sample(item.name, item.labels, value)
    for key, value in previous.items():
        if key in run.series:
            continue
        name, labels = key
        family = _family_of(name, run.families)
        if family is not None:  # else a metric this version of the exporter no longer has
            family.add_sample(name, dict(labels), value)
    return [f for f in run.families if f.samples], new


def _family_of(sample_name: str, families: Iterable[Metric]) -> Metric | None:
    """The family a cumulative sample of a previous run belongs to."""
    for family in families:
        if any(sample_name == family.name + suffix for suffix in CUMULATIVE.get(family.type, ())):
            return family
    return None


def zeroed(families: Iterable[Metric], new: set[SampleKey]) -> list[Metric]:
    """The same families with the new series at 0: what Prometheus must see before the totals."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            key = _key(sample.name, sample.labels, ())
            copy.add_sample(sample.name, sample.labels, 0.0 if key in new else sample.value)
        out.append(copy)
    return out


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def put_group(
    gateway: str, group: Mapping[str, str], families: list[Metric], timeout: float
) -> None:
    """Replace the group with ``families`` in one PUT (prometheus_client builds the URL, base64
    for a value holding a slash)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    key = {k: v for k, v in group.items() if k != "job"}
    try:
        push_to_gateway(_base_url(gateway), job=group["job"], registry=registry,
                        grouping_key=key, timeout=timeout)  # fmt: skip
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip().splitlines()
        first = detail[0] if detail else exc.reason
        raise PushError(
            f"the Pushgateway at {gateway} refused the push ({exc.code}): {first}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PushError(f"cannot reach the Pushgateway at {gateway}: {reason}") from None


class GatewayPush:
    """One job's pushes of one monitor's series to one group.

    ``announce()`` at the start of a run (optional), ``push()`` at its end. ``scrape_interval``
    is how often Prometheus scrapes the gateway: series new to the group are pushed at 0 and
    the totals follow once that much time (and a second) has passed; 0 never waits, for a
    caller that accepts that Prometheus does not count a new series' first run.
    """

    def __init__(
        self,
        gateway: str,
        group: Mapping[str, str],
        model_labels: tuple[str, str],
        *,
        scrape_interval: float = 15.0,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(scrape_interval) and scrape_interval >= 0):
            raise ValueError("scrape_interval must be a finite number of seconds >= 0")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a finite number of seconds > 0")
        self.gateway, self.group = gateway, dict(group)
        self.model_labels = model_labels
        self.scrape_interval, self.timeout = scrape_interval, timeout
        self._sleep, self._clock = sleep, clock
        self._zeros_since: float | None = None
        self._created_group = False

    @property
    def wait_seconds(self) -> float:
        return self.scrape_interval + SCRAPE_MARGIN_SECONDS if self.scrape_interval else 0.0

    def announce(self, registry: CollectorRegistry) -> bool:
        """Push the group as it is plus this run's series that it lacks, at 0; True when there
        were such series (the end of the run then waits less, having waited meanwhile)."""
        previous = read_group(self.gateway, self.group, self.timeout)
        self._created_group = previous is None
        families, new = totals(previous, run_series(registry, self.model_labels, self.group))
        if not new:
            return False
        put_group(self.gateway, self.group, zeroed(families, new), self.timeout)
        self._zeros_since = self._clock()
        return True

    def push(self, registry: CollectorRegistry) -> PushReport:
        """Add this run's counts to the group's totals and replace the group with them."""
        previous = read_group(self.gateway, self.group, self.timeout)
        families, new = totals(previous, run_series(registry, self.model_labels, self.group))
        waited = 0.0
        if self.wait_seconds:
            ready_at = None
            if new:
                put_group(self.gateway, self.group, zeroed(families, new), self.timeout)
                ready_at = self._clock() + self.wait_seconds
            elif self._zeros_since is not None:
                ready_at = self._zeros_since + self.wait_seconds
            if ready_at is not None:
                waited = max(0.0, ready_at - self._clock())
                if waited:
                    self._sleep(waited)
        put_group(self.gateway, self.group, families, self.timeout)
        first_run = previous is None or self._created_group
        self._zeros_since, self._created_group = None, False
        count = sum(len(f.samples) for f in families)
        return PushReport(self.group, count, len(new), first_run, waited)


class PushToGateway:
    """What gives :class:`~exporter.monitor.ModelMonitor` its :meth:`push` (kept here, beside
    the protocol it speaks, so the monitor's own class stays within its size)."""

    registry: CollectorRegistry

    @property
    def model_labels(self) -> tuple[str, str]:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def push(
        self,
        gateway: str,
        *,
        job: str = DEFAULT_JOB,
        grouping_key: Mapping[str, str] | None = None,
        scrape_interval: float = 15.0,
        timeout: float = 10.0,
    ) -> PushReport:
        """Push this monitor's series to a Pushgateway, for a batch job that ends before a scrape.

        The group is ``job`` (keep it matched by the rules' selector: the default
        ``model-exporter-batch`` is), the monitor's ``model`` and ``version``, and
        ``grouping_key`` (e.g. ``{"instance": "shard-3"}`` for jobs that run at the same time).
        This run's counts are added to the totals the group holds, so the counters keep growing
        across runs and ``increase()`` and the fleet-wide rules work on them. Series new to the
        group are pushed at 0 first and the totals ``scrape_interval`` (+1) seconds later (the
        gateway's scrape interval in Prometheus; 0 does not wait). See
        :mod:`exporter.pushgateway`.

        Raises :class:`PushError` when the gateway cannot be read or refuses the push: nothing of
        this run is then in the group, and pushing again adds it.
        """
        self.flush()
        group = group_labels(job, self.model_labels, grouping_key)
        pusher = GatewayPush(gateway, group, self.model_labels,
                             scrape_interval=scrape_interval, timeout=timeout)  # fmt: skip
        return pusher.push(self.registry)
