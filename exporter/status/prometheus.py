"""The fleet's evidence, read from Prometheus through its HTTP API (``/api/v1/query``).

Everything comes from the recorded series of docs/metrics.md, summed over every replica and
worker, so the numbers are the ones the alerts and the dashboards use: traffic, errors, latency
and input quality over 5 minutes, drift, performance and ground-truth coverage over the hour, the
thresholds from ``model_alert:model_alert_threshold:effective``, and the alerts firing now from
``ALERTS``. Two things have no recorded series and are read from the raw counters with the
site's selector: which exception classes failed, and which feature's inputs are invalid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from exporter.errors import ExporterError
from exporter.mixin.settings import Settings
from exporter.status.model import (
    ComparisonEvidence,
    Evidence,
    FeatureDriftEvidence,
    FiringAlert,
    ModelStatus,
    PerformanceEvidence,
)
from exporter.status.summary import summarize

WINDOWS = {"traffic": "5m", "drift": "1h", "performance": "1h"}
#: The versions group's series per window (each version's value, sample and statistic), the
#: first window preferred: the longer one speaks for a candidate whose hour holds too little
#: evidence (the alert reads both). Named in full, so a renamed rule fails the contract test.
COMPARISON_SERIES = {
    "1h": ("model_metric:model_compare_value:1h", "model_metric:model_compare_samples:1h",
           "model_metric:model_candidate_worse:zscore1h"),
    "6h": ("model_metric:model_compare_value:6h", "model_metric:model_compare_samples:6h",
           "model_metric:model_candidate_worse:zscore6h"),
}  # fmt: skip
COMPARISON_WINDOWS = tuple(COMPARISON_SERIES)
#: The defaults of the generated rules (exporter/mixin/settings.py).
DEFAULT_SELECTOR = Settings().selector
DEFAULT_FLEET_LABELS = Settings().fleet_labels
#: A model whose exporters all went down within this range is still listed (with its alerts).
RECENTLY_SEEN = "1h"

Labels = Mapping[str, str]
#: (fleet labels as sorted pairs, model, version); version "" for a series without one.
Key = tuple[tuple[tuple[str, str], ...], str, str]


class PrometheusError(ExporterError):
    """Prometheus cannot be read: a bad URL, unreachable, not Prometheus, or a refused query."""


@dataclass
class FleetStatus:
    """Every model version Prometheus knows, and the firing alerts that name no known model."""

    models: list[ModelStatus]
    other_alerts: list[FiringAlert] = field(default_factory=list)


def check_url(url: str) -> str:
    """``url`` without a trailing slash; PrometheusError unless it is an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PrometheusError(
            f"{url!r} is not a Prometheus URL: give http(s)://host:port (for example "
            "http://localhost:9090)"
        )
    return url.rstrip("/")


class PrometheusReader:
    """Instant queries against one Prometheus, at ``at`` (a Unix time) or now."""

    def __init__(
        self,
        url: str,
        *,
        selector: str = DEFAULT_SELECTOR,
        fleet_labels: Sequence[str] = DEFAULT_FLEET_LABELS,
        timeout: float = 10.0,
        at: float | None = None,
    ) -> None:
        self.url = check_url(url)
        self.selector, self.fleet_labels, self.at = selector, tuple(fleet_labels), at
        self._client = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """The instant vector of ``expr`` as (labels, value) pairs."""
        params = {"query": expr}
        if self.at is not None:
            params["time"] = f"{self.at:.3f}"
        try:
            response = self._client.get("/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"{self.url}/api/v1/query answered HTTP {response.status_code} without "
                "Prometheus' JSON: is this the URL of a Prometheus server?"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(
                f"Prometheus at {self.url} refused {expr!r} (HTTP {response.status_code}): "
                f"{error or 'no error message'}"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"{expr!r} is not an instant vector: {data.get('resultType')}")
        return [(dict(e["metric"]), float(e["value"][1])) for e in data["result"]]

    # --- the fleet ------------------------------------------------------------------------------

    def key(self, labels: Labels) -> Key:
        fleet = tuple((name, labels[name]) for name in self.fleet_labels if labels.get(name))
        return fleet, labels.get("model", ""), labels.get("version", "")

    def by_key(self, expr: str) -> dict[Key, float]:
        return {self.key(labels): value for labels, value in self.query(expr)}

    def by_key_and(self, expr: str, label: str) -> dict[Key, dict[str, float]]:
        """``expr`` by model version, then by the value of ``label``."""
        found: dict[Key, dict[str, float]] = {}
        for labels, value in self.query(expr):
            found.setdefault(self.key(labels), {})[labels.get(label, "")] = value
        return found

    def _fleet_by(self) -> str:
        return ", ".join((*self.fleet_labels, "model", "version"))

    def read(self, model: str | None = None) -> FleetStatus:
        """The status of every model version (of ``model`` alone, when given)."""
        raw = _Raw(self)
        if raw.keys and not raw.thresholds:
            # The thresholds rule gives every model of model_info a series: without one, this
            # Prometheus does not evaluate the project's rules, and every signal would read as
            # "no data" rather than as what it is.
            raise PrometheusError(
                f"Prometheus at {self.url} has models but no recorded series "
                "(model_alert:model_alert_threshold:effective): load the project's rules "
                "(prometheus/rules/*.yml, or `model-exporter generate`) into it"
            )
        # By model, then fleet and version: one model's rows together.
        chosen = (k for k in raw.keys if model is None or k[1] == model)
        keys = sorted(chosen, key=lambda k: (k[1], k[0], k[2]))
        statuses = [summarize(raw.evidence(k)) for k in keys]
        known = {(k[0], k[1]) for k in keys}
        other = [
            alert for labels, alert in raw.alerts
            if (self.key(labels)[0], labels.get("model", "")) not in known
            and (model is None or labels.get("model") in (None, model))
        ]  # fmt: skip
        return FleetStatus(statuses, other)


def _finite(value: float | None) -> float | None:
    return value if value is not None and not math.isnan(value) else None


class _Raw:
    """Every query of one read, run once, by model version."""

    def __init__(self, reader: PrometheusReader) -> None:
        self.reader = reader
        q, by, sel = reader.by_key, reader._fleet_by(), reader.selector
        seen = f"max by ({by}) (last_over_time(model_info{{{sel}}}[{RECENTLY_SEEN}]))"
        self.keys = set(q(seen))
        self.thresholds: dict[tuple[Any, str], dict[str, float]] = {}
        for labels, value in reader.query("model_alert:model_alert_threshold:effective"):
            fleet, model, _ = reader.key(labels)
            self.thresholds.setdefault((fleet, model), {})[labels.get("alert", "")] = value
        self.traffic = q("model:model_predictions:rate5m")
        self.calls = q("model:model_prediction_calls:increase5m")
        self.error_ratio = q("model:model_prediction_error_ratio:rate5m")
        self.errors = reader.by_key_and(
            f"sum by ({by}, error) (increase(model_prediction_errors_total{{{sel}}}[5m])) > 0",
            "error",
        )
        self.p95 = q("model:model_prediction_duration_seconds:p95_5m")
        self.invalid = q("model:model_input_invalid:ratio5m")
        inputs = 'feature!~"__prediction__|__confidence__|__actual__"'
        self.invalid_counts = reader.by_key_and(
            f"sum by ({by}, feature) (increase(model_input_invalid_total{{{sel}, {inputs}}}[5m]))"
            " > 0",
            "feature",
        )
        self.valid_counts = reader.by_key_and(
            f"sum by ({by}, feature) (increase(model_feature_bin_total{{{sel}, {inputs}}}[5m]))",
            "feature",
        )
        feature = reader.by_key_and
        self.psi = feature("model_feature:model_feature_psi:1h", "feature")
        self.psi_excess = feature("model_feature:model_feature_psi_excess:1h", "feature")
        self.drift_samples = feature("model_feature:model_feature_bin:increase1h", "feature")
        # The drift alerts' second condition: a PSI over its threshold from a few hundred values
        # is still noise unless the G-test agrees.
        self.drift_significant = feature(
            f"model_feature:model_feature_g:1h > on ({by}, feature) "
            "model_feature:model_feature_g:critical",
            "feature",
        )
        self.mae = q("model:model_absolute_error:mae1h")
        self.mae_lower = q("model:model_absolute_error:mae_lower1h")
        self.mae_count = q("model:model_absolute_error:count1h")
        # The MAE's level before the last hour: what "MAE rose" is measured against. Nothing
        # for a model younger than an hour and a day's worth of history.
        self.mae_baseline = q("avg_over_time(model:model_absolute_error:mae1h[7d] offset 1h)")
        self.accuracy = q("model:model_outcomes:accuracy1h")
        self.accuracy_upper = q("model:model_outcomes:accuracy_upper1h")
        self.accuracy_count = q("model:model_outcomes:count1h")
        self.accuracy_baseline = q("model:model_outcomes:accuracy7d")
        self.coverage = q("model:model_outcomes:coverage1h")
        self.had_truth = q("max_over_time(model:model_outcomes:coverage1h[7d])")
        self.alerts = [
            (labels, _alert(labels)) for labels, _ in reader.query('ALERTS{alertstate="firing"}')
        ]
        # Versions side by side (the versions group): each version's role, the metrics a
        # candidate may alert on, and per window each version's value, sample and statistic.
        self.roles = {
            key: next(iter(sorted(found)))
            for key, found in feature("model_role:model_version_role:dedup", "role").items()
        }
        self.guards = feature("model_metric:model_candidate_guard:dedup", "metric")
        self.compared = {
            window: (
                feature(value, "metric"), feature(samples, "metric"), feature(z, "metric"),
            )
            for window, (value, samples, z) in COMPARISON_SERIES.items()
        }  # fmt: skip

    def _alerts_of(self, key: Key) -> tuple[FiringAlert, ...]:
        fleet, model, version = key
        found = []
        for labels, alert in self.alerts:
            other_fleet, other_model, other_version = self.reader.key(labels)
            if (other_fleet, other_model) == (fleet, model) and other_version in ("", version):
                found.append(alert)
        return tuple(sorted(found, key=lambda a: (a.name, a.severity, sorted(a.labels.items()))))

    def _performance(self, key: Key) -> PerformanceEvidence | None:
        # Every model exports both kinds of outcome series (a classifier's MAE count stays 0),
        # so the kind is the one that counted outcomes; none yet: no performance to show.
        mae_count = self.mae_count.get(key) or 0.0
        accuracy_count = self.accuracy_count.get(key) or 0.0
        if mae_count > 0 and mae_count >= accuracy_count:
            return PerformanceEvidence(
                "mae", _finite(self.mae.get(key)), _finite(self.mae_lower.get(key)),
                mae_count, _finite(self.mae_baseline.get(key)),
            )  # fmt: skip
        if accuracy_count > 0:
            return PerformanceEvidence(
                "accuracy", _finite(self.accuracy.get(key)),
                _finite(self.accuracy_upper.get(key)), accuracy_count,
                _finite(self.accuracy_baseline.get(key)),
            )  # fmt: skip
        return None

    def _invalid_by_feature(self, key: Key) -> dict[str, float]:
        invalid, valid = self.invalid_counts.get(key, {}), self.valid_counts.get(key, {})
        return {f: n / (n + valid.get(f, 0.0)) for f, n in invalid.items() if n > 0}

    def _drift(self, key: Key) -> tuple[FeatureDriftEvidence, ...]:
        psi, excess = self.psi.get(key, {}), self.psi_excess.get(key, {})
        samples, significant = self.drift_samples.get(key, {}), self.drift_significant.get(key, {})
        return tuple(
            FeatureDriftEvidence(
                f, _finite(psi[f]), _finite(excess.get(f)), samples.get(f), f in significant
            )  # fmt: skip
            for f in sorted(psi)
        )

    def _primary(self, key: Key) -> Key | None:
        fleet, model, _ = key
        return next(
            (k for k, role in sorted(self.roles.items())
             if role == "primary" and (k[0], k[1]) == (fleet, model)),
            None,
        )  # fmt: skip

    def _comparisons(self, key: Key) -> tuple[ComparisonEvidence, ...]:
        """A candidate's comparison with the primary of its fleet on each metric both have a
        sample of: over the first window with a statistic, else the first (under the guard)."""
        primary = self._primary(key)
        if self.roles.get(key, "primary") == "primary" or primary is None:
            return ()
        guards = self.guards.get(key, {})
        found = []
        first_values, first_samples, _ = self.compared[COMPARISON_WINDOWS[0]]
        metrics = set(first_samples.get(key, {})) & set(first_samples.get(primary, {}))
        for metric in sorted(metrics):
            chosen = COMPARISON_WINDOWS[0]
            for window in COMPARISON_WINDOWS:
                if metric in self.compared[window][2].get(key, {}):
                    chosen = window
                    break
            values, samples, statistics = self.compared[chosen]
            found.append(
                ComparisonEvidence(
                    metric=metric,
                    window=chosen,
                    value=_finite(values.get(key, {}).get(metric)),
                    samples=samples.get(key, {}).get(metric),
                    primary_version=primary[2],
                    primary_value=_finite(values.get(primary, {}).get(metric)),
                    primary_samples=samples.get(primary, {}).get(metric),
                    statistic=_finite(statistics.get(key, {}).get(metric)),
                    guarded=metric in guards,
                )  # fmt: skip
            )
        return tuple(found)

    def evidence(self, key: Key) -> Evidence:
        fleet, model, version = key
        had = self.had_truth.get(key)
        return Evidence(
            model=model,
            version=version,
            fleet=dict(fleet),
            role=self.roles.get(key, ""),
            comparisons=self._comparisons(key),
            thresholds=self.thresholds.get((fleet, model), {}),
            windows=WINDOWS,
            traffic=self.traffic.get(key, 0.0),
            calls=self.calls.get(key),
            error_ratio=_finite(self.error_ratio.get(key)),
            errors_by_kind=self.errors.get(key, {}),
            latency_p95_seconds=_finite(self.p95.get(key)),
            invalid_ratio=_finite(self.invalid.get(key)),
            invalid_by_feature=self._invalid_by_feature(key),
            drift=self._drift(key),
            performance=self._performance(key),
            ground_truth_coverage=_finite(self.coverage.get(key)),
            had_ground_truth=None if had is None else had > 0,
            alerts=self._alerts_of(key),
        )


def _alert(labels: Labels) -> FiringAlert:
    kept = {k: v for k, v in labels.items() if k not in ("__name__", "alertstate")}
    return FiringAlert(labels.get("alertname", ""), labels.get("severity", ""), kept)


def read_fleet(
    url: str, *, model: str | None = None, selector: str = DEFAULT_SELECTOR,
    fleet_labels: Iterable[str] = DEFAULT_FLEET_LABELS, at: float | None = None,
    timeout: float = 10.0,
) -> FleetStatus:  # fmt: skip
    """The fleet's status as Prometheus at ``url`` sees it; PrometheusError when it cannot."""
    with PrometheusReader(
        url, selector=selector, fleet_labels=tuple(fleet_labels), at=at, timeout=timeout
    ) as reader:
        return reader.read(model)
