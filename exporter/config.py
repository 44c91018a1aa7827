"""The service's YAML config, validated into typed objects once, at start.

An error names the file, the key path (``monitoring.windows.1``) and what is wrong, never a
traceback. Relative paths inside the file are relative to the file itself, so a config and its
reference profile can travel together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.errors import ExporterError
from exporter.mixin.thresholds import KEYS
from exporter.windows import WindowSpec, parse_duration
from exporter.yaml_file import YamlFileError, load_yaml_file

#: Keys of ``thresholds`` the shipped alert rules read (exporter/mixin/thresholds.py, the table the
#: rules' defaults and docs/metrics.md are generated from); others are refused so a typo does not
#: silently leave a model on the default.
THRESHOLD_KEYS = KEYS


class ConfigError(ExporterError, ValueError):
    """A config that cannot be used; the message names the file, the key path and the problem."""


#: ``package.module:callable``, the form of every import path in the config.
IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    version: str = Field(default="unversioned", min_length=1, max_length=128)
    task: Literal["classification", "regression"]
    #: ``package.module:callable``; the callable takes a features dict and returns a prediction,
    #: a ``(prediction, confidence)`` pair or a mapping with ``prediction`` (and ``confidence``).
    import_path: str = Field(pattern=IMPORT_PATH)
    #: Optional ``package.module:callable`` turning a request's raw features (e.g. a text) into the
    #: features the monitor watches (e.g. its length); the model still gets the raw features.
    derive_features: str | None = Field(default=None, pattern=IMPORT_PATH)
    stage: str = "production"
    #: Features the model cannot predict without: a request lacking one (or sending null) is a
    #: 422 naming it, counted as ``missing`` input when the feature is watched, instead of a
    #: model failure (a 500 that feeds the error-ratio alert).
    required_features: list[str] = Field(default_factory=list)

    @field_validator("required_features")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("required_features must be distinct")
        if any(not name or len(name) > 256 for name in value):
            raise ValueError("each required feature is a name of 1 to 256 characters")
        return value


class MonitoringSection(_Section):
    windows: list[str] = Field(default_factory=lambda: ["5m", "1h", "1d"], min_length=1)
    slices: int = Field(default=12, ge=1, le=1000)
    min_samples: int = Field(default=100, ge=1)
    sample_size: int = Field(default=1000, ge=0, le=100_000)
    drift_cache_seconds: FiniteFloat = Field(default=10.0, ge=0)
    classes: list[str] | None = None
    max_classes: int = Field(default=50, ge=1, le=10_000)
    confidence_thresholds: tuple[FiniteFloat, FiniteFloat] = (0.5, 0.8)
    domains: dict[str, tuple[FiniteFloat, FiniteFloat]] = Field(default_factory=dict)
    #: The context feature of a reference built with segments by it (``baseline --segment-by``):
    #: every other feature is compared with the reference of the segments its values came from.
    #: The service checks that the profile has such segments once it has loaded it.
    segment_by: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for window in value:
            parse_duration(window)
        if len(set(value)) != len(value):
            raise ValueError("windows must be distinct")
        return value

    def window_specs(self) -> list[WindowSpec]:
        return [WindowSpec.parse(w, self.slices) for w in self.windows]


class OutcomeSection(_Section):
    store: Literal["sqlite", "memory"] = "sqlite"
    ttl: str = "7d"
    # Records kept at most, pending or resolved (a resolved one answers a repeated outcome as a
    # duplicate until its TTL); past it the oldest go, and a pending one counts as expired.
    max_pending: int = Field(default=1_000_000, ge=1)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def ttl_seconds(self) -> int:
        return parse_duration(self.ttl)


class AuthSection(_Section):
    #: Bearer tokens that ``/predict`` and ``/feedback`` (and every endpoint but the probes, the
    #: docs and ``/metrics``) accept, one per line; relative to this config file.
    token_file: Path | None = None
    #: Ask for a token on ``/metrics`` too (Prometheus sends it from a ``credentials_file``).
    protect_metrics: bool = False


class ServiceSection(_Section):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch: int = Field(default=1000, ge=1)
    #: prometheus_client's ``*_created`` series double the counter lines and nothing reads them.
    created_series: bool = False
    #: Serve ``/metrics`` on this port only (same host), so the API port can be exposed while the
    #: metrics stay internal; unset, ``/metrics`` is on the API port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: A request's headers must be complete this many seconds after its connection opens (or its
    #: first byte arrives): a client that sends half a request and stops is closed then.
    header_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Open connections per server process, in total and from one client address. The bound per
    #: client is off (0) by default: behind an ingress or a load balancer every request comes from
    #: its few addresses, and an nginx ingress alone keeps up to 320 idle connections per worker
    #: to an upstream. Set it when clients reach the service directly.
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_client: int = Field(default=0, ge=0)
    auth: AuthSection = Field(default_factory=AuthSection)


#: What a candidate's alert may compare with the primary (``ModelCandidateWorse``).
CANDIDATE_METRICS = ("accuracy", "error_ratio", "mae")
#: Candidates one service may load: each adds a monitor and its series to every scrape.
MAX_CANDIDATES = 8
#: Defaults of a shadow's own bounds (``timeout_seconds``, ``max_concurrency``).
SHADOW_TIMEOUT_SECONDS = 1.0
SHADOW_MAX_CONCURRENCY = 4


class CandidateSection(_Section):
    """Another version of the model, served beside the primary (docs/versions.md)."""

    version: str = Field(min_length=1, max_length=128)
    import_path: str = Field(pattern=IMPORT_PATH)
    #: Its own reference profile; default the primary's (relative to this file).
    reference: Path | None = None
    mode: Literal["canary", "shadow"]
    #: canary: share of requests it answers; shadow: share of requests it also sees (default 1).
    weight: FiniteFloat | None = Field(default=None, gt=0, le=1)
    timeout_seconds: FiniteFloat | None = Field(default=None, gt=0, le=300)
    max_concurrency: int | None = Field(default=None, ge=1, le=256)
    alert_on: list[Literal["accuracy", "error_ratio", "mae"]] | None = None

    @field_validator("alert_on")
    @classmethod
    def _alert_on(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("alert_on must be distinct")
        return value

    @property
    def share(self) -> float:
        """The weight, with a shadow's default (every request)."""
        return 1.0 if self.weight is None else self.weight

    @property
    def timeout(self) -> float:
        return SHADOW_TIMEOUT_SECONDS if self.timeout_seconds is None else self.timeout_seconds

    @property
    def concurrency(self) -> int:
        return SHADOW_MAX_CONCURRENCY if self.max_concurrency is None else self.max_concurrency


class KeyedProblem(ExporterError, ValueError):
    """A mistake found across keys, reported under the key it names (``candidates.1.weight``)
    rather than at the top level, where pydantic puts a whole-model check's error."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _file_name(version: str) -> str:
    # The monitor's shared window files are named by version with every character but letters,
    # digits, '.' and '_' as '_' (exporter._exchange.safe): two versions alike there would
    # merge each other's windows.
    return "".join(c if c.isalnum() or c in "._" else "_" for c in version)[:64]


class MonitorConfig(_Section):
    model: ModelSection
    reference: Path | None = None
    features: list[str] | None = None
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    thresholds: dict[str, FiniteFloat] = Field(default_factory=dict)
    outcomes: OutcomeSection = Field(default_factory=OutcomeSection)
    service: ServiceSection = Field(default_factory=ServiceSection)
    #: Other versions served beside ``model``: canaries answer a share of the requests, shadows
    #: see a share and are only recorded (docs/versions.md).
    candidates: list[CandidateSection] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    #: Where the file was read from; relative paths resolve against its folder.
    source: Path = Path("<config>")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - THRESHOLD_KEYS)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; known: {sorted(THRESHOLD_KEYS)}")
        return value

    @model_validator(mode="after")
    def _candidates(self) -> MonitorConfig:
        seen = {_file_name(self.model.version): "model.version"}
        regression = self.model.task == "regression"
        for i, candidate in enumerate(self.candidates):
            key = f"candidates.{i}"
            other = seen.get(_file_name(candidate.version))
            if other is not None:
                raise KeyedProblem(
                    f"{key}.version",
                    f"{candidate.version!r} is taken by {other} (versions must differ, also "
                    "with every character but letters, digits, '.' and '_' read as '_')",
                )
            seen[_file_name(candidate.version)] = f"{key}.version"
            if candidate.mode == "canary":
                if candidate.weight is None:
                    raise KeyedProblem(
                        f"{key}.weight",
                        "a canary needs a weight in (0, 1], the share of requests it answers",
                    )
                for name in ("timeout_seconds", "max_concurrency"):
                    if getattr(candidate, name) is not None:
                        raise KeyedProblem(
                            f"{key}.{name}",
                            "only a shadow has it (a canary's answer is the client's: it is "
                            "never cut short)",
                        )
            wrong = "accuracy" if regression else "mae"
            if wrong in (candidate.alert_on or ()):
                raise KeyedProblem(
                    f"{key}.alert_on", f"{wrong} does not apply to a {self.model.task} model"
                )
        total = sum(c.share for c in self.candidates if c.mode == "canary")
        if total >= 1:
            raise KeyedProblem(
                "candidates",
                f"the canaries' weights sum to {total:g}; they must sum to less than 1, the "
                "primary answering the rest",
            )
        return self

    def candidate_alerts(self, candidate: CandidateSection) -> list[str]:
        """The comparisons that may alert for ``candidate``: its ``alert_on``, or by default
        ``error_ratio`` and the task's own (``accuracy`` or ``mae``)."""
        if candidate.alert_on is not None:
            return list(candidate.alert_on)
        return ["error_ratio", "mae" if self.model.task == "regression" else "accuracy"]

    def candidate_reference_path(self, candidate: CandidateSection) -> Path | None:
        """A candidate's reference profile: its own, or else the primary's."""
        own = self._beside_the_file(candidate.reference)
        return own if own is not None else self.reference_path()

    def reference_path(self) -> Path | None:
        return self._beside_the_file(self.reference)

    def token_path(self) -> Path | None:
        """The service's token file (``service.auth.token_file``), or ``None`` without auth."""
        return self._beside_the_file(self.service.auth.token_file)

    def _beside_the_file(self, path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return self.source.parent / path


def with_overrides(
    config: MonitorConfig, *, token_file: Path | None = None, metrics_port: int | None = None
) -> MonitorConfig:
    """``config`` with the values given on the command line in place of the file's."""
    service = config.service
    auth = service.auth
    if token_file is not None:
        # Absolute: a path given on the command line is relative to where the command ran.
        auth = auth.model_copy(update={"token_file": token_file.absolute()})
    if metrics_port is not None:
        service = service.model_copy(update={"metrics_port": metrics_port})
    return config.model_copy(update={"service": service.model_copy(update={"auth": auth})})


#: YAML documents bigger than this are refused before parsing (a config is a few KiB).
MAX_CONFIG_BYTES = 1_048_576


def load_config(path: str | os.PathLike[str]) -> MonitorConfig:
    """Read and validate a monitor config; any problem raises :class:`ConfigError`."""
    where = Path(path)
    try:
        document = load_yaml_file(where, what="the config", max_bytes=MAX_CONFIG_BYTES)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    return config_from_document(document, source=where)


def config_from_document(document: Any, *, source: Path = Path("<config>")) -> MonitorConfig:
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys, got {_kind(document)}")
    try:
        return MonitorConfig.model_validate({**document, "source": source})
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            keyed = error.get("ctx", {}).get("error")
            location = (
                keyed.key
                if isinstance(keyed, KeyedProblem)
                else ".".join(str(p) for p in error["loc"]) or "(top level)"
            )
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}")
        more = exc.error_count() - len(problems)
        suffix = f"; and {more} more" if more > 0 else ""
        raise ConfigError(f"{source}: " + "; ".join(problems) + suffix) from None


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
