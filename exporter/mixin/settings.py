"""The settings every generated rule, alert and dashboard is built from.

A site adopts the stack by writing a few of these in a small YAML file and running
``model-exporter generate --settings FILE --out DIR`` (``make generate`` rebuilds the committed
artefacts from the defaults). Everything site-specific lives here, so the rules, the alerts'
links and the dashboards never disagree about which series are this exporter's or how fleets are
told apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError
from exporter.mixin.thresholds import KEYS
from exporter.yaml_file import YamlFileError, load_yaml_file

#: A label name as Prometheus accepts it.
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: One matcher of a selector: ``name op "value"``.
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


class SettingsError(ExporterError, ValueError):
    """A settings file that cannot be used; the message names the file, the key and the reason."""


@dataclass(frozen=True)
class Settings:
    """What differs between one site and the next; the defaults are the demo stack's."""

    #: PromQL label matchers that pick this exporter's series out of everything the Prometheus
    #: scrapes (without braces). Every rule and every dashboard query is scoped by it, so another
    #: job exposing a ``model_info`` of its own never leaks into the alerts.
    selector: str = 'job=~"model-exporter.*"'
    #: Labels that separate fleets (external labels of a Prometheus per cluster, the namespace a
    #: pod runs in). Every aggregation keeps them, so two clusters' models of the same name never
    #: merge, and a global ruler (Thanos, Mimir) over several clusters stays right.
    fleet_labels: tuple[str, ...] = ("cluster", "namespace")
    #: The alerts' ``runbook_url``; ``{alert}`` becomes the alert's name in lower case (the
    #: anchor of its section in docs/runbooks.md).
    runbook_url: str = (
        "https://github.com/model-exporter/model-exporter/blob/main/docs/runbooks.md#{alert}"
    )
    #: Where users open Grafana (the alerts' ``dashboard_url``), without a trailing slash.
    grafana_url: str = "http://localhost:3000"
    #: Grafana's sub-path when it is served under one (``/grafana``), else empty; the dashboards'
    #: links between each other start with it.
    grafana_path_prefix: str = ""
    #: Tags of every generated dashboard (their links find each other by the first one).
    dashboard_tags: tuple[str, ...] = ("model-exporter",)
    #: Auto-refresh of the dashboards.
    dashboard_refresh: str = "1m"
    #: Name of the Prometheus datasource the provisioning file creates (never the default one: a
    #: site's existing default keeps its place). The dashboards select a datasource by variable.
    datasource_name: str = "model-exporter-prometheus"
    #: The ``component`` label every alert carries, which Alertmanager's route subtree matches.
    component: str = "model-exporter"
    #: Rule defaults of the alert thresholds by key (``exporter.mixin.thresholds``); a key set
    #: here replaces the shipped default for every model that does not set its own.
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def matchers(self) -> list[tuple[str, str, str]]:
        """The selector as (label, operator, value) triples."""
        return _parse_selector(self.selector)

    @property
    def fleet_by(self) -> str:
        """The fleet labels as the start of a ``by``/``on`` list: ``"cluster, namespace, "``
        (empty when there are none)."""
        return "".join(f"{label}, " for label in self.fleet_labels)

    def grafana_link(self, path: str) -> str:
        """An absolute Grafana URL for ``path`` (which starts with ``/``), for alerts."""
        return f"{self.grafana_url}{self.grafana_path_prefix}{path}"

    def runbook(self, alert: str) -> str:
        return self.runbook_url.format(alert=alert.lower())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "settings") -> Settings:
        """Settings from a parsed YAML mapping; unknown keys are refused, naming them."""
        if not isinstance(data, Mapping):
            raise SettingsError(
                f"{source}: expected a mapping of settings, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise SettingsError(f"{source}: unknown settings {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("fleet_labels", "dashboard_tags"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SettingsError(f"{source}: {key} must be a list of strings")
                value = tuple(value)
            elif key == "thresholds":
                if not isinstance(value, Mapping):
                    raise SettingsError(f"{source}: thresholds must be a mapping of key to number")
                value = dict(value)
            elif not isinstance(value, str):
                raise SettingsError(f"{source}: {key} must be a string")
            values[key] = value
        try:
            return cls(**values)
        except SettingsError as exc:
            raise SettingsError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: Path) -> Settings:
        """Settings from a YAML file (an empty file gives the defaults); read as a config is:
        regular files only, at most 1 MiB, no aliases, every problem one line."""
        try:
            data = load_yaml_file(path, what="the settings")
        except YamlFileError as exc:
            raise SettingsError(str(exc)) from None
        return cls.from_mapping(data or {}, source=str(path))


def _parse_selector(selector: str) -> list[tuple[str, str, str]]:
    matchers = []
    for part in _split_matchers(selector):
        match = _MATCHER.match(part)
        if match is None:
            raise SettingsError(
                f'selector: {part.strip()!r} is not a label matcher like job=~"model-exporter.*"'
            )
        matchers.append((match.group(1), match.group(2), match.group(3)))
    if not matchers:
        raise SettingsError('selector: at least one matcher is needed, e.g. job="model-exporter"')
    return matchers


def _split_matchers(selector: str) -> list[str]:
    """Split on commas outside quoted values."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in selector:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


#: Characters no setting may hold: control characters and the Unicode line breaks. Every
#: setting lands in a YAML or PromQL text, where a line break would end the value and let the
#: rest be read as more configuration.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _problems(settings: Settings) -> list[str]:
    problems = []
    for item in fields(settings):
        value = getattr(settings, item.name)
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            if isinstance(text, str) and _CONTROL.search(text):
                problems.append(f"{item.name}: control characters and line breaks are not allowed")
                break
    try:
        _parse_selector(settings.selector)
    except SettingsError as exc:
        problems.append(str(exc))
    for label in settings.fleet_labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            problems.append(f"fleet_labels: {label!r} is not a label name")
        elif label in ("model", "version", "job", "instance", "feature", "alert"):
            problems.append(f"fleet_labels: {label!r} is one of the exporter's own labels")
    if len(set(settings.fleet_labels)) != len(settings.fleet_labels):
        problems.append("fleet_labels: each label once")
    if "{alert}" not in settings.runbook_url:
        problems.append("runbook_url: needs {alert} where the alert's anchor goes")
    if not re.match(r"^https?://[^\s/]+", settings.grafana_url) or settings.grafana_url.endswith(
        "/"
    ):
        problems.append("grafana_url: an http(s) URL without a trailing slash")
    prefix = settings.grafana_path_prefix
    if prefix and (not prefix.startswith("/") or prefix.endswith("/") or " " in prefix):
        problems.append("grafana_path_prefix: empty or like /grafana (leading slash, no trailing)")
    if not settings.dashboard_tags or not all(settings.dashboard_tags):
        problems.append("dashboard_tags: at least one non-empty tag")
    if not re.match(r"^[0-9]+[smhd]$", settings.dashboard_refresh):
        problems.append("dashboard_refresh: a duration like 30s or 1m")
    if not settings.datasource_name.strip():
        problems.append("datasource_name: must not be empty")
    if not re.match(r"^[A-Za-z0-9_.:-]+$", settings.component):
        problems.append("component: letters, digits and _.:- only")
    for key, value in settings.thresholds.items():
        if key not in KEYS:
            # A typo would otherwise leave every model on the shipped default without a word.
            problems.append(f"thresholds: unknown key {key!r}; known: {sorted(KEYS)}")
        elif (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            # NaN or an infinity would be written into the rule as a literal no alert can pass.
            problems.append(f"thresholds.{key}: must be a finite number")
    return problems
