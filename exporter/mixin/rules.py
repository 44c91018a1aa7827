"""The Prometheus rules, the PrometheusRule and the docs' threshold table, from one Settings.

The rule files are templates (``exporter/mixin/templates/*.yml``): the committed YAML with its
comments, where the site-specific parts are placeholders written ``<<name>>`` (a spelling PromQL,
YAML and Go templates never use):

``<<sel>>``
    the selector's matchers, inside the braces of every raw series the rules read;
``<<fleet>>``
    the fleet labels as the head of a ``by``/``on`` list (``by (<<fleet>>model, version)``);
``<<fleet_names>>``
    the fleet labels for a comment;
``<<fleet_match>>`` and ``<<fleet_args>>``
    the fleet labels in an alert description's ``printf`` query and their values, so the
    evidence a description quotes is its own fleet's;
``<<component>>``, ``<<runbook:Alert>>``, ``<<grafana:/path>>``
    the alerts' component label, runbook URL and dashboard link (the link gets the fleet labels'
    dashboard variables appended: :func:`fleet_variables`);
``<<thresholds>>``
    the thresholds recording rule, generated from :mod:`exporter.mixin.thresholds`;
``<<generated>>``
    the header saying where the file comes from.

Every placeholder is replaced in one pass, so a setting's text is never read as a placeholder.
The PrometheusRule carries the rendered groups unchanged. docs/metrics.md is the project's own
documentation, so it is only regenerated from a checkout (an installed wheel has none): its
threshold table, between marker comments, from the same table the rules use.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ExporterError
from exporter.mixin.settings import Settings
from exporter.mixin.thresholds import BY_KEY, THRESHOLDS, Threshold

RECORDING = "prometheus/rules/recording.yml"
ALERTS = "prometheus/rules/alerts.yml"
PROMETHEUS_RULE = "deploy/kubernetes/prometheusrule.yaml"
METRICS_DOC = "docs/metrics.md"

#: Each rule file and its template, in the order the PrometheusRule concatenates their groups
#: (sorted by file name, as before the rules were generated).
RULE_FILES = {ALERTS: "alerts.yml", RECORDING: "recording.yml"}

#: The checkout's docs/metrics.md, when this package runs from one.
_SOURCE_DOC = Path(__file__).resolve().parents[2] / METRICS_DOC

DOC_BEGIN = (
    "<!-- BEGIN GENERATED thresholds: from exporter/mixin/thresholds.py by `make generate`; "
    "edit the table there -->"
)
DOC_END = "<!-- END GENERATED thresholds -->"

#: The PrometheusRule's name and labels (the same labels as the ServiceMonitor); add the label
#: your Prometheus' ruleSelector wants (kube-prometheus-stack: `release: <helm release>`) with
#: kustomize, not by editing the output.
RULE_NAME = "model-exporter-rules"
RULE_LABELS = {"app.kubernetes.io/name": "model-exporter", "app.kubernetes.io/component": "rules"}

_PLACEHOLDER = re.compile(r"<<(\w+)(?::([^<>\n]*))?>>")
#: Indentation of an ``expr: |`` block's lines in the recording template.
_EXPR_INDENT = " " * 10
_LINE_LENGTH = 100


class MixinError(ExporterError, RuntimeError):
    """A template or the source doc does not have the shape the generator relies on."""


def artefacts(settings: Settings) -> dict[str, str]:
    """The rule files, the PrometheusRule and (in a checkout) docs/metrics.md, by path relative to
    the repository root."""
    files = {path: render(template, settings) for path, template in RULE_FILES.items()}
    files[PROMETHEUS_RULE] = prometheus_rule(files)
    if _SOURCE_DOC.is_file():
        files[METRICS_DOC] = metrics_doc(_SOURCE_DOC.read_text(encoding="utf-8"), settings)
    return files


# --- the rule files -----------------------------------------------------------------------------


def selector(settings: Settings) -> str:
    """The selector's matchers in one written form (``job=~"model-exporter.*"``)."""
    return ", ".join(f'{name}{op}"{value}"' for name, op, value in settings.matchers)


def render(template: str, settings: Settings) -> str:
    """One rule file: the template with every placeholder replaced, checked to be a rule file."""
    text = (resources.files("exporter.mixin") / "templates" / template).read_text(encoding="utf-8")
    values: dict[str, Callable[[str | None], str]] = {
        "generated": lambda _: _generated_header(template, settings),
        "sel": lambda _: selector(settings),
        "fleet": lambda _: settings.fleet_by,
        "fleet_names": lambda _: (
            ", ".join(f"`{label}`" for label in settings.fleet_labels) or "none"
        ),
        "fleet_match": lambda _: "".join(f"{label}='%s'," for label in settings.fleet_labels),
        "fleet_args": lambda _: "".join(f"$labels.{label} " for label in settings.fleet_labels),
        "component": lambda _: _scalar(settings.component),
        "runbook": lambda alert: _scalar(settings.runbook(_argument(alert, "runbook"))),
        "grafana": lambda path: _scalar(
            settings.grafana_link(_argument(path, "grafana") + fleet_variables(settings))
        ),
        "thresholds": lambda _: thresholds_expr(settings),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise MixinError(f"templates/{template}: unknown placeholder <<{name}>>")
        return values[name](match.group(2))

    rendered = _PLACEHOLDER.sub(replace, text)
    _check_rule_file(rendered, template)
    return rendered


def fleet_variables(settings: Settings) -> str:
    """The dashboard URL's fleet variables from the alert's labels, ``&var-cluster={{
    $labels.cluster }}&var-namespace={{ $labels.namespace }}`` for the default fleet labels. A label
    the alert lacks gives an empty value, i.e. ``cluster=~""`` in the dashboards' queries, which
    matches the series without that label: right for a site (or the demo) without it."""
    return "".join(f"&var-{label}={{{{ $labels.{label} }}}}" for label in settings.fleet_labels)


def _argument(value: str | None, placeholder: str) -> str:
    if not value:
        raise MixinError(f"<<{placeholder}:...>> needs an argument")
    return value


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar on one line: plain when YAML reads it back unchanged (a URL's
    ``#`` after a space would start a comment), else double-quoted (JSON's quoting is YAML's)."""
    try:
        if yaml.safe_load(f"key: {text}\n") == {"key": text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)


def _generated_header(template: str, settings: Settings) -> str:
    return (
        f"# GENERATED by `model-exporter generate` from exporter/mixin/templates/{template}\n"
        f"# for the selector {{{selector(settings)}}}; do not edit by hand: change the template\n"
        "# or the settings and run `make generate` (tests/test_mixin_rules.py fails while this\n"
        "# file differs from the generator's output).\n#"
    )


def _check_rule_file(text: str, template: str) -> None:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MixinError(f"templates/{template} renders to invalid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise MixinError(f"templates/{template}: a rule file is a mapping with a list of groups")


def _number(value: float) -> str:
    """A PromQL number literal: ``100`` for an int, ``0.05`` or ``2.0`` for a float."""
    return str(value) if isinstance(value, int) else repr(float(value))


def effective_default(threshold: Threshold, settings: Settings) -> float | None:
    """The rule default of ``threshold`` with the site's override, if it sets one."""
    return settings.thresholds.get(threshold.key, threshold.default)


def thresholds_expr(settings: Settings) -> str:
    """The expression of ``model_alert:model_alert_threshold:effective``: every model's own
    thresholds, then for every key with a default, that default for each model known from
    ``model_info`` that does not set the key. Each default is preceded by its reason."""
    fleet, sel = settings.fleet_by, selector(settings)
    lines = [f"max by ({fleet}model, alert) (model_alert_threshold{{{sel}}})"]
    models = f"max by ({fleet}model) (model_info{{{sel}}})"
    for threshold in THRESHOLDS:
        value = effective_default(threshold, settings)
        if value is None and threshold.relative_to is None:
            continue  # no default: the alert applies to models that set the key
        width = _LINE_LENGTH - len(_EXPR_INDENT) - 2
        reason = f"{threshold.key}, {threshold.used_by}: {threshold.description}"
        lines += [f"# {line}" for line in textwrap.wrap(reason, width)]
        lines.append(f"or on ({fleet}model, alert)")
        if value is not None:
            lines.append(
                f"  label_replace({models} * 0 + {_number(value)}, "
                f'"alert", "{threshold.key}", "", "")'
            )
            continue
        assert threshold.relative_to is not None
        base_key, factor = threshold.relative_to
        base = effective_default(BY_KEY[base_key], settings)
        if base is None:
            raise MixinError(
                f"{threshold.key}: its default is relative to {base_key}, which has none"
            )
        lines += [
            "  label_replace(",
            f"    {_number(factor)} * (",
            f'      max by ({fleet}model) (model_alert_threshold{{{sel}, alert="{base_key}"}})',
            f"      or {models} * 0 + {_number(base)}",
            "    ),",
            f'    "alert", "{threshold.key}", "", "")',
        ]
    return "\n".join(_EXPR_INDENT + line for line in lines)


# --- the PrometheusRule -------------------------------------------------------------------------

_PROMETHEUS_RULE_HEADER = """\
# GENERATED by `model-exporter generate` (exporter/mixin/rules.py): the groups of the rule files
# below, unchanged, for the prometheus-operator. Do not edit by hand: change the templates in
# exporter/mixin/templates/ or the settings, then run `make generate`
# (tests/test_mixin_rules.py fails while this file differs from the generator's output).
"""


class _Dumper(yaml.SafeDumper):
    """Kubernetes-style YAML: nested lists indented, multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # PromQL expressions spanning lines stay readable as `|` blocks.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def prometheus_rule(rule_files: dict[str, str]) -> str:
    """The PrometheusRule manifest carrying the groups of ``rule_files`` (path -> text), in the
    order of :data:`RULE_FILES`."""
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(rule_files[path])["groups"])
    names = [group["name"] for group in groups]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # One PrometheusRule becomes one rule file in Prometheus, where group names are unique.
        raise MixinError(f"rule group names used twice: {', '.join(duplicates)}")
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "labels": RULE_LABELS},
        "spec": {"groups": groups},
    }
    sources = "".join(f"#   {path}\n" for path in RULE_FILES)
    body = yaml.dump(
        manifest,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=4096,  # never fold a long expression or description onto a second line
    )
    return f"{_PROMETHEUS_RULE_HEADER}# Sources, in this order:\n{sources}{body}"


# --- docs/metrics.md ----------------------------------------------------------------------------


def _default_text(threshold: Threshold, settings: Settings) -> str:
    value = effective_default(threshold, settings)
    if value is not None:
        return _number(value)
    if threshold.relative_to is not None:
        base_key, factor = threshold.relative_to
        times = "twice" if factor == 2 else f"{_number(factor)} ×"
        return f"{times} `{base_key}`"
    return "none"


def threshold_table(settings: Settings) -> str:
    """The Markdown table of every threshold key with its rule default."""
    rows = [
        "| key | default | unit | used by | meaning |",
        "|---|---|---|---|---|",
    ]
    for threshold in THRESHOLDS:
        cells = (
            f"`{threshold.key}`",
            _default_text(threshold, settings),
            threshold.unit,
            threshold.used_by,
            threshold.description.replace("|", "\\|"),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def metrics_doc(source: str, settings: Settings) -> str:
    """``source`` (docs/metrics.md) with the region between the markers regenerated."""
    if source.count(DOC_BEGIN) != 1 or source.count(DOC_END) != 1:
        raise MixinError(f"{METRICS_DOC}: needs exactly one {DOC_BEGIN} and one {DOC_END} line")
    head, rest = source.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    return f"{head}{DOC_BEGIN}\n{threshold_table(settings)}\n{DOC_END}{tail}"
