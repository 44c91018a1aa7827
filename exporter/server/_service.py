"""What one worker of the server is made of, and how it is built from a config: the user's model
and derive function (imported from ``package.module:callable``), the reference profile, the
outcome store, the bearer tokens and the :class:`ModelMonitor` over them. Nothing here speaks
HTTP; :mod:`exporter.server._app` serves a built :class:`Service`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.config import ConfigError, MonitorConfig
from exporter.monitor import ModelMonitor
from exporter.outcomes import MemoryOutcomeStore, OutcomeStore, SqliteOutcomeStore, StoreError
from exporter.profile import CategoricalFeature, NumericFeature, ProfileError, ReferenceProfile
from exporter.security import BearerTokens, TokenFileError
from exporter.server._versions import (
    CandidateStore,
    Version,
    candidate_config,
    export_roles,
    load_candidate_reference,
)

Predict = Callable[[Mapping[str, Any]], Any]
Derive = Callable[[Mapping[str, Any]], Mapping[str, Any]]

#: Errors that mean a user mistake at start (reported as one line, exit code 2).
STARTUP_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ProfileError,
    StoreError,
    TokenFileError,
)


def import_callable(path: str, key: str) -> Callable[..., Any]:
    """``package.module:attribute`` → the object; a clear ConfigError when it is not there."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of user code is reported, not raised
        raise ConfigError(f"{key}: cannot import {module_name!r}: {exc}") from None
    except SystemExit as exc:
        # Not an Exception: uncaught, a model module calling sys.exit(0) at import ended serve
        # with status 0 and no message.
        raise ConfigError(
            f"{key}: cannot import {module_name!r}: it called sys.exit({exc.code!r}) while being "
            "imported"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{key}: {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} is not callable")
    return target  # type: ignore[no-any-return]


@dataclass
class Service:
    """Everything one worker needs to answer requests."""

    config: MonitorConfig
    monitor: ModelMonitor
    predict: Predict
    derive: Derive | None
    store: OutcomeStore
    registry: CollectorRegistry
    multiprocess_dir: Path | None
    numeric: frozenset[str]
    categorical: frozenset[str]
    #: The bearer tokens every endpoint but the probes, the docs (and /metrics) asks for.
    tokens: BearerTokens | None = None
    #: True for the supervisor's reader (``metrics_reader``): it serves no predictions, so it
    #: has nothing to flush and must not publish windows of its own.
    reader: bool = False
    #: Every loaded version, the primary (``monitor``, ``predict``) first, then the config's
    #: ``candidates`` in order (docs/versions.md).
    versions: tuple[Version, ...] = ()

    @property
    def monitors(self) -> list[ModelMonitor]:
        """The monitor of every version, the primary's first."""
        return [v.monitor for v in self.versions] or [self.monitor]


def build_service(
    config: MonitorConfig,
    data_dir: Path,
    *,
    registry: CollectorRegistry | None = None,
    multiprocess_dir: Path | None = None,
    metrics_reader: bool = False,
) -> Service:
    """Load the token file, the model, the reference and the store; raise ConfigError,
    TokenFileError, ProfileError or StoreError.

    ``metrics_reader``: the service only renders the metrics of the workers that share
    ``multiprocess_dir`` (see :func:`metrics_app`); its store counts pending predictions and
    never expires one, which the workers do and count.
    """
    tokens = load_tokens(config)
    predict = import_callable(config.model.import_path, "model.import_path")
    derive = (
        import_callable(config.model.derive_features, "model.derive_features")
        if config.model.derive_features
        else None
    )
    reference_path = config.reference_path()
    reference = ReferenceProfile.load(reference_path) if reference_path is not None else None
    check_segments(config, reference)
    outcomes = config.outcomes
    store: OutcomeStore
    if outcomes.store == "sqlite":
        # The service checkpoints from its background flush (_workers.flush_forever), never in
        # a commit.
        store = (_ReaderSqliteStore if metrics_reader else SqliteOutcomeStore).in_directory(
            data_dir,
            ttl_seconds=outcomes.ttl_seconds,
            max_pending=outcomes.max_pending,
            deferred_checkpoints=True,
        )
    else:
        store = (_ReaderMemoryStore if metrics_reader else MemoryOutcomeStore)(
            ttl_seconds=outcomes.ttl_seconds, max_pending=outcomes.max_pending
        )
    registry = registry if registry is not None else CollectorRegistry()
    try:
        monitor = monitor_for(
            config, reference, registry=registry, outcomes=store,
            state_dir=multiprocess_dir / "windows" if multiprocess_dir is not None else None,
        )  # fmt: skip
    except ValueError as exc:
        store.close()
        if isinstance(exc, ProfileError):
            raise
        # A mistake the config's schema cannot see on its own (domains of an unwatched feature,
        # classes for a regression): one clear line like any other config error.
        raise ConfigError(f"{config.source}: monitoring: {exc}") from None
    state_dir = multiprocess_dir / "windows" if multiprocess_dir is not None else None
    try:
        candidates = build_candidates(config, reference, registry=registry, store=store,
                                      state_dir=state_dir)  # fmt: skip
    except BaseException:
        store.close()
        raise
    canary_share = sum(v.weight for v in candidates if v.role == "canary")
    versions = (Version(config.model.version, "primary", monitor, predict, 1.0 - canary_share),
                *candidates)  # fmt: skip
    export_roles(registry, config)
    watched = config.features or (list(reference.features) if reference else [])
    numeric = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], NumericFeature)
    )
    categorical = frozenset(
        f for f in watched if reference and isinstance(reference.features[f], CategoricalFeature)
    )
    return Service(config, monitor, predict, derive, store, registry, multiprocess_dir,
                   numeric, categorical, tokens, reader=metrics_reader,
                   versions=versions)  # fmt: skip


def build_candidates(
    config: MonitorConfig,
    primary_reference: ReferenceProfile | None,
    *,
    registry: CollectorRegistry,
    store: OutcomeStore,
    state_dir: Path | None,
) -> list[Version]:
    """The config's ``candidates``, each with its model and a monitor of its own on the
    service's registry and (shared) outcome store; ConfigError or ProfileError for a mistake."""
    built = []
    for i, candidate in enumerate(config.candidates):
        predict = import_callable(candidate.import_path, f"candidates.{i}.import_path")
        reference = load_candidate_reference(config, candidate, primary_reference)
        own = candidate_config(config, candidate)
        check_segments(own, reference)
        try:
            monitor = monitor_for(own, reference, registry=registry,
                                  outcomes=CandidateStore(store), state_dir=state_dir)  # fmt: skip
        except ValueError as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ConfigError(f"{config.source}: candidates.{i}: {exc}") from None
        built.append(Version(candidate.version, candidate.mode, monitor, predict,
                             candidate.share, candidate))  # fmt: skip
    return built


def monitor_for(
    config: MonitorConfig,
    reference: ReferenceProfile | None,
    *,
    registry: CollectorRegistry,
    outcomes: OutcomeStore,
    state_dir: Path | None = None,
    clock: Callable[[], float] | None = None,
    sample_size: int | None = None,
) -> ModelMonitor:
    """The monitor a config describes: what ``serve`` and ``backtest`` both monitor with.

    ``clock`` (default the wall clock) and ``sample_size`` (default the config's) let a backtest
    run it on simulated time without the KS samples no rule reads. Raises ValueError (or
    ProfileError) for what the config's schema cannot check alone.
    """
    m = config.monitoring
    optional: dict[str, Any] = {} if clock is None else {"clock": clock}
    return ModelMonitor(
        config.model.name,
        version=config.model.version,
        task=config.model.task,
        reference=reference,
        features=config.features,
        registry=registry,
        windows=m.windows,
        slices=m.slices,
        classes=m.classes,
        max_classes=m.max_classes,
        min_samples=m.min_samples,
        sample_size=m.sample_size if sample_size is None else sample_size,
        drift_cache_seconds=m.drift_cache_seconds,
        domains=m.domains,
        thresholds=config.thresholds,
        confidence_thresholds=m.confidence_thresholds,
        stage=config.model.stage,
        outcomes=outcomes,
        state_dir=state_dir,
        segment_by=m.segment_by,
        # serve flushes from its background task and before each scrape, a backtest before
        # each simulated scrape: no timer thread.
        flush_interval=None,
        **optional,
    )


def check_segments(config: MonitorConfig, reference: ReferenceProfile | None) -> None:
    """``monitoring.segment_by`` needs a reference built with segments by that feature."""
    segment_by = config.monitoring.segment_by
    segments = reference.segments if reference is not None else None
    if segment_by is None or (segments is not None and segments.feature == segment_by):
        return
    path = config.reference_path()
    if reference is None:
        problem = "the config names no reference profile"
    elif segments is None:
        problem = f"the reference profile {path} has no segments"
    else:
        problem = f"the reference profile {path} has segments by {segments.feature!r}"
    raise ConfigError(
        f"{config.source}: monitoring.segment_by: {problem}; build it with "
        f"`model-exporter baseline ... --segment-by {segment_by}`"
    )


def load_tokens(config: MonitorConfig) -> BearerTokens | None:
    """The service's bearer tokens, or ``None`` when it has no token file."""
    path = config.token_path()
    if path is None:
        if config.service.auth.protect_metrics:
            raise ConfigError(
                f"{config.source}: service.auth.protect_metrics needs a token file "
                "(service.auth.token_file or --token-file)"
            )
        return None
    return BearerTokens.from_file(path)


class _ReaderSqliteStore(SqliteOutcomeStore):
    """The workers' store as the metrics reader sees it: it never expires predictions, because
    the expired count would land in the reader's own registry, which no scrape renders."""

    def expire(self, now: float) -> int:
        return 0


class _ReaderMemoryStore(MemoryOutcomeStore):
    """In-memory outcomes live in each worker: the reader leaves the pending gauge out rather
    than report its own empty store."""

    def pending_count(self) -> int:
        raise StoreError("in-memory outcomes are held by each worker")
