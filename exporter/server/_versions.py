"""Several versions of one model in one service (docs/versions.md): the primary, canaries that
answer a share of the requests, and shadows that see a share and are only recorded.

Each version has its own :class:`ModelMonitor` (its own ``version`` label and reference) on the
service's registry and outcome store; an outcome is counted by the version that made the
prediction (:meth:`exporter._ground_truth.GroundTruth.owner`). Which version answers a request is
decided here: by the ``X-Routing-Key`` header when the client sends one, hashed so that one key
lands on the same version in every worker and replica, else by a random draw.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from exporter.config import CandidateSection, MonitorConfig
from exporter.metrics import label_value, version_instruments_for
from exporter.monitor import ModelMonitor
from exporter.outcomes import OutcomeStore, PendingPrediction, Resolved, StoreError
from exporter.profile import ReferenceProfile

Role = Literal["primary", "canary", "shadow"]
#: The header a client routes by; a request carrying one is always answered by the same version.
ROUTING_HEADER = "X-Routing-Key"
#: Separates a primary prediction's id from a shadow's version in the shadow's prediction id.
SHADOW_ID_SEPARATOR = "~"


@dataclass(frozen=True)
class Version:
    """One loaded version of the model: what it runs and what accounts for it."""

    name: str
    role: Role
    monitor: ModelMonitor
    predict: Callable[[Mapping[str, Any]], Any]
    #: canary: share of the requests it answers; shadow: share it sees; primary: the rest.
    weight: float
    candidate: CandidateSection | None = None


def routing_point(key: bytes | str) -> float:
    """``key`` as a point of [0, 1): the first 8 bytes of its BLAKE2b digest over 2**64, so
    the same key gives the same point in every process (Python's ``hash`` is salted). The
    service hashes the header's bytes as sent; a text is hashed as its UTF-8 bytes, which is
    what a client sending it in UTF-8 sends."""
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(raw, digest_size=8, person=b"model-exporter").digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Router:
    """Picks the version answering a request: the canaries by cumulative weight, in config
    order, and the primary for the rest of [0, 1)."""

    primary: Version
    canaries: Sequence[Version] = ()

    def pick(self, key: bytes | None) -> Version:
        if not self.canaries:
            return self.primary
        point = routing_point(key) if key else random.random()
        bound = 0.0
        for canary in self.canaries:
            bound += canary.weight
            if point < bound:
                return canary
        return self.primary


def shadow_id(primary_id: str, shadow: str) -> str:
    """The id of a shadow's prediction for the request the primary's id names: feedback on
    the primary's id resolves both."""
    return f"{primary_id}{SHADOW_ID_SEPARATOR}{shadow}"


def candidate_config(config: MonitorConfig, candidate: CandidateSection) -> MonitorConfig:
    """The config of a candidate's monitor: the primary's, with the candidate's version, model
    and reference, and its mode as its stage (``model_info{stage}``)."""
    model = config.model.model_copy(
        update={"version": candidate.version, "import_path": candidate.import_path,
                "stage": candidate.mode}
    )  # fmt: skip
    return config.model_copy(
        update={"model": model, "reference": config.candidate_reference_path(candidate)}
    )


def load_candidate_reference(
    config: MonitorConfig,
    candidate: CandidateSection,
    primary: ReferenceProfile | None,
) -> ReferenceProfile | None:
    """A candidate's own reference profile, or the primary's (loaded once for all)."""
    path = config.candidate_reference_path(candidate)
    if path is None or candidate.reference is None or path == config.reference_path():
        return primary
    return ReferenceProfile.load(Path(path))


def export_roles(registry: CollectorRegistry, config: MonitorConfig) -> None:
    """``model_version_role`` of every version, ``model_candidate_guard`` of each candidate's
    comparisons that may alert, and the shadows' skipped counters at 0 (a counter born at its
    first increment hides that increment from ``increase()``)."""
    series = version_instruments_for(registry)
    model = label_value(config.model.name)
    series.role.labels(model, label_value(config.model.version), "primary").set(1)
    for candidate in config.candidates:
        version = label_value(candidate.version)
        series.role.labels(model, version, candidate.mode).set(1)
        for metric in config.candidate_alerts(candidate):
            series.candidate_guard.labels(model, version, metric).set(1)
        if candidate.mode == "shadow":
            series.shadow_skipped.labels(model, version)


def skipped_counter(registry: CollectorRegistry, monitor: ModelMonitor) -> Any:
    """The ``model_shadow_skipped_total`` child of a shadow's monitor."""
    return version_instruments_for(registry).shadow_skipped.labels(*monitor.model_labels)


class CandidateStore:
    """The service's outcome store as a candidate's monitor sees it: the same records, but the
    pending gauge and the expiry are the primary monitor's alone, so the shared store's pending
    and expired predictions are counted once, not once per version."""

    def __init__(self, store: OutcomeStore) -> None:
        #: The store this one stands for: the ground truths sharing it count each other's
        #: outcomes by version (exporter._ground_truth).
        self.shares = store

    def remember(self, pending: PendingPrediction) -> None:
        self.shares.remember(pending)

    def remember_many(self, pendings: Sequence[PendingPrediction]) -> None:
        self.shares.remember_many(pendings)

    def try_remember_many(self, pendings: Sequence[PendingPrediction]) -> bool:
        return self.shares.try_remember_many(pendings)

    def checkpoint(self) -> None:
        self.shares.checkpoint()

    def resolve(self, prediction_id: str, actual: Any, now: float) -> Resolved:
        return self.shares.resolve(prediction_id, actual, now)

    def expire(self, now: float) -> int:
        return 0

    def pending_count(self) -> int:
        raise StoreError("the primary version reports the pending predictions of every version")

    def check_writable(self) -> None:
        self.shares.check_writable()

    def close(self) -> None:
        pass  # the service closes the store it opened
